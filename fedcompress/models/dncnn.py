"""A DnCNN-style denoiser (Zhang et al. 2017, https://arxiv.org/abs/1608.03981), Opacus-safe.

A plain stack of 3x3 convolutions at one resolution: conv + SiLU, then ``depth - 2`` times conv + GroupNorm +
SiLU, then a conv back to the image channels that predicts the noise (residual learning: the output is
``x - noise``). GroupNorm replaces the paper's BatchNorm so per-sample gradients exist for DP-SGD; the last
layer starts at zero, so an untrained model is the identity.
"""

from __future__ import annotations

import torch
from torch import nn

from fedcompress.models.blocks import conv_block, zero_init

__all__ = ["DnCNN"]


class DnCNN(nn.Module):
    """Residual DnCNN denoiser for ``[B, in_channels, H, W]`` images.

    Parameters
    ----------
    width : int
        Channels of every hidden layer; parameters grow as ``width**2``.
    in_channels : int
        Image channels in and out.
    depth : int
        Number of convolutions (at least 3); the receptive field is ``2 * depth + 1`` pixels.
    """

    def __init__(self, width: int = 16, in_channels: int = 1, *, depth: int = 10) -> None:
        super().__init__()
        if width < 1 or in_channels < 1 or depth < 3:
            raise ValueError(f"need width >= 1, in_channels >= 1, depth >= 3; got {width}, {in_channels}, {depth}")
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1), nn.SiLU())
        self.body = conv_block(width, width, convs=depth - 2)
        self.head = zero_init(nn.Conv2d(width, in_channels, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Denoised ``x``: the input minus the predicted noise."""
        return x - self.head(self.body(self.stem(x)))
