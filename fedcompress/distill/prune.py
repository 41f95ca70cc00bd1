"""Magnitude pruning of a distilled student, made permanent, with the sparsity it reached.

Global unstructured L1 pruning (Han et al. 2015, https://arxiv.org/abs/1506.02626) over the convolutions'
weights with ``torch.nn.utils.prune``: the smallest-magnitude ``amount`` of those weights together are
zeroed, so narrow layers keep more of theirs than wide ones. The output convolution (the last one) is never
pruned: the residual denoisers start it at zero, so its weights can be the smallest of all, and pruning them
away would turn the model into the identity. While the masks are attached a fine-tune by
distillation (``fit_to_teacher``) recovers quality without reviving pruned weights; ``make_permanent`` then
removes the re-parametrisation (``prune.remove``) so the zeros are plain values of ``weight``.

Unstructured zeros make neither a dense ONNX file nor onnxruntime's dense kernels smaller or faster; they
would only help a file that is compressed afterwards. Biases and GroupNorm affine parameters are not pruned.
"""

from __future__ import annotations

import math
from typing import Any

from torch import nn
from torch.nn.utils import prune

__all__ = ["conv_sparsity", "make_permanent", "prune_model"]


def _convs(model: nn.Module) -> list[tuple[str, nn.Conv2d]]:
    return [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]


def prune_model(model: nn.Module, amount: float) -> nn.Module:
    """Attach global L1 masks zeroing ``amount`` (a share in ``[0, 1)``) of the conv weights; IN PLACE.

    Every Conv2d but the last (the output layer) takes part; ``amount`` is a share of their weights together.

    The model keeps ``weight_orig`` and ``weight_mask`` until ``make_permanent``; training in between only
    moves the unpruned weights.
    """
    if not (isinstance(amount, float | int) and math.isfinite(amount) and 0 <= amount < 1):
        raise ValueError(f"amount must be a share in [0, 1), got {amount!r}")
    convs = _convs(model)[:-1]
    if not convs:
        raise ValueError(f"{type(model).__name__} needs at least two Conv2d layers to prune (the last is kept)")
    prune.global_unstructured(
        [(m, "weight") for _, m in convs], pruning_method=prune.L1Unstructured, amount=float(amount)
    )
    return model


def make_permanent(model: nn.Module) -> nn.Module:
    """Fold every pruning mask into its ``weight`` and drop the hooks (``prune.remove``); IN PLACE."""
    for _, module in _convs(model):
        if prune.is_pruned(module) and hasattr(module, "weight_mask"):
            prune.remove(module, "weight")
    return model


def conv_sparsity(model: nn.Module) -> dict[str, Any]:
    """Share of exactly-zero conv weights (all convs, the output layer included), overall and per layer.

    Also says whether any pruning mask is still attached (``masks_attached``).
    """
    layers: dict[str, float] = {}
    zeros = total = 0
    for name, module in _convs(model):
        weight = module.weight.detach()
        layer_zeros = int((weight == 0).sum())
        layers[name] = layer_zeros / weight.numel()
        zeros += layer_zeros
        total += weight.numel()
    return {
        "sparsity": zeros / total if total else 0.0,
        "zero_weights": zeros,
        "conv_weights": total,
        "layers": layers,
        "masks_attached": any(hasattr(m, "weight_mask") for _, m in _convs(model)),
    }
