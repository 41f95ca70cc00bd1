"""Central evaluation of global weights on the held-out test set (never any client's data)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from fedcompress.config import RunConfig
from fedcompress.data import test_data_for
from fedcompress.models import build_model
from fedcompress.training import evaluate

__all__ = ["Evaluator"]


class Evaluator:
    """Builds the test set once and scores weights on it (PSNR, SSIM, MSE loss)."""

    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg
        self.data = test_data_for(cfg)
        self.model = build_model(cfg.model, width=cfg.width)

    def __call__(self, weights: Mapping[str, np.ndarray]) -> dict[str, float]:
        """PSNR/SSIM/loss of ``weights`` on the test set."""
        self.model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in weights.items()})
        return {k: float(v) for k, v in evaluate(self.model, self.data).items()}
