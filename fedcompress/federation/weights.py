"""Model weights as plain named arrays: the initial model, safe files, and atomic writes.

Weights cross process boundaries as ``dict[str, numpy.ndarray]``. Files are ``torch.save`` of tensors only and
are read with ``weights_only=True``; nothing else is ever unpickled.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from fedcompress.config import RunConfig
from fedcompress.files import atomic_write_bytes, atomic_write_json  # noqa: F401 (old import path, kept for now)
from fedcompress.models import build_model
from fedcompress.seeding import derive_seed

__all__ = ["initial_weights", "load_arrays", "save_arrays"]


def initial_weights(cfg: RunConfig) -> dict[str, np.ndarray]:
    """The round-0 global model, identical in every process that has the same config (seeded init)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(cfg.seed, "init"))
        model = build_model(cfg.model, width=cfg.width)
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def save_arrays(path: str | Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Save named arrays as a tensors-only torch file, atomically."""
    buffer = io.BytesIO()
    torch.save({k: torch.from_numpy(np.array(v, order="C")) for k, v in arrays.items()}, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_arrays(path: str | Path) -> dict[str, np.ndarray]:
    """Load a file written by ``save_arrays`` (``weights_only=True``: no code is unpickled)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a corrupt or foreign file
        raise ValueError(f"cannot read weights file {path}: {e}") from e
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise ValueError(f"weights file {path} does not hold a mapping of name -> tensor")
    return {str(k): v.numpy().copy() for k, v in data.items()}
