"""Unsigned LEB128 varints, vectorised over numpy arrays (7 bits a byte, high bit = "more bytes follow").

Used for sorted index deltas (small numbers, mostly one byte) and for the counts and lengths of the wire
format. Values are limited to ``MAX_VARINT_BYTES`` bytes (35 bits), far above any count the decoder accepts.
"""

from __future__ import annotations

import numpy as np

from fedcompress.errors import CodecError

__all__ = ["MAX_VARINT_BYTES", "decode_varints", "encode_varint", "encode_varints"]

MAX_VARINT_BYTES = 5
_MAX_VALUE = (1 << (7 * MAX_VARINT_BYTES)) - 1


def encode_varint(value: int) -> bytes:
    """One non-negative int as a varint."""
    if not 0 <= value <= _MAX_VALUE:
        raise ValueError(f"varint value must be in 0..{_MAX_VALUE}, got {value}")
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def encode_varints(values: np.ndarray) -> bytes:
    """Many non-negative ints as concatenated varints, without a Python loop over the values."""
    values = np.asarray(values, dtype=np.uint64).ravel()
    if values.size == 0:
        return b""
    top = int(values.max())
    if top > _MAX_VALUE:
        raise ValueError(f"varint values must be at most {_MAX_VALUE}")
    if top < 0x80:  # fast path: every value fits one byte
        return values.astype(np.uint8).tobytes()
    # Bytes per value: 1 + number of 7-bit thresholds it reaches.
    nbytes = np.ones(values.size, dtype=np.int64)
    for j in range(1, MAX_VARINT_BYTES):
        nbytes += values >= np.uint64(1 << (7 * j))
    starts = np.cumsum(nbytes) - nbytes
    out = np.empty(int(nbytes.sum()), dtype=np.uint8)
    for j in range(int(nbytes.max())):
        live = nbytes > j
        chunk = (values[live] >> np.uint64(7 * j)) & np.uint64(0x7F)
        more = (nbytes[live] > j + 1).astype(np.uint64) << np.uint64(7)
        out[starts[live] + j] = (chunk | more).astype(np.uint8)
    return out.tobytes()


def decode_varints(data: bytes | np.ndarray, count: int) -> np.ndarray:
    """Decode exactly ``count`` varints that fill ``data`` exactly; ``CodecError`` otherwise.

    Returns an ``int64`` array. Checks the number of terminated values, the final terminator and the
    per-value length before combining anything.
    """
    raw = np.frombuffer(data, dtype=np.uint8) if isinstance(data, (bytes, bytearray, memoryview)) else data
    if raw.size == 0:
        if count != 0:
            raise CodecError(f"varint section is empty but {count} values were expected")
        return np.zeros(0, dtype=np.int64)
    ends = np.flatnonzero(raw < 0x80)
    if ends.size != count or ends[-1] != raw.size - 1:
        raise CodecError(
            f"varint section of {raw.size} bytes holds {ends.size} complete values "
            f"(last byte terminated: {bool(raw[-1] < 0x80)}); expected {count}"
        )
    if ends.size == raw.size:  # fast path: every value is one byte
        return raw.astype(np.int64)
    starts = np.empty_like(ends)
    starts[0] = 0
    starts[1:] = ends[:-1] + 1
    lengths = ends - starts + 1
    if int(lengths.max()) > MAX_VARINT_BYTES:
        raise CodecError(f"a varint is longer than {MAX_VARINT_BYTES} bytes")
    position = np.arange(raw.size, dtype=np.int64) - np.repeat(starts, lengths)
    parts = (raw.astype(np.int64) & 0x7F) << (7 * position)
    return np.add.reduceat(parts, starts)
