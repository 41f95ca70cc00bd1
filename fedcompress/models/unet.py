"""A small U-Net denoiser (Ronneberger et al. 2015, https://arxiv.org/abs/1505.04597), Opacus-safe.

Two levels down and two up around a bottleneck, channel widths ``w, 2w, 4w``. Downsampling is 2x2
average pooling; upsampling is bilinear interpolation to the skip connection's exact size followed by a 1x1
conv (no ConvTranspose2d, which Opacus's ``ew`` mode refuses), so any image size of at least 4 pixels works.
The network predicts the noise and returns ``x - noise``; its last layer starts at zero, so an untrained model
is the identity and training starts from the noisy input's PSNR.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fedcompress.models.blocks import conv_block, zero_init

__all__ = ["UNet"]


class UNet(nn.Module):
    """Residual U-Net denoiser for ``[B, in_channels, H, W]`` images.

    Parameters
    ----------
    width : int
        Channels at full resolution (the bottleneck has ``4 * width``); parameters grow as ``width**2``.
    in_channels : int
        Image channels in and out.
    """

    def __init__(self, width: int = 16, in_channels: int = 1) -> None:
        super().__init__()
        if width < 1 or in_channels < 1:
            raise ValueError(f"width and in_channels must be >= 1, got {width} and {in_channels}")
        w = width
        self.enc1 = conv_block(in_channels, w)
        self.enc2 = conv_block(w, 2 * w)
        self.mid = conv_block(2 * w, 4 * w)
        self.up2 = nn.Conv2d(4 * w, 2 * w, 1)
        self.dec2 = conv_block(4 * w, 2 * w)
        self.up1 = nn.Conv2d(2 * w, w, 1)
        self.dec1 = conv_block(2 * w, w)
        self.head = zero_init(nn.Conv2d(w, in_channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Denoised ``x``: the input minus the predicted noise."""
        e1 = self.enc1(x)
        e2 = self.enc2(F.avg_pool2d(e1, 2))
        m = self.mid(F.avg_pool2d(e2, 2))
        d2 = self.dec2(torch.cat([self.up2(_upsample(m, e2)), e2], dim=1))
        d1 = self.dec1(torch.cat([self.up1(_upsample(d2, e1)), e1], dim=1))
        return x - self.head(d1)


def _upsample(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)
