"""The fast Walsh-Hadamard transform and the randomized Hadamard rotation built on it.

``fwht`` multiplies every row of an ``(m, n)`` float32 array (``n`` a power of two) by the Sylvester Hadamard
matrix ``H_n`` (entries +-1, ``H_n H_n = n I``) in ``O(n log n)`` additions. It uses the constant-geometry
form of the butterfly (Pease): every pass reads the rows' four quarters, contiguous, and writes the sums
interleaved, so numpy runs long vectorised loops in every pass instead of the short strided ones of the
textbook in-place form. Two levels per pass (radix 4), one radix-2 pass when ``log2 n`` is odd.

The rotation of a vector ``x`` of ``n`` values is ``R x = H_n D x / sqrt(n)`` with ``D`` a diagonal of
random signs: orthonormal (``R^T R = I``), so norms, inner products and L2 errors are the same on both
sides, and it spreads any vector's energy evenly over the coordinates (DRIVE, Vargaftik et al., NeurIPS
2021, https://arxiv.org/abs/2105.08339). Its inverse is ``D H_n y / sqrt(n)``. Additions and sign flips are
exactly rounded IEEE operations in a fixed order, so every machine computes the same bits (no BLAS).
"""

from __future__ import annotations

import numpy as np

from fedcompress.seeding import derive_seed

__all__ = ["flip_signs", "fwht", "is_power_of_two", "random_sign_bits"]

# numpy buffers (copies) every operand of a ufunc whose contiguous inner runs are shorter than its buffer size
# (8192 values by default). Our quarter-rows are 1024 values for 4096-value chunks: a small buffer size lets
# numpy run them in place, which measured about a third faster. Results are the same either way.
_BUFSIZE = 64


def is_power_of_two(value: int) -> bool:
    """True for 1, 2, 4, 8, ..."""
    return value >= 1 and value & (value - 1) == 0


def fwht(rows: np.ndarray, *, overwrite: bool = False) -> np.ndarray:
    """``rows @ H_n`` for a C-contiguous float32 ``(m, n)`` array, ``n`` a power of two.

    Unnormalised: applying it twice multiplies by ``n``. Returns a new array, or with ``overwrite`` writes the
    result into ``rows`` and returns it.
    """
    count, n = rows.shape
    if n == 1:
        return rows if overwrite else rows.copy()
    scratch = np.empty(2 * rows.size, dtype=rows.dtype)  # y, then the pass's sums and differences
    x, y = (rows if overwrite else rows.copy()), scratch[: rows.size].reshape(rows.shape)
    old_bufsize = np.setbufsize(_BUFSIZE)  # see _BUFSIZE; numpy keeps it per context, restored below
    try:
        x = _passes(x, y, scratch[rows.size :], count, n)
    finally:
        np.setbufsize(old_bufsize)
    if overwrite and x is not rows:
        rows[...] = x
    return rows if overwrite else x


def _passes(x: np.ndarray, y: np.ndarray, temp: np.ndarray, count: int, n: int) -> np.ndarray:
    """The butterfly passes, ping-ponging between ``x`` and ``y``; returns the one holding the result."""
    levels = n.bit_length() - 1
    quarter = n // 4
    sums, diffs = temp.reshape(2, 2, count, quarter) if levels >= 2 else (temp, temp)
    for _ in range(levels // 2):
        # y[4i + j] = sum_k H_4[j, k] * x[i + k * n/4]: two butterfly levels in one pass.
        parts = x.reshape(count, 4, quarter)
        out = y.reshape(count, quarter, 4)
        np.add(parts[:, 0], parts[:, 2], out=sums[0])
        np.subtract(parts[:, 0], parts[:, 2], out=diffs[0])
        np.add(parts[:, 1], parts[:, 3], out=sums[1])
        np.subtract(parts[:, 1], parts[:, 3], out=diffs[1])
        np.add(sums[0], sums[1], out=out[:, :, 0])
        np.subtract(sums[0], sums[1], out=out[:, :, 1])
        np.add(diffs[0], diffs[1], out=out[:, :, 2])
        np.subtract(diffs[0], diffs[1], out=out[:, :, 3])
        x, y = y, x
    if levels % 2:
        # y[2i + j] = x[i] + (-1)^j x[i + n/2]: the last, radix-2, level.
        halves = x.reshape(count, 2, n // 2)
        out = y.reshape(count, n // 2, 2)
        np.add(halves[:, 0], halves[:, 1], out=out[:, :, 0])
        np.subtract(halves[:, 0], halves[:, 1], out=out[:, :, 1])
        x, y = y, x
    return x


def random_sign_bits(count: int, seed: int) -> np.ndarray:
    """``count`` random bits (uint8 0/1) from the payload seed: the diagonal ``D`` (1 means -1).

    Raw PCG64 output (stable across numpy versions) read as little-endian bits.
    """
    words = np.random.PCG64(derive_seed(seed, "rotate")).random_raw(-(-count // 64))
    return np.unpackbits(np.asarray(words, dtype="<u8").view(np.uint8), count=count, bitorder="little")


def flip_signs(values: np.ndarray, bits: np.ndarray) -> np.ndarray:
    """Flip the sign of the float32 ``values`` where ``bits`` is 1, in place (exact); returns ``values``."""
    words = values.view(np.uint32)
    np.bitwise_xor(words, np.left_shift(bits, 31, dtype=np.uint32), out=words)
    return values
