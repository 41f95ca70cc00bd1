"""Image-quality metrics for denoising: MSE, PSNR and SSIM, on torch tensors or numpy arrays ``[n, C, H, W]``.

All three are computed in float64 per image and then averaged over images, so a batch's score is the mean of
its images' scores (the usual convention when reporting PSNR/SSIM on a test set).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["MSE_FLOOR", "mse", "psnr", "ssim"]

MSE_FLOOR = 1e-12  # PSNR of identical images is capped at 10*log10(data_range**2 / 1e-12): 120 dB at range 1
_SSIM_WINDOW = 11
_SSIM_SIGMA = 1.5
_SSIM_K1, _SSIM_K2 = 0.01, 0.03


def mse(pred: Any, target: Any) -> float:
    """Mean squared error over every pixel of every image."""
    p, t = _pair(pred, target)
    return float(torch.mean((p - t) ** 2))


def psnr(pred: Any, target: Any, data_range: float = 1.0) -> float:
    """Mean over images of ``10 * log10(data_range**2 / mse_i)``, in dB, with ``mse_i >= MSE_FLOOR``.

    The floor keeps identical images finite (120 dB at ``data_range=1``) so averages and plots stay usable.
    """
    _check_range(data_range)
    p, t = _pair(pred, target)
    per_image = torch.mean((p - t) ** 2, dim=(1, 2, 3)).clamp_min(MSE_FLOOR)
    return float(torch.mean(10.0 * torch.log10(data_range**2 / per_image)))


def ssim(pred: Any, target: Any, data_range: float = 1.0) -> float:
    """Mean structural similarity (Wang et al. 2004, https://doi.org/10.1109/TIP.2003.819861).

    Gaussian window of 11 pixels with sigma 1.5, ``K1 = 0.01``, ``K2 = 0.03``, local statistics over the
    valid region only (no padding), as in the paper's reference code (without its automatic downsampling of
    images over 256 pixels); the SSIM map is averaged per image and channel, then over channels and images.
    Images smaller than the window use a window as large as the image (odd). Identical images score 1.
    """
    _check_range(data_range)
    p, t = _pair(pred, target)
    n, c, h, w = p.shape
    size = min(_SSIM_WINDOW, h if h % 2 else h - 1, w if w % 2 else w - 1)
    kernel = _gaussian(size, _SSIM_SIGMA)

    def blur(x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(n * c, 1, *x.shape[-2:])
        x = F.conv2d(x, kernel.view(1, 1, 1, -1))
        return F.conv2d(x, kernel.view(1, 1, -1, 1))

    c1, c2 = (_SSIM_K1 * data_range) ** 2, (_SSIM_K2 * data_range) ** 2
    mu_p, mu_t = blur(p), blur(t)
    var_p = blur(p * p) - mu_p**2
    var_t = blur(t * t) - mu_t**2
    cov = blur(p * t) - mu_p * mu_t
    numerator = (2 * mu_p * mu_t + c1) * (2 * cov + c2)
    denominator = (mu_p**2 + mu_t**2 + c1) * (var_p + var_t + c2)
    ssim_map = numerator / denominator
    return float(ssim_map.reshape(n, c, -1).mean(dim=2).mean())


def _gaussian(size: int, sigma: float) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def _as_tensor(x: Any, name: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach().to(device="cpu", dtype=torch.float64)
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.asarray(x, dtype=np.float64))
    raise ValueError(f"{name} must be a torch.Tensor or numpy.ndarray, got {type(x).__name__}")


def _pair(pred: Any, target: Any) -> tuple[torch.Tensor, torch.Tensor]:
    p, t = _as_tensor(pred, "pred"), _as_tensor(target, "target")
    if p.ndim != 4 or p.shape != t.shape or p.shape[0] == 0:
        raise ValueError(
            f"pred and target must be non-empty [n, C, H, W] of one shape, got {tuple(p.shape)} and {tuple(t.shape)}"
        )
    return p, t


def _check_range(data_range: float) -> None:
    if not (math.isfinite(data_range) and data_range > 0):
        raise ValueError(f"data_range must be a positive finite number, got {data_range!r}")
