"""Clip a whole update to an L2 bound and add Gaussian noise: the client-level DP mechanism's two steps.

The norm is global (all tensors as one vector) and computed in float64, so the clipped update's norm never
exceeds ``clip_norm`` even after rounding to float32. Noise is N(0, (z C)^2) on EVERY coordinate, drawn from
the caller's numpy ``Generator`` (never the global RNG): the noised update is then (epsilon, delta)-DP for
adjacency "this client's update replaced by none" and everything after it (codec, error feedback) is
post-processing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from fedcompress.privacy._checks import check_number
from fedcompress.privacy.randomness import gaussian
from fedcompress.tensors import check_finite, global_norm, to_numpy_update

__all__ = ["clip_and_noise", "clip_update"]

_FLOAT32_EPS = float(np.finfo(np.float32).eps)


def _check_clip_norm(clip_norm: float) -> float:
    return check_number("clip_norm", clip_norm, low=0.0, low_open=True, high_open=True)


def _scaled(update: Mapping[str, np.ndarray], scale: float) -> dict[str, np.ndarray]:
    return {name: (value.astype(np.float64) * scale).astype(np.float32) for name, value in update.items()}


def clip_update(update: Mapping[str, Any], clip_norm: float) -> tuple[dict[str, np.ndarray], float]:
    """Scale ``update`` so its global L2 norm is at most ``clip_norm``; return (float32 copy, norm before).

    ``update`` maps names to numpy arrays or torch tensors and is not modified. Updates already inside the
    ball are returned unscaled. NaN or Inf raise ``ValueError`` naming the tensor.
    """
    clip_norm = _check_clip_norm(clip_norm)
    arrays = to_numpy_update(update)
    check_finite(arrays)
    norm = global_norm(arrays)
    if norm <= clip_norm:
        return arrays, norm
    scale = clip_norm / norm
    clipped = _scaled(arrays, scale)
    attempts = 0
    while global_norm(clipped) > clip_norm:  # float32 rounding can overshoot by ~1e-7 relative
        attempts += 1
        scale *= 1.0 - 4 * _FLOAT32_EPS if attempts <= 4 else 0.5  # halving: only near float32 underflow
        clipped = _scaled(arrays, scale)
    return clipped, norm


def add_noise(
    update: Mapping[str, np.ndarray],
    std: float,
    generator: np.random.Generator,
    dtype: type[np.floating[Any]] = np.float32,
) -> dict[str, np.ndarray]:
    """``update`` plus N(0, std^2) on every coordinate, drawn in key order (float64 sum, ``dtype`` result).

    Each value's noise is the mean of 4 draws scaled to variance std^2 (floating-point-attack resistant).
    """
    if not isinstance(generator, np.random.Generator):
        raise ValueError(f"generator must be a numpy.random.Generator, got {type(generator).__name__}")
    std = check_number("std", std, low=0.0, high_open=True)
    return {
        name: (value.astype(np.float64) + gaussian(generator, std, value.shape)).astype(dtype)
        for name, value in update.items()
    }


def clip_and_noise(
    update: Mapping[str, Any],
    *,
    clip_norm: float,
    noise_multiplier: float,
    generator: np.random.Generator,
) -> tuple[dict[str, np.ndarray], dict[str, float | bool]]:
    """Clip ``update`` to ``clip_norm`` (global L2), then add N(0, (z * clip_norm)^2) to every coordinate.

    Parameters
    ----------
    update : Mapping[str, numpy.ndarray | torch.Tensor]
        The client's update; not modified.
    clip_norm : float
        L2 bound C (> 0): the sensitivity the noise is calibrated for.
    noise_multiplier : float
        z >= 0; the noise standard deviation is z * C.
    generator : numpy.random.Generator
        Source of the noise: secret to the client (``NoiseSource.numpy``), never derived from the run seed.

    Returns
    -------
    tuple[dict[str, numpy.ndarray], dict]
        The noised float32 update, and measurements: ``norm`` (before clipping), ``clipped`` (whether it was
        scaled down), ``noise_std``.
    """
    z = check_number("noise_multiplier", noise_multiplier, low=0.0, high_open=True)
    clipped, norm = clip_update(update, clip_norm)
    std = z * float(clip_norm)
    noised = add_noise(clipped, std, generator)
    return noised, {"norm": norm, "clipped": norm > clip_norm, "noise_std": std}
