"""Quantization-aware fine-tune of a student in plain PyTorch, before the ONNX export and ORT's quantization.

Fake quantization mirrors what ``quantize.quantize_onnx`` will do to each convolution (Jacob et al. 2018,
https://arxiv.org/abs/1712.05877): weights rounded to int8 per output channel, symmetric (the 7-bit range
when ``reduce_range``), and the conv's input rounded to int8 per tensor over the range observed on the
calibration images (MinMax, range widened to include 0). Rounding passes the gradient straight through
(``torch.fake_quantize_per_*_affine``, core ATen ops; no ``torch.ao``). Pruned zeros are held at zero.
``FakeQuant.remove`` leaves plain float weights that already sit near the int8 grid; the export and ORT's
static quantization then run as for a post-training student.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

__all__ = ["FakeQuant"]

_ACT_MIN, _ACT_MAX = -128, 127


class _WeightFakeQuant(nn.Module):
    """Per-output-channel symmetric int8 fake quantization of a conv weight, pruned zeros held."""

    def __init__(self, mask: torch.Tensor, qmax: int) -> None:
        super().__init__()
        self.mask: torch.Tensor
        self.register_buffer("mask", mask)
        self.qmax = qmax

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        """The weight, pruned zeros held, rounded to the int8 grid (straight-through gradient)."""
        weight = weight * self.mask
        scale = (weight.detach().abs().amax(dim=(1, 2, 3)) / self.qmax).clamp_min(1e-12)
        zero = torch.zeros_like(scale, dtype=torch.int32)
        return torch.fake_quantize_per_channel_affine(weight, scale, zero, 0, -self.qmax, self.qmax)


class FakeQuant:
    """Fake quantization attached to every Conv2d of ``model`` (IN PLACE) until ``remove``.

    Parameters
    ----------
    model : nn.Module
        The float student (pruned or not); its weights keep training while attached.
    calibration : torch.Tensor
        Proxy images ``[n, C, H, W]`` whose conv-input ranges fix the activation scales.
    reduce_range : bool
        7-bit weights (as ``quantize_onnx``'s default).
    """

    def __init__(self, model: nn.Module, calibration: torch.Tensor, *, reduce_range: bool = True) -> None:
        self.model = model
        self.convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
        qmax = 64 if reduce_range else 127
        ranges = _input_ranges(model, self.convs, calibration)
        self.handles = []
        self.weight_quant: list[_WeightFakeQuant] = []
        for conv in self.convs:
            self.weight_quant.append(_WeightFakeQuant(conv.weight.detach() != 0, qmax))
            parametrize.register_parametrization(conv, "weight", self.weight_quant[-1])
            low, high = ranges[conv]
            scale = max(high - low, 1e-8) / (_ACT_MAX - _ACT_MIN)
            zero = round(_ACT_MIN - low / scale)
            self.handles.append(conv.register_forward_pre_hook(_input_hook(scale, zero)))

    def remove(self) -> nn.Module:
        """Detach the fake quantization: plain float weights (pruned zeros kept), no hooks; return the model."""
        for handle in self.handles:
            handle.remove()
        for conv, quant in zip(self.convs, self.weight_quant, strict=True):
            parametrize.remove_parametrizations(conv, "weight", leave_parametrized=False)
            with torch.no_grad():
                conv.weight.mul_(quant.mask)
        return self.model


def _input_hook(scale: float, zero: int) -> Any:
    def hook(_module: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        return (torch.fake_quantize_per_tensor_affine(args[0], scale, zero, _ACT_MIN, _ACT_MAX), *args[1:])

    return hook


@torch.no_grad()
def _input_ranges(
    model: nn.Module, convs: list[nn.Conv2d], images: torch.Tensor, batch_size: int = 64
) -> dict[nn.Module, tuple[float, float]]:
    """Min and max of every conv's input over ``images``, each range widened to include 0."""
    ranges: dict[nn.Module, tuple[float, float]] = {conv: (0.0, 0.0) for conv in convs}

    def observe(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        low, high = ranges[module]
        ranges[module] = (min(low, float(args[0].min())), max(high, float(args[0].max())))

    handles = [conv.register_forward_pre_hook(observe) for conv in convs]
    was_training = model.training
    model.eval()
    try:
        for i in range(0, len(images), batch_size):
            model(images[i : i + batch_size])
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return ranges
