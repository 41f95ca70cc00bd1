"""``topk:F`` — keep the fraction ``F`` of entries of largest magnitude (as in Deep Gradient Compression).

The indices travel in whichever of two forms is smaller: sorted gaps as varints (gap = distance to the
previous kept index minus one), or a bitmap of ``ceil(n / 8)`` bytes. One leading byte says which.
"""

from __future__ import annotations

import numpy as np

from fedcompress.codec.base import register_stage
from fedcompress.codec.sparsify import Sparsifier
from fedcompress.codec.varint import decode_varints, encode_varints

__all__ = ["TopK", "decode_indices", "encode_indices", "largest_indices"]

_GAPS, _BITMAP = 0, 1


@register_stage
class TopK(Sparsifier):
    """Keep the ``round(fraction * n)`` largest-magnitude entries of the dense stream (ties: any of them)."""

    codec_id = "topk"

    @property
    def data_independent(self) -> bool:
        """False: which entries are kept depends on the data."""
        return False

    def encode(self, values: np.ndarray, *, seed: int, segments: np.ndarray | None = None) -> tuple[np.ndarray, bytes]:
        """Indices of the ``k`` largest magnitudes over the whole stream, sorted, and their compact encoding."""
        size, keep = values.size, self.count(values.size)
        indices = np.arange(size, dtype=np.int64) if keep == size else largest_indices(np.abs(values), keep)
        return indices, encode_indices(indices, size)

    def decode_indices(
        self, section: bytes | memoryview, size: int, *, seed: int, segments: np.ndarray | None = None
    ) -> np.ndarray:
        """Parse the index section written by :func:`encode_indices`."""
        return decode_indices(section, self.count(size), size)


def largest_indices(magnitudes: np.ndarray, keep: int) -> np.ndarray:
    """Sorted indices of the ``keep`` largest entries (``0 < keep < size``).

    Those above the keep-th largest value, then as many equal to it as needed, lowest index first. A threshold
    and a mask instead of an argpartition and a sort: the same set, about twice as fast.
    """
    threshold = np.partition(magnitudes, magnitudes.size - keep)[magnitudes.size - keep]
    mask = magnitudes > threshold
    missing = keep - int(np.count_nonzero(mask))
    if missing:
        mask[np.flatnonzero(magnitudes == threshold)[:missing]] = True
    return np.flatnonzero(mask).astype(np.int64)


def encode_indices(indices: np.ndarray, size: int) -> bytes:
    """Sorted distinct indices in ``[0, size)``: a mode byte, then varint gaps or a bitmap (the smaller)."""
    bitmap_bytes = (size + 7) // 8
    if indices.size <= bitmap_bytes:  # a varint is at least one byte, so only then can gaps win
        gaps = np.diff(indices, prepend=-1) - 1
        encoded = encode_varints(gaps)
        if len(encoded) <= bitmap_bytes:
            return bytes([_GAPS]) + encoded
    mask = np.zeros(size, dtype=bool)
    mask[indices] = True
    return bytes([_BITMAP]) + np.packbits(mask, bitorder="little").tobytes()


def decode_indices(section: bytes | memoryview, count: int, size: int) -> np.ndarray:
    """Inverse of :func:`encode_indices`; checks the count, range and padding (``ValueError`` when wrong)."""
    if len(section) < 1:
        raise ValueError("top-k index section is empty (it needs at least its mode byte)")
    mode, body = section[0], np.frombuffer(section, dtype=np.uint8, offset=1)
    if mode == _BITMAP:
        if body.size != (size + 7) // 8:
            raise ValueError(f"top-k bitmap has {body.size} bytes, expected {(size + 7) // 8} for {size} entries")
        bits = np.unpackbits(body, bitorder="little")
        if bits[size:].any():
            raise ValueError("top-k bitmap has bits set past the end of the tensor")
        indices = np.flatnonzero(bits).astype(np.int64)
        if indices.size != count:
            raise ValueError(f"top-k bitmap marks {indices.size} entries, expected {count}")
        return indices
    if mode != _GAPS:
        raise ValueError(f"top-k index mode byte is {mode}; expected {_GAPS} (gaps) or {_BITMAP} (bitmap)")
    gaps = decode_varints(body, count)
    if gaps.size and int(gaps.max()) >= size:
        raise ValueError(f"a top-k index gap runs past the end of the tensor of {size} entries")
    indices = np.cumsum(gaps + 1) - 1
    if indices.size and int(indices[-1]) >= size:
        raise ValueError(f"top-k indices run past the end of the tensor of {size} entries")
    return indices
