"""Denoiser families: residual U-Net and DnCNN (GroupNorm), and the norm-free plain CNN (the edge student)."""

from fedcompress.models.dncnn import DnCNN
from fedcompress.models.plain import PlainCNN
from fedcompress.models.registry import MODEL_NAMES, build_model, count_parameters, model_from_state
from fedcompress.models.unet import UNet

__all__ = ["MODEL_NAMES", "DnCNN", "PlainCNN", "UNet", "build_model", "count_parameters", "model_from_state"]
