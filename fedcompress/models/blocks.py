"""Layers shared by the model families: Opacus-safe convolution blocks (GroupNorm, never BatchNorm)."""

from __future__ import annotations

from torch import nn

__all__ = ["conv_block", "group_norm", "zero_init"]

_MAX_GROUPS = 8
_MIN_CHANNELS_PER_GROUP = 4


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with at most 8 groups of at least 4 channels (one group below 8 channels).

    GroupNorm normalises each sample on its own, so per-sample gradients exist and DP-SGD's guarantee holds;
    BatchNorm mixes samples and is refused by Opacus.
    """
    limit = max(1, min(_MAX_GROUPS, channels // _MIN_CHANNELS_PER_GROUP))
    groups = max(g for g in range(1, limit + 1) if channels % g == 0)
    return nn.GroupNorm(groups, channels)


def conv_block(in_channels: int, out_channels: int, *, convs: int = 2) -> nn.Sequential:
    """``convs`` times (3x3 conv, GroupNorm, SiLU), padding kept so the spatial size does not change."""
    layers: list[nn.Module] = []
    for i in range(convs):
        layers += [
            nn.Conv2d(in_channels if i == 0 else out_channels, out_channels, 3, padding=1),
            group_norm(out_channels),
            nn.SiLU(),
        ]
    return nn.Sequential(*layers)


def zero_init(layer: nn.Conv2d) -> nn.Conv2d:
    """Zero a layer's weight and bias, so a residual denoiser ``x - net(x)`` starts as the identity."""
    nn.init.zeros_(layer.weight)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)
    return layer
