"""Measure per-sample gradient norms, to choose the DP-SGD clip norm from data rather than by habit.

With the per-pixel-mean MSE loss, each sample's gradient is scaled by 1 / (C*H*W), so norms are small and a
textbook clip norm of 1 never bites (it only adds noise, whose std is z times the clip norm). Clip near the
median norm: most samples are clipped a little and the noise stays small (see notes/opacus-and-dp.md).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F
from opacus import GradSampleModule
from torch import nn

__all__ = ["norm_quantiles", "per_sample_grad_norms"]

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def per_sample_grad_norms(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    loss_fn: Loss = F.mse_loss,
) -> np.ndarray:
    """Global L2 norm of each sample's gradient of ``loss_fn(model(x_i), y_i)`` over ``(x, y)`` batches.

    ``loss_fn`` must reduce by the mean over the batch (as in training); Opacus then returns each sample's own
    gradient. The model's parameters and ``.grad`` are left as they were; Opacus's hooks are removed.
    """
    with warnings.catch_warnings():  # torch: "full backward hook is firing ... no inputs require gradients"
        warnings.filterwarnings("ignore", message="Full backward hook", category=UserWarning)
        return _norms(model, batches, loss_fn)


def _norms(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], loss_fn: Loss) -> np.ndarray:
    wrapped = GradSampleModule(model, loss_reduction="mean")
    saved = [None if p.grad is None else p.grad.clone() for p in model.parameters()]
    norms: list[np.ndarray] = []
    try:
        for inputs, targets in batches:
            if int(inputs.shape[0]) == 0:
                continue
            wrapped.zero_grad(set_to_none=True)
            loss_fn(wrapped(inputs), targets).backward()
            squares = torch.zeros(int(inputs.shape[0]), dtype=torch.float64)
            for p in model.parameters():
                sample = getattr(p, "grad_sample", None)
                if sample is not None:
                    squares += sample.reshape(sample.shape[0], -1).double().pow(2).sum(dim=1)
                    p.grad_sample = None  # type: ignore[attr-defined]
            norms.append(torch.sqrt(squares).numpy())
    finally:
        wrapped._close()
        for p, grad in zip(model.parameters(), saved, strict=True):
            p.grad = grad
    return np.concatenate(norms) if norms else np.zeros(0)


def norm_quantiles(norms: np.ndarray, quantiles: Iterable[float] = (0.1, 0.25, 0.5, 0.75, 0.9)) -> dict[str, float]:
    """Named quantiles of a norm sample (``"p50"`` etc.) plus ``"mean"`` and ``"max"``."""
    values = np.asarray(norms, dtype=np.float64)
    if values.size == 0:
        raise ValueError("norms is empty")
    out = {f"p{round(100 * q):d}": float(np.quantile(values, q)) for q in quantiles}
    out.update(mean=float(values.mean()), max=float(values.max()))
    return out
