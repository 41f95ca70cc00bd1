"""Central evaluation of global weights on the held-out test set (never any client's data).

Beside the test set of the run's dataset, every evaluation scores the real CT/MR patches of
:mod:`fedcompress.data.real` (keys ``real_psnr``, ``real_ssim``, ``real_psnr_noisy``) when the image size fits
them, so a phantom-trained model is also seen on real anatomy.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from fedcompress.config import RunConfig
from fedcompress.data import test_data_for
from fedcompress.data.real import real_test_data
from fedcompress.devices import resolve_device
from fedcompress.federation.records import Scores, as_scores
from fedcompress.models import build_model
from fedcompress.training import evaluate

__all__ = ["Evaluator"]


class Evaluator:
    """Builds the test set once and scores weights on it (PSNR, SSIM, MSE loss)."""

    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg
        self.data = test_data_for(cfg)
        self.real = real_test_data(
            image_size=cfg.image_size, seed=cfg.seed, num_partitions=cfg.num_clients, non_iid=cfg.non_iid
        )
        self.model = build_model(cfg.model, width=cfg.width).to(resolve_device(cfg.device))

    def __call__(self, weights: Mapping[str, np.ndarray]) -> Scores:
        """PSNR/SSIM/loss of ``weights`` on the test set, and PSNR/SSIM on the real patches (``real_*``)."""
        self.model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in weights.items()})
        scores = {k: float(v) for k, v in evaluate(self.model, self.data).items()}
        if self.real is not None:
            real = evaluate(self.model, self.real)
            scores |= {f"real_{k}": float(real[k]) for k in ("psnr", "ssim", "psnr_noisy")}
        return as_scores(scores)
