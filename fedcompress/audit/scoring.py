"""Leakage scores: how close the attacker's images are to the client's, image by image.

Reconstructions come in no particular order, so each original is paired with one reconstruction by an
optimal assignment (Hungarian method on per-pair PSNR, scipy's ``linear_sum_assignment``), then scored with
:func:`fedcompress.metrics.psnr` and :func:`fedcompress.metrics.ssim` (data range 1).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy.optimize import linear_sum_assignment

from fedcompress import metrics

__all__ = ["Leakage", "mean_image_baseline", "score_reconstruction"]


@dataclasses.dataclass(frozen=True)
class Leakage:
    """Per-original scores (in the originals' order) and the reconstruction each original was paired with."""

    psnr: tuple[float, ...]
    ssim: tuple[float, ...]
    assignment: tuple[int, ...]

    def summary(self) -> dict[str, float]:
        """``psnr_mean``, ``psnr_max``, ``ssim_mean``, ``ssim_max`` as plain floats."""
        return {
            "psnr_mean": float(np.mean(self.psnr)),
            "psnr_max": float(np.max(self.psnr)),
            "ssim_mean": float(np.mean(self.ssim)),
            "ssim_max": float(np.max(self.ssim)),
        }


def score_reconstruction(reconstructed: np.ndarray, originals: np.ndarray) -> Leakage:
    """Pair reconstructions with originals (``[B, C, H, W]`` in ``[0, 1]``) maximising total PSNR, then score.

    Reconstructions are clipped to ``[0, 1]`` first.
    """
    rec = np.clip(np.asarray(reconstructed, dtype=np.float64), 0.0, 1.0)
    orig = np.asarray(originals, dtype=np.float64)
    if rec.ndim != 4 or rec.shape != orig.shape or rec.shape[0] == 0:
        raise ValueError(
            f"reconstructed and originals must be non-empty [B, C, H, W] of one shape, got {rec.shape} and {orig.shape}"
        )
    n = rec.shape[0]
    table = np.array([[metrics.psnr(rec[i : i + 1], orig[j : j + 1]) for j in range(n)] for i in range(n)])
    rows, cols = linear_sum_assignment(table, maximize=True)
    pick = np.empty(n, dtype=np.int64)
    pick[cols] = rows  # original j <- reconstruction pick[j]
    return Leakage(
        psnr=tuple(float(table[pick[j], j]) for j in range(n)),
        ssim=tuple(metrics.ssim(rec[pick[j] : pick[j] + 1], orig[j : j + 1]) for j in range(n)),
        assignment=tuple(int(i) for i in pick),
    )


def mean_image_baseline(originals: np.ndarray, reference: np.ndarray) -> Leakage:
    """The trivial attack: guess the pixel-wise mean of ``reference`` (public images of the same kind)."""
    orig = np.asarray(originals, dtype=np.float64)
    guess = np.asarray(reference, dtype=np.float64).mean(axis=0, keepdims=True)
    if orig.ndim != 4 or guess.shape[1:] != orig.shape[1:]:
        raise ValueError(f"reference images {guess.shape[1:]} must match originals {orig.shape[1:]}")
    return score_reconstruction(np.repeat(guess, orig.shape[0], axis=0), orig)
