"""The denoising task's data: pairs of noisy inputs and clean targets."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch.utils.data import TensorDataset

__all__ = ["DenoisingSet"]


@dataclasses.dataclass(frozen=True)
class DenoisingSet:
    """Noisy inputs and their clean targets, float32 ``[n, C, H, W]`` in ``[0, 1]``.

    The arrays are made read-only on construction, so a set shared by several callers cannot be changed by one
    of them; ``as_tensor_dataset`` hands out copies.
    """

    noisy: np.ndarray
    clean: np.ndarray

    def __post_init__(self) -> None:
        for name in ("noisy", "clean"):
            array = getattr(self, name)
            if not isinstance(array, np.ndarray) or array.dtype != np.float32 or array.ndim != 4:
                raise ValueError(
                    f"DenoisingSet.{name} must be a float32 numpy array [n, C, H, W], got "
                    f"{type(array).__name__} {getattr(array, 'dtype', '')} {getattr(array, 'shape', '')}"
                )
        if self.noisy.shape != self.clean.shape:
            raise ValueError(f"noisy {self.noisy.shape} and clean {self.clean.shape} must have the same shape")
        self.noisy.setflags(write=False)
        self.clean.setflags(write=False)

    def __len__(self) -> int:
        return int(self.noisy.shape[0])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        c, h, w = self.noisy.shape[1:]
        return int(c), int(h), int(w)

    def as_tensor_dataset(self) -> TensorDataset:
        """A torch ``TensorDataset(noisy, clean)`` holding copies of the arrays."""
        return TensorDataset(torch.tensor(self.noisy), torch.tensor(self.clean))
