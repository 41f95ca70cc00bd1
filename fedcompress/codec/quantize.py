"""``q:B`` — unbiased stochastic rounding to ``B`` bits with per-block scales, bit-packed.

Each block of ``block`` consecutive values is mapped onto the ``2**B`` levels ``lo + j * step``, ``j = 0 ..
L`` with ``L = 2**B - 1``, ``lo`` the block minimum and ``step = (hi - lo) / L`` (``hi`` the block maximum;
``hi - lo`` is the block *scale*). A value is rounded to one of its two neighbouring levels with probabilities
that make the result unbiased (QSGD, Alistarh et al. 2017), so the error of any entry is below one ``step =
scale / (2**B - 1)``. The block sends ``lo`` and ``step`` as float32, then the packed codes.

``q:B:range=r`` uses the fixed public range ``[-r, r]`` instead (values are clamped to it first): no scales
travel and nothing about the data is released by the scale, so this variant is data-independent.
"""

from __future__ import annotations

import math

import numpy as np

from fedcompress.codec.base import Stage, check_int, format_float, parse_number, register_stage
from fedcompress.codec.bitpack import pack_codes, packed_size, unpack_codes

__all__ = ["Quantize"]

ALLOWED_BITS = (1, 2, 3, 4, 5, 6, 7, 8, 16)
DEFAULT_BLOCK = 256
MAX_BLOCK = 1 << 20


@register_stage
class Quantize(Stage):
    """Stochastic rounding to ``bits`` bits: per-block float32 (lo, step), or a fixed ``[-range, range]``.

    Parameters
    ----------
    bits : int
        Bits per value: 1..8 or 16.
    block : int | None
        Values per block (1..2**20); defaults to 256 when ``range`` is not given, must be None when it is.
    range : float | None
        Fixed public clamp range ``r > 0``; values outside ``[-r, r]`` are clamped, no scales are sent.
    """

    codec_id = "q"
    slot = 2
    params = ("bits", "block", "range")

    def __init__(self, *, bits: int, block: int | None = None, range: float | None = None) -> None:
        if isinstance(bits, bool) or not isinstance(bits, int) or bits not in ALLOWED_BITS:
            raise ValueError(f"stage 'q' parameter 'bits' must be one of 1..8 or 16, got {bits!r}")
        self.bits = bits
        if range is None:
            self.block: int | None = check_int(
                "q", "block", DEFAULT_BLOCK if block is None else block, 1, MAX_BLOCK
            )
            self.range: float | None = None
        else:
            if block is not None:
                raise ValueError(
                    "stage 'q': 'block' and 'range' are exclusive (a fixed range has no block scales)"
                )
            if isinstance(range, bool) or not isinstance(range, (int, float)) or not math.isfinite(range):
                raise ValueError(f"stage 'q' parameter 'range' must be a finite number > 0, got {range!r}")
            if not 0.0 < float(range) <= float(np.finfo(np.float32).max) / 2:
                raise ValueError(f"stage 'q' parameter 'range' must be a finite number > 0, got {range!r}")
            self.block = None
            self.range = float(range)

    @property
    def data_independent(self) -> bool:
        """Only the fixed-range variant: its levels do not depend on the data."""
        return self.range is not None

    @property
    def levels(self) -> int:
        """``L = 2**bits - 1``: the number of steps between the lowest and highest level."""
        return (1 << self.bits) - 1

    @classmethod
    def from_spec_args(cls, args: list[str]) -> Quantize:
        """``q:B[:block=N][:range=R]``."""
        if not args or "=" in args[0]:
            raise ValueError("stage 'q' needs the number of bits first, e.g. 'q:8' or 'q:4:block=256'")
        kwargs: dict[str, float | int] = {"bits": parse_number("q", "bits", args[0], int)}
        for arg in args[1:]:
            key, sep, value = arg.partition("=")
            if not sep or key not in ("block", "range") or key in kwargs:
                raise ValueError(
                    f"stage 'q' got {arg!r}; allowed options are 'block=N' and 'range=R', once each"
                )
            kwargs[key] = parse_number("q", key, value, int if key == "block" else float)
        return cls(**kwargs)  # type: ignore[arg-type]

    def spec(self) -> str:
        """``q:B:block=N`` or ``q:B:range=R``."""
        if self.range is not None:
            return f"q:{self.bits}:range={format_float(self.range)}"
        return f"q:{self.bits}:block={self.block}"

    # ---- sizes ---------------------------------------------------------------------------------------

    def num_blocks(self, count: int) -> int:
        """Blocks (each with a float32 lo and step) for ``count`` values; 0 for the fixed range."""
        return 0 if self.block is None else -(-count // self.block)

    def section_size(self, count: int) -> int:
        """Exact bytes of the encoded section for ``count`` values."""
        return 8 * self.num_blocks(count) + packed_size(count, self.bits)

    # ---- encode / decode -----------------------------------------------------------------------------

    def encode(self, values: np.ndarray, rng: np.random.Generator) -> tuple[bytes, np.ndarray]:
        """Quantize a float32 vector: the section bytes and the reconstruction the decoder will make."""
        count = values.size
        lo, step, rows = self._scales(values)
        scaled = (rows - lo[:, None]) / np.where(step > 0, step, np.float32(1))[:, None]
        scaled += rng.random(scaled.shape, dtype=np.float32)  # stochastic rounding: floor(t + u), u ~ U[0, 1)
        np.clip(scaled, 0, self.levels, out=scaled)
        codes = scaled.astype(np.uint16 if self.bits == 16 else np.uint8).ravel()[:count]
        head = b"" if self.block is None else np.stack([lo, step], axis=1).astype("<f4").tobytes()
        return head + pack_codes(codes, self.bits), self._reconstruct(codes, lo, step)

    def decode(self, section: bytes | memoryview, count: int) -> np.ndarray:
        """Rebuild ``count`` float32 values from a section of exactly ``section_size(count)`` bytes."""
        if len(section) != self.section_size(count):
            raise ValueError(
                f"quantized section has {len(section)} bytes, expected {self.section_size(count)}"
            )
        nblocks = self.num_blocks(count)
        if self.block is None:
            lo, step = self._fixed_scales()
        else:
            scales = np.frombuffer(section[: 8 * nblocks], dtype="<f4").reshape(nblocks, 2)
            lo, step = scales[:, 0].astype(np.float32), scales[:, 1].astype(np.float32)
        codes = unpack_codes(section[8 * nblocks :], count, self.bits)
        return self._reconstruct(codes, lo, step)

    def _fixed_scales(self) -> tuple[np.ndarray, np.ndarray]:
        bound = float(self.range or 0.0)
        return np.array([-bound], dtype=np.float32), np.array([2 * bound / self.levels], dtype=np.float32)

    def _scales(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per-block (lo, step) and the values as rows of one block (padded with the last value)."""
        if self.block is None:
            lo, step = self._fixed_scales()
            return lo, step, np.clip(values, lo[0], -lo[0]).reshape(1, -1)
        block, nblocks = self.block, self.num_blocks(values.size)
        if values.size == nblocks * block:
            rows = values.reshape(nblocks, block)
        else:
            padded = np.empty(nblocks * block, dtype=np.float32)
            padded[: values.size] = values
            padded[values.size :] = values[-1]
            rows = padded.reshape(nblocks, block)
        lo, hi = rows.min(axis=1), rows.max(axis=1)
        step = ((hi.astype(np.float64) - lo) / self.levels).astype(np.float32)
        return lo, step, rows

    def _reconstruct(self, codes: np.ndarray, lo: np.ndarray, step: np.ndarray) -> np.ndarray:
        """``lo + code * step`` per block, float32, in the same arithmetic on both sides."""
        count = codes.size
        width = count if self.block is None else self.block
        flat = np.zeros(lo.size * width, dtype=np.float32)
        flat[:count] = codes
        rows = flat.reshape(lo.size, width)
        rows *= step[:, None]
        rows += lo[:, None]
        return rows.ravel()[:count]
