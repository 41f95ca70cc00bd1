"""``randk:F`` — keep a random fraction ``F`` of entries, a mask made from the payload's seed (no indices).

The mask over the dense stream of ``n`` values is the positions of the ``k`` smallest of ``n`` raw 32-bit
keys from a PCG64 generator seeded with ``derive_seed(seed, "randk")``: raw bit-generator output is stable
across numpy versions (unlike ``Generator.choice``), so encoder and decoder agree. Kept values are not
rescaled (error feedback carries the rest), and the mask depends only on the seed and the model's shapes, so
the stage is data-independent. Give every client the same seed and they share one mask, as secure aggregation
needs.
"""

from __future__ import annotations

import math

import numpy as np

from fedcompress.codec.base import register_stage
from fedcompress.codec.sparsify import Sparsifier
from fedcompress.seeding import derive_seed

__all__ = ["RandK", "random_mask"]


def random_mask(size: int, keep: int, seed: int) -> np.ndarray:
    """Sorted int64 indices of ``keep`` of ``size`` entries, a pure function of the arguments.

    The entries with the ``keep`` smallest 32-bit keys (ties: lowest index first), keys being the raw PCG64
    output read as little-endian uint32 pairs. About 9 bytes of scratch memory per entry.
    """
    if keep >= size:
        return np.arange(size, dtype=np.int64)
    raw = np.random.PCG64(derive_seed(seed, "randk")).random_raw((size + 1) // 2)
    keys = np.asarray(raw, dtype="<u8").view("<u4")[:size]
    # Only keys below a bound that the keep-th smallest is all but sure to be under need sorting out: the
    # same set as partitioning all keys, several times faster when keep << size. Otherwise: all keys.
    bound = (keep + 8 * math.sqrt(keep) + 64) / size * 2.0**32
    candidates = np.flatnonzero(keys < np.uint32(bound)) if bound < 2.0**32 else None
    if candidates is None or candidates.size < keep:
        candidates = np.arange(size, dtype=np.int64)
    chosen = keys[candidates]
    threshold = np.partition(chosen, keep - 1)[keep - 1]
    mask = chosen < threshold
    missing = keep - int(np.count_nonzero(mask))
    if missing:
        mask[np.flatnonzero(chosen == threshold)[:missing]] = True
    return candidates[mask].astype(np.int64)


@register_stage
class RandK(Sparsifier):
    """Keep ``round(fraction * n)`` entries of a seeded random mask (releases nothing about the data)."""

    codec_id = "randk"

    @property
    def data_independent(self) -> bool:
        """True: the mask depends on the public seed and the tensor size only."""
        return True

    def encode(self, values: np.ndarray, *, seed: int) -> tuple[np.ndarray, bytes]:
        """The seeded mask; the index section is empty."""
        return random_mask(values.size, self.count(values.size), seed), b""

    def decode_indices(self, section: bytes | memoryview, size: int, *, seed: int) -> np.ndarray:
        """Regenerate the mask from the seed; the section must be empty."""
        if len(section) != 0:
            raise ValueError(f"random-k sends no indices, but the payload holds {len(section)} index bytes")
        return random_mask(size, self.count(size), seed)
