"""Where models train and evaluate: the ``device`` setting (``auto`` | ``cpu`` | ``cuda``).

``auto`` takes CUDA when this process sees a CUDA device, else the CPU. Under Flower's simulation engine a
client sees a GPU only when it is given one (``fedcompress simulate --gpus-per-client F``; Ray hides GPUs from
actors that asked for none), so ``auto`` trains clients on the CPU unless they get GPU resources.
"""

from __future__ import annotations

import torch

from fedcompress.errors import RunError

__all__ = ["DEVICES", "resolve_device"]

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str) -> torch.device:
    """The torch device for a ``device`` setting; ``RunError`` for ``cuda`` where no CUDA device is visible."""
    if name not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {name!r}")
    if name == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda")
    if name == "cuda":
        raise RunError(
            "device='cuda' but this process sees no CUDA device; use device='auto' or 'cpu', or under the "
            "simulation engine give each client a GPU share (fedcompress simulate --gpus-per-client 0.5)"
        )
    return torch.device("cpu")
