"""``q:B`` — unbiased stochastic rounding to ``B`` bits with per-block scales, bit-packed.

Each block of ``block`` consecutive values is mapped onto the ``2**B`` levels ``lo + j * step``, ``j = 0 ..
L`` with ``L = 2**B - 1``, ``lo`` the block minimum and ``step = (hi - lo) / L`` (``hi`` the block maximum;
``hi - lo`` is the block *scale*). A value is rounded to one of its two neighbouring levels with probabilities
that make the result unbiased (QSGD, Alistarh et al. 2017), so the error of any entry is below one ``step =
scale / (2**B - 1)``. The block sends ``lo`` and ``step`` as float32, then the packed codes.

Error feedback needs a contraction (``E||q(x) - x||^2 < ||x||^2``). Per block the rounding variance is at
most ``block * step**2 / 4`` and ``||x||^2 >= scale**2 / 2``, so that holds whenever ``block < 2 * L**2``:
blocks under 450 at 4 bits, under 18 at 2 bits, only 1 at 1 bit. Beyond that, error feedback can diverge
(:meth:`Quantize.contracts`; ``encode`` logs a warning when a state is used).

``q:B:range=r`` uses the fixed public range ``[-r, r]`` instead (values are clamped to it first): no scales
travel and nothing about the data is released by the scale, so this variant is data-independent.
"""

from __future__ import annotations

import math

import numpy as np

from fedcompress.codec.base import check_int, format_float, parse_number, register_stage
from fedcompress.codec.bitpack import pack_codes, packed_size, unpack_codes
from fedcompress.codec.quantizer import Quantizer

__all__ = ["Quantize"]

ALLOWED_BITS = (1, 2, 3, 4, 5, 6, 7, 8, 16)
DEFAULT_BLOCK = 256
MAX_BLOCK = 1 << 20
MIN_RANGE, MAX_RANGE = 1e-30, 1e38  # float32 steps neither underflow nor overflow


@register_stage
class Quantize(Quantizer):
    """Stochastic rounding to ``bits`` bits: per-block float32 (lo, step), or a fixed ``[-range, range]``.

    Parameters
    ----------
    bits : int
        Bits per value: 1..8 or 16.
    block : int | None
        Values per block (1..2**20); defaults to 256 when ``range`` is not given, must be None when it is.
    range : float | None
        Fixed public clamp range ``r`` in 1e-30..1e38; values outside ``[-r, r]`` are clamped, no scales sent.
    """

    codec_id = "q"
    params = ("bits", "block", "range")

    def __init__(self, *, bits: int, block: int | None = None, range: float | None = None) -> None:
        if isinstance(bits, bool) or not isinstance(bits, int) or bits not in ALLOWED_BITS:
            raise ValueError(f"stage 'q' parameter 'bits' must be one of 1..8 or 16, got {bits!r}")
        self.bits = bits
        if range is None:
            self.block: int | None = check_int("q", "block", DEFAULT_BLOCK if block is None else block, 1, MAX_BLOCK)
            self.range: float | None = None
        else:
            if block is not None:
                raise ValueError("stage 'q': 'block' and 'range' are exclusive (a fixed range has no block scales)")
            valid = not isinstance(range, bool) and isinstance(range, (int, float)) and math.isfinite(range)
            if not valid or not MIN_RANGE <= float(range) <= MAX_RANGE:
                raise ValueError(
                    f"stage 'q' parameter 'range' must be a number in {MIN_RANGE:g}..{MAX_RANGE:g} (> 0), got {range!r}"
                )
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

    def contracts(self) -> bool:
        """True when per-block rounding is a contraction, as error feedback needs (``block < 2 * L**2``)."""
        return self.block is None or self.block < 2 * self.levels**2

    @classmethod
    def from_spec_args(cls, args: list[str]) -> Quantize:
        """``q:B[:block=N][:range=R]``."""
        if not args or "=" in args[0]:
            raise ValueError("stage 'q' needs the number of bits first, e.g. 'q:8' or 'q:4:block=256'")
        kwargs: dict[str, float | int] = {"bits": parse_number("q", "bits", args[0], int)}
        for arg in args[1:]:
            key, sep, value = arg.partition("=")
            if not sep or key not in ("block", "range") or key in kwargs:
                raise ValueError(f"stage 'q' got {arg!r}; allowed options are 'block=N' and 'range=R', once each")
            kwargs[key] = parse_number("q", key, value, int if key == "block" else float)
        return cls(**kwargs)  # type: ignore[arg-type]

    def spec(self) -> str:
        """``q:B:block=N`` or ``q:B:range=R``."""
        if self.range is not None:
            return f"q:{self.bits}:range={format_float(self.range)}"
        return f"q:{self.bits}:block={self.block}"

    # ---- block layout and sizes ----------------------------------------------------------------------

    def block_lengths(self, segments: np.ndarray) -> np.ndarray:
        """Length of each block (blocks restart at every segment boundary); none for a fixed range."""
        segments = np.asarray(segments, dtype=np.int64)
        if self.block is None or segments.size == 0:
            return np.zeros(0, dtype=np.int64)
        per_segment = -(-segments // self.block)
        lengths = np.full(int(per_segment.sum()), self.block, dtype=np.int64)
        last = np.cumsum(per_segment)[per_segment > 0] - 1  # each segment's final, possibly short, block
        lengths[last] = segments[per_segment > 0] - (per_segment[per_segment > 0] - 1) * self.block
        return lengths

    def section_size(self, segments: np.ndarray) -> int:
        """Exact bytes of the encoded section for values split into ``segments`` (lengths)."""
        count = int(np.sum(segments, dtype=np.int64))
        return self.scale_bytes(segments) + packed_size(count, self.bits)

    def scale_bytes(self, segments: np.ndarray) -> int:
        """Eight bytes (float32 lo and step) per block; none for a fixed range."""
        return 8 * int(self.block_lengths(segments).size)

    # ---- encode / decode -----------------------------------------------------------------------------

    def encode(
        self, values: np.ndarray, rng: np.random.Generator, segments: np.ndarray, *, totals: np.ndarray | None = None
    ) -> tuple[bytes, np.ndarray]:
        """Quantize a float32 vector whose blocks restart at each of ``segments`` (``totals`` is not used).

        Returns the section bytes and the float32 reconstruction the decoder will make.
        """
        lengths = self.block_lengths(segments)
        lo_each: np.ndarray | np.float32
        step_each: np.ndarray | np.float32
        if self.block is None:
            lo_each, step_each = self._fixed_scales()
            values = np.clip(values, lo_each, -lo_each)
            head = b""
        else:
            starts = np.cumsum(lengths) - lengths
            lo = np.minimum.reduceat(values, starts) if starts.size else np.zeros(0, np.float32)
            hi = np.maximum.reduceat(values, starts) if starts.size else np.zeros(0, np.float32)
            step = ((hi.astype(np.float64) - lo) / self.levels).astype(np.float32)
            # A range that underflowed to step 0 keeps the smallest positive step (0 means a constant block).
            step[(step == 0) & (hi > lo)] = np.finfo(np.float32).smallest_subnormal
            head = np.stack([lo, step], axis=1).astype("<f4").tobytes()
            # A constant block has step 0: divide by 1 instead (its values all equal lo, so codes are 0).
            lo_each = np.repeat(lo, lengths)
            step_each = np.repeat(np.where(step > 0, step, np.float32(1)), lengths)
        scaled = (values - lo_each) / step_each
        scaled += rng.random(scaled.size, dtype=np.float32)  # stochastic rounding: floor(t + u), u ~ U[0, 1)
        np.clip(scaled, 0, self.levels, out=scaled)
        codes = scaled.astype(np.uint16 if self.bits == 16 else np.uint8)
        return head + pack_codes(codes, self.bits), _reconstruct(codes, lo_each, step_each)

    def decode(
        self, section: bytes | memoryview, segments: np.ndarray, *, totals: np.ndarray | None = None
    ) -> np.ndarray:
        """Rebuild the float32 values from a section of exactly ``section_size(segments)`` bytes."""
        expected = self.section_size(segments)
        if len(section) != expected:
            raise ValueError(f"quantized section has {len(section)} bytes, expected {expected}")
        count = int(np.sum(segments, dtype=np.int64))
        lengths = self.block_lengths(segments)
        lo_each: np.ndarray | np.float32
        step_each: np.ndarray | np.float32
        if self.block is None:
            lo_each, step_each = self._fixed_scales()
        else:
            scales = np.frombuffer(section[: 8 * lengths.size], dtype="<f4").reshape(lengths.size, 2)
            lo_each = np.repeat(scales[:, 0].astype(np.float32), lengths)
            step_each = np.repeat(scales[:, 1].astype(np.float32), lengths)
        return _reconstruct(unpack_codes(section[8 * lengths.size :], count, self.bits), lo_each, step_each)

    def _fixed_scales(self) -> tuple[np.float32, np.float32]:
        bound = float(self.range or 0.0)
        return np.float32(-bound), np.float32(2 * bound / self.levels)


def _reconstruct(codes: np.ndarray, lo: np.ndarray | np.float32, step: np.ndarray | np.float32) -> np.ndarray:
    """``lo + code * step`` in float32: the same arithmetic in encoder and decoder."""
    out = codes.astype(np.float32)
    out *= step
    out += lo
    return out
