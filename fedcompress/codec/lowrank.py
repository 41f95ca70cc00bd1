"""``lowrank:R`` — PowerSGD-style rank-R factorization (Vogels et al., NeurIPS 2019, https://arxiv.org/abs/1905.13727).

Every tensor with two or more dimensions is viewed as a matrix ``M`` of shape ``out x (in * kh * kw)``. One
power iteration per round, warm-started from the previous round's ``Q`` (kept in the codec state)::

    P = M Q            # m x r
    P = orthonormalize(P)
    Q = M^T P          # n x r
    M ~ P Q^T          # what the decoder rebuilds; M - P Q^T goes to the error-feedback residual

``lowrank:R:svd`` uses the exact truncated SVD instead (``P = U_r``, ``Q = V_r S_r``). A tensor whose factors
would not be smaller than it (``r * (m + n) >= m * n``: biases, norms, small matrices) passes through
unchanged.
"""

from __future__ import annotations

import math

import numpy as np

from fedcompress.codec.base import Stage, check_int, parse_number, register_stage

__all__ = ["LowRank", "matrix_shape", "orthonormalize"]

METHODS = ("power", "svd")
MAX_RANK = 1 << 16


def matrix_shape(shape: tuple[int, ...]) -> tuple[int, int]:
    """The 2-D view of a tensor: first dimension by the product of the rest (conv: out x in*kh*kw)."""
    return (shape[0], math.prod(shape[1:])) if shape else (1, 1)


def orthonormalize(matrix: np.ndarray) -> np.ndarray:
    """Orthonormal columns spanning ``matrix``'s (modified Gram-Schmidt in float64, as PowerSGD's reference).

    A column (numerically) in the span of the previous ones becomes zero; ``P P^T`` is then still an
    orthogonal projection, which is all the algorithm needs.
    """
    out = matrix.astype(np.float64)
    for j in range(out.shape[1]):
        column = out[:, j]
        before = math.sqrt(column @ column)
        for i in range(j):
            column -= (out[:, i] @ column) * out[:, i]
        norm = math.sqrt(column @ column)
        if norm > 1e-6 * before and norm > 0.0:
            column /= norm
        else:
            column[:] = 0.0
    return out


@register_stage
class LowRank(Stage):
    """Rank-``rank`` factors of every tensor where they save bytes.

    Parameters
    ----------
    rank : int
        Target rank R, 1..65536 (capped by the matrix's smaller side).
    method : str
        ``"power"`` (one warm-started power iteration, the default) or ``"svd"`` (exact truncated SVD).
    """

    codec_id = "lowrank"
    slot = 0
    params = ("rank", "method")

    def __init__(self, *, rank: int, method: str = "power") -> None:
        self.rank = check_int("lowrank", "rank", rank, 1, MAX_RANK)
        if method not in METHODS:
            raise ValueError(f"stage 'lowrank' parameter 'method' must be one of {list(METHODS)}, got {method!r}")
        self.method = method

    @property
    def data_independent(self) -> bool:
        """False: the factors are a function of the data."""
        return False

    @classmethod
    def from_spec_args(cls, args: list[str]) -> LowRank:
        """``lowrank:R`` or ``lowrank:R:power`` or ``lowrank:R:svd``."""
        if not 1 <= len(args) <= 2:
            raise ValueError(f"stage 'lowrank' takes a rank and optionally a method ('power' or 'svd'); got {args}")
        rank = parse_number("lowrank", "rank", args[0], int)
        return cls(rank=rank, method=args[1] if len(args) == 2 else "power")

    def spec(self) -> str:
        """``lowrank:R:power`` or ``lowrank:R:svd``."""
        return f"lowrank:{self.rank}:{self.method}"

    def rank_for(self, shape: tuple[int, ...]) -> int:
        """The rank used for a tensor of this shape: R capped by the matrix's smaller side."""
        rows, cols = matrix_shape(shape)
        return min(self.rank, rows, cols)

    def applies(self, shape: tuple[int, ...]) -> bool:
        """True when the tensor has >= 2 dims and its rank-r factors are strictly smaller than it."""
        if len(shape) < 2:
            return False
        rows, cols = matrix_shape(shape)
        rank = self.rank_for(shape)
        return rank >= 1 and rank * (rows + cols) < rows * cols

    def encode(
        self, matrix: np.ndarray, warm_q: np.ndarray | None, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Factor a float32 ``m x n`` matrix into ``P`` (m x r, orthonormal columns) and ``Q`` (n x r).

        ``warm_q`` is last round's ``Q`` (``n x r``) or None; a missing, zero or non-finite one is drawn
        from ``rng``. The returned ``Q`` is also the next round's warm start.
        """
        rows, cols = matrix.shape
        rank = min(self.rank, rows, cols)
        if self.method == "svd":
            u, s, vt = np.linalg.svd(matrix.astype(np.float64), full_matrices=False)
            return u[:, :rank].astype(np.float32), (vt[:rank].T * s[:rank]).astype(np.float32)
        if warm_q is None or not np.all(np.isfinite(warm_q)) or not np.any(warm_q):
            warm_q = rng.standard_normal((cols, rank), dtype=np.float32)
        p = orthonormalize(matrix @ warm_q.astype(np.float32, copy=False)).astype(np.float32)  # P = orth(M Q)
        q = matrix.T @ p  # Q = M^T P
        return p.astype(np.float32, copy=False), q.astype(np.float32, copy=False)

    @staticmethod
    def decode(p: np.ndarray, q: np.ndarray) -> np.ndarray:
        """``P Q^T`` in float32, summed rank by rank so every machine gets the same bits (no BLAS)."""
        out = np.multiply.outer(p[:, 0], q[:, 0]) if p.shape[1] else np.zeros((p.shape[0], q.shape[0]), np.float32)
        for j in range(1, p.shape[1]):
            out += np.multiply.outer(p[:, j], q[:, j])
        return out.astype(np.float32, copy=False)
