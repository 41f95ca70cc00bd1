"""Pack unsigned integer codes of ``bits`` bits each into bytes, little-endian within a byte.

Widths that divide 8 (1, 2, 4) use shifts over strided views; 8 and 16 are plain byte views; other widths
(3, 5, 6, 7) go through ``np.unpackbits``/``np.packbits``. All paths are vectorised.
"""

from __future__ import annotations

import numpy as np

__all__ = ["pack_codes", "packed_size", "unpack_codes"]


def packed_size(count: int, bits: int) -> int:
    """Bytes taken by ``count`` codes of ``bits`` bits."""
    return (count * bits + 7) // 8


def pack_codes(codes: np.ndarray, bits: int) -> bytes:
    """Pack ``codes`` (each < 2**bits; uint8, or uint16 when bits is 16) into ``packed_size`` bytes."""
    if bits == 16:
        return codes.astype("<u2", copy=False).tobytes()
    codes = codes.astype(np.uint8, copy=False)
    if bits == 8:
        return codes.tobytes()
    if 8 % bits == 0:
        per = 8 // bits
        padded = np.zeros(-(-codes.size // per) * per, dtype=np.uint8)
        padded[: codes.size] = codes
        out = padded[0::per].copy()
        for j in range(1, per):
            out |= padded[j::per] << np.uint8(bits * j)
        return out.tobytes()
    bit_rows = np.unpackbits(codes[:, None], axis=1, bitorder="little")[:, :bits]
    return np.packbits(bit_rows.ravel(), bitorder="little").tobytes()


def unpack_codes(data: bytes | memoryview, count: int, bits: int) -> np.ndarray:
    """Inverse of :func:`pack_codes`; ``data`` must hold exactly ``packed_size(count, bits)`` bytes."""
    if len(data) != packed_size(count, bits):
        raise ValueError(f"{len(data)} bytes cannot hold exactly {count} codes of {bits} bits")
    if bits == 16:
        return np.frombuffer(data, dtype="<u2").astype(np.uint16)
    raw = np.frombuffer(data, dtype=np.uint8)
    if bits == 8:
        return raw
    if 8 % bits == 0:
        per = 8 // bits
        mask = np.uint8((1 << bits) - 1)
        out = np.empty(raw.size * per, dtype=np.uint8)
        for j in range(per):
            out[j::per] = (raw >> np.uint8(bits * j)) & mask
        return out[:count]
    bit_rows = np.unpackbits(raw, count=count * bits, bitorder="little").reshape(count, bits)
    return np.packbits(bit_rows, axis=1, bitorder="little").ravel()
