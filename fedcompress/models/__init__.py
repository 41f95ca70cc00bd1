"""Denoiser families (teachers and their compact students): residual U-Net and DnCNN, GroupNorm only."""

from fedcompress.models.dncnn import DnCNN
from fedcompress.models.registry import MODEL_NAMES, build_model, count_parameters, model_from_state
from fedcompress.models.unet import UNet

__all__ = ["MODEL_NAMES", "DnCNN", "UNet", "build_model", "count_parameters", "model_from_state"]
