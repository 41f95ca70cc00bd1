"""``sign`` — one bit per value and one float32 scale per segment (DRIVE, Vargaftik et al., NeurIPS 2021).

After ``rotate`` the segments are the rotated chunks, so each chunk ``y`` (its kept values ``y_S``, ``k`` of
``n`` when a sparsifier ran before) is sent as ``sign(y_S)`` and one scale ``s``; the decoder rebuilds
``s * sign(y_S)`` (zeros where nothing was kept) and inverts the rotation. Two scales:

- ``scale=mse`` (default): ``s = ||y_S||_1 / k``, the least-squares fit of ``y_S`` by ``s * sign(y_S)``
  (DRIVE's biased, MSE-optimal variant; EDEN's ``<y, q> / ||q||^2`` at one bit). The error
  ``||y||^2 - ||y_S||_1^2 / k`` is below ``||y||^2``: a contraction, as error feedback needs.
- ``scale=unbiased``: ``s = (n / k) * ||y_S||_2^2 / ||y_S||_1``. Without a sparsifier (``k = n``) this is
  DRIVE's unbiased scale ``||x||_2^2 / ||R x||_1`` (the rotation keeps ``||x||_2``): the decoded vector's
  projection on the input is exactly the input, and over the random rotation the estimate is unbiased.
  With ``randk`` (EDEN's sub-bit budgets) the kept coordinates are a uniformly random subset, and ``n / k``
  makes the estimate unbiased over the mask too. Its variance is large (about ``n / k`` times the input's
  energy), so it is not a contraction: for averaging many clients' updates, not for error feedback. After
  ``topk`` (a data-dependent subset) the ``n / k`` correction would be wrong, so that pipeline is refused.

Bits are packed little-endian, 1 for a negative value (the IEEE sign bit): ``ceil(sum(k) / 8)`` bytes, the
padding bits zero, after one float32 scale per non-empty segment. Without ``rotate`` the segments are whole
tensors and the stage is scaled sign compression (``scale=mse`` is EF-signSGD's, Karimireddy et al. 2019).
"""

from __future__ import annotations

import numpy as np

from fedcompress.codec.base import Stage, register_stage
from fedcompress.codec.bitpack import packed_size
from fedcompress.codec.hadamard import flip_signs
from fedcompress.codec.quantizer import Quantizer
from fedcompress.codec.sparsify import Sparsifier

__all__ = ["Sign"]

SCALES = ("mse", "unbiased")


@register_stage
class Sign(Quantizer):
    """One sign bit per value and one float32 scale per segment.

    Parameters
    ----------
    scale : str
        ``"mse"`` (``||y_S||_1 / k``, the default) or ``"unbiased"`` (``(n / k) ||y_S||_2^2 / ||y_S||_1``).
    """

    codec_id = "sign"
    params = ("scale",)

    def __init__(self, *, scale: str = "mse") -> None:
        if scale not in SCALES:
            raise ValueError(f"stage 'sign' parameter 'scale' must be one of {list(SCALES)}, got {scale!r}")
        self.scale = scale

    @property
    def data_independent(self) -> bool:
        """False: the signs and scales are the data."""
        return False

    def contracts(self) -> bool:
        """Only the MSE-optimal scale is a contraction; the unbiased one can overshoot."""
        return self.scale == "mse"

    def check_neighbours(self, stages: tuple[Stage, ...]) -> None:
        """The unbiased scale needs a random (data-independent) subset, or none."""
        biased = [s.spec() for s in stages if isinstance(s, Sparsifier) and not s.data_independent]
        if self.scale == "unbiased" and biased:
            raise ValueError(
                f"stage 'sign:scale=unbiased' cannot follow {biased[0]!r}: its n/k correction is unbiased only "
                "for a random subset (randk); use 'sign:scale=mse' after top-k"
            )

    @classmethod
    def from_spec_args(cls, args: list[str]) -> Sign:
        """``sign`` or ``sign:scale=mse`` or ``sign:scale=unbiased``."""
        if len(args) > 1 or (args and not args[0].startswith("scale=")):
            raise ValueError(f"stage 'sign' takes one option, 'scale=mse' or 'scale=unbiased'; got {args}")
        return cls(scale=args[0].partition("=")[2]) if args else cls()

    def spec(self) -> str:
        """``sign:scale=S``."""
        return f"sign:scale={self.scale}"

    def section_size(self, segments: np.ndarray) -> int:
        """Four bytes per non-empty segment, then one bit per value."""
        return self.scale_bytes(segments) + packed_size(int(np.sum(segments, dtype=np.int64)), 1)

    def scale_bytes(self, segments: np.ndarray) -> int:
        """One float32 scale per non-empty segment."""
        return 4 * int(np.count_nonzero(np.asarray(segments) > 0))

    def encode(
        self, values: np.ndarray, rng: np.random.Generator, segments: np.ndarray, *, totals: np.ndarray | None = None
    ) -> tuple[bytes, np.ndarray]:
        """Signs and scales of a float32 vector cut into ``segments``; ``rng`` is not used (no randomness)."""
        segments = np.asarray(segments, dtype=np.int64)
        totals = segments if totals is None else np.asarray(totals, dtype=np.int64)
        live = segments > 0
        kept, total = segments[live], totals[live]
        starts = np.cumsum(kept) - kept
        magnitudes = np.abs(values).astype(np.float64)
        l1 = np.add.reduceat(magnitudes, starts) if kept.size else np.zeros(0)
        if self.scale == "mse":
            scales = l1 / np.maximum(kept, 1)
        else:
            l2sq = np.add.reduceat(magnitudes * magnitudes, starts) if kept.size else np.zeros(0)
            scales = np.divide(total / kept * l2sq, l1, out=np.zeros_like(l1), where=l1 > 0)
        scales32 = scales.astype(np.float32)
        negative = np.signbit(values).astype(np.uint8)
        section = scales32.astype("<f4").tobytes() + np.packbits(negative, bitorder="little").tobytes()
        return section, flip_signs(np.repeat(scales32, kept), negative)

    def decode(
        self, section: bytes | memoryview, segments: np.ndarray, *, totals: np.ndarray | None = None
    ) -> np.ndarray:
        """Rebuild ``scale * sign`` per segment; refuses negative scales and non-zero padding bits."""
        expected = self.section_size(segments)
        if len(section) != expected:
            raise ValueError(f"sign section has {len(section)} bytes, expected {expected}")
        kept = np.asarray(segments, dtype=np.int64)
        kept = kept[kept > 0]
        count = int(kept.sum())
        scales = np.frombuffer(section, dtype="<f4", count=kept.size).astype(np.float32)
        if np.any(np.signbit(scales)):
            raise ValueError("a sign scale is negative")
        packed = np.frombuffer(section, dtype=np.uint8, offset=4 * kept.size)
        bits = np.unpackbits(packed, bitorder="little")
        if bits[count:].any():
            raise ValueError("sign bits are set past the last value")
        return flip_signs(np.repeat(scales, kept), bits[:count])
