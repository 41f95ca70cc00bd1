"""Synthetic medical-style phantoms: the built-in data set, generated on the fly and needing no download.

Three kinds of image, each a crude stand-in for what a scanner sees:

- ``ellipses``: Shepp-Logan-like head phantoms (Shepp & Logan 1974): a bright rim, darker tissue inside and
  several small ellipses of higher or lower density, randomly placed and rotated;
- ``blobs``: a soft body outline with Gaussian blobs of either sign (lesions, vessels, cells);
- ``textures``: MRI-like tissue classes: a smooth random field (low-passed white noise) pushed through a soft
  threshold, so regions have smooth boundaries, inside a soft body outline.

Edges are anti-aliased with a one-pixel ramp, so the images look alike at every size. Everything is vectorised
over images (in chunks that bound memory) and every random draw comes from the caller's generator, so the same
generator state gives the same images.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["PHANTOM_KINDS", "generate_phantoms"]

PHANTOM_KINDS: tuple[str, ...] = ("ellipses", "blobs", "textures")

# (x, y, pixel pitch): pixel-centre coordinates in [-1, 1]
Grid = tuple[np.ndarray, np.ndarray, float]
# (cx, cy, a, b, theta) of one ellipse per image, each [m, 1]
EllipseParams = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]

_ELEMENTS_PER_CHUNK = 1 << 22  # float32 elements of the largest temporary: about 16 MiB
_SMALL_ELLIPSES = 6
_BLOBS = 8


def generate_phantoms(
    n: int, *, image_size: int = 32, rng: np.random.Generator, mix: Sequence[float] | None = None
) -> np.ndarray:
    """Draw ``n`` phantoms as float32 ``[n, 1, image_size, image_size]`` in ``[0, 1]``.

    Parameters
    ----------
    n : int
        Number of images (0 gives an empty array).
    image_size : int
        Height and width in pixels (at least 8).
    rng : numpy.random.Generator
        Source of every random draw; the same state gives the same images.
    mix : sequence of 3 floats, optional
        Probabilities of ``PHANTOM_KINDS`` (normalised here). Default: equal.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if image_size < 8:
        raise ValueError(f"image_size must be >= 8, got {image_size}")
    probs = _check_mix(mix)
    kinds = rng.choice(len(PHANTOM_KINDS), size=n, p=probs)
    out = np.empty((n, 1, image_size, image_size), dtype=np.float32)
    grid = _grid(image_size)
    makers = (_ellipses, _blobs, _textures)
    for k, make in enumerate(makers):
        where = np.flatnonzero(kinds == k)
        per_chunk = max(1, _ELEMENTS_PER_CHUNK // (image_size * image_size * (_SMALL_ELLIPSES + 2)))
        for start in range(0, where.size, per_chunk):
            idx = where[start : start + per_chunk]
            out[idx, 0] = make(idx.size, grid, rng)
    np.clip(out, 0.0, 1.0, out=out)
    return out


def _check_mix(mix: Sequence[float] | None) -> np.ndarray:
    if mix is None:
        return np.full(len(PHANTOM_KINDS), 1.0 / len(PHANTOM_KINDS))
    probs = np.asarray(mix, dtype=np.float64)
    if probs.shape != (len(PHANTOM_KINDS),) or not np.all(np.isfinite(probs)) or np.any(probs < 0):
        raise ValueError(f"mix must be non-negative weights for {PHANTOM_KINDS}, got {mix}")
    if probs.sum() <= 0:
        raise ValueError(f"mix must have a positive sum, got {mix}")
    return probs / probs.sum()


def _grid(size: int) -> Grid:
    """Pixel-centre coordinates in ``[-1, 1]`` (x across, y down) and the pixel pitch."""
    axis = (np.arange(size, dtype=np.float32) + 0.5) * (2.0 / size) - 1.0
    y, x = np.meshgrid(axis, axis, indexing="ij")
    return x, y, 2.0 / size


def _ellipse_masks(
    grid: Grid, cx: np.ndarray, cy: np.ndarray, a: np.ndarray, b: np.ndarray, theta: np.ndarray
) -> np.ndarray:
    """Soft masks ``[m, k, H, W]`` of ellipses with parameters ``[m, k]``: 1 inside, a 1-pixel edge ramp."""
    x, y, pitch = grid
    cx, cy, a, b, theta = (np.asarray(p, dtype=np.float32) for p in (cx, cy, a, b, theta))
    dx = x[None, None] - cx[..., None, None]
    dy = y[None, None] - cy[..., None, None]
    cos, sin = np.cos(theta)[..., None, None], np.sin(theta)[..., None, None]
    u = (dx * cos + dy * sin) / a[..., None, None]
    v = (dy * cos - dx * sin) / b[..., None, None]
    r = np.sqrt(u * u + v * v)
    # distance to the edge in pixels, approximately (1 - r) * (smaller semi-axis) / pitch
    ramp = (1.0 - r) * (np.minimum(a, b)[..., None, None] / pitch) + 0.5
    return np.clip(ramp, 0.0, 1.0)


def _body(m: int, grid: Grid, rng: np.random.Generator) -> tuple[np.ndarray, EllipseParams]:
    """One soft body outline per image, ``[m, H, W]``, and its ellipse parameters."""
    cx, cy = rng.uniform(-0.06, 0.06, (2, m, 1))
    a, b = rng.uniform(0.7, 0.92, (m, 1)), rng.uniform(0.55, 0.9, (m, 1))
    theta = rng.uniform(-0.3, 0.3, (m, 1))
    return _ellipse_masks(grid, cx, cy, a, b, theta)[:, 0], (cx, cy, a, b, theta)


def _ellipses(m: int, grid: Grid, rng: np.random.Generator) -> np.ndarray:
    body, (cx, cy, a, b, theta) = _body(m, grid, rng)
    inner = _ellipse_masks(grid, cx, cy, 0.9 * a, 0.9 * b, theta)[:, 0]
    rim = rng.uniform(0.8, 1.0, (m, 1, 1))
    tissue = rng.uniform(0.2, 0.45, (m, 1, 1))
    image = rim * body + (tissue - rim) * inner
    k = _SMALL_ELLIPSES
    radius, angle = 0.55 * np.sqrt(rng.uniform(0, 1, (m, k))), rng.uniform(0, 2 * np.pi, (m, k))
    sx, sy = cx + radius * np.cos(angle) * a, cy + radius * np.sin(angle) * b
    sa, sb = rng.uniform(0.05, 0.3, (2, m, k))
    st = rng.uniform(0, np.pi, (m, k))
    level = rng.uniform(0.1, 0.4, (m, k)) * rng.choice([-1.0, 1.0], (m, k), p=[0.3, 0.7])
    small = _ellipse_masks(grid, sx, sy, sa, sb, st)
    return image + np.einsum("mk,mkhw->mhw", level.astype(np.float32), small)


def _blobs(m: int, grid: Grid, rng: np.random.Generator) -> np.ndarray:
    x, y, _ = grid
    body, (cx, cy, a, b, _) = _body(m, grid, rng)
    image = rng.uniform(0.25, 0.5, (m, 1, 1)) * body
    k = _BLOBS
    bx = cx + a * rng.uniform(-0.7, 0.7, (m, k))
    by = cy + b * rng.uniform(-0.7, 0.7, (m, k))
    sigma = rng.uniform(0.04, 0.2, (m, k))
    amp = rng.uniform(0.15, 0.5, (m, k)) * rng.choice([-1.0, 1.0], (m, k), p=[0.3, 0.7])
    amp *= rng.uniform(0, 1, (m, k)) < 0.75  # a varied number of blobs per image
    bx4, by4, s4 = (np.asarray(p, dtype=np.float32)[..., None, None] for p in (bx, by, sigma))
    g = np.exp(-((x[None, None] - bx4) ** 2 + (y[None, None] - by4) ** 2) / (2 * s4**2))
    return image + body * np.einsum("mk,mkhw->mhw", amp.astype(np.float32), g)


def _textures(m: int, grid: Grid, rng: np.random.Generator) -> np.ndarray:
    x, _, _ = grid
    size = x.shape[0]
    body, _ = _body(m, grid, rng)
    white = rng.standard_normal((m, size, size)).astype(np.float32)
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.rfftfreq(size)[None, :]
    corr = rng.uniform(0.04, 0.12, (m, 1, 1)) * size  # correlation length: a fixed fraction of the image
    lowpass = np.exp(-2 * (np.pi * corr) ** 2 * (fx**2 + fy**2))
    field = np.fft.irfft2(np.fft.rfft2(white) * lowpass, s=(size, size))
    field = (field - field.mean(axis=(1, 2), keepdims=True)) / (field.std(axis=(1, 2), keepdims=True) + 1e-8)
    sharp = rng.uniform(2.0, 6.0, (m, 1, 1))
    low, high = rng.uniform(0.15, 0.35, (m, 1, 1)), rng.uniform(0.6, 0.95, (m, 1, 1))
    tissue = low + (high - low) / (1.0 + np.exp(-sharp * field))
    return (tissue * body).astype(np.float32)
