"""Pure helpers on updates: ordered mappings ``name -> array``. Shared by the codec, privacy and server code."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["Layout", "check_finite", "flatten", "global_norm", "to_numpy_update", "unflatten", "weighted_mean"]

# (name, shape) per tensor, in order: enough to rebuild a mapping from a flat vector.
Layout = list[tuple[str, tuple[int, ...]]]


def to_numpy_update(update: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Copy an update of torch tensors or arrays into float32 numpy arrays, keeping names and order."""
    out: dict[str, np.ndarray] = {}
    for name, value in update.items():
        if hasattr(value, "detach"):  # torch.Tensor without importing torch here
            value = value.detach().cpu().numpy()
        array = np.asarray(value)
        if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
            raise ValueError(f"update[{name!r}] has dtype {array.dtype}; expected a real number type")
        out[str(name)] = np.array(array, dtype=np.float32, copy=True)
    return out


def flatten(update: Mapping[str, np.ndarray]) -> tuple[np.ndarray, Layout]:
    """Concatenate an update into one float32 vector and return the layout to undo it."""
    layout: Layout = [(name, tuple(np.shape(v))) for name, v in update.items()]
    parts = [np.asarray(v, dtype=np.float32).ravel() for v in update.values()]
    vector = np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
    return vector, layout


def unflatten(vector: np.ndarray, layout: Layout) -> dict[str, np.ndarray]:
    """Split a flat vector back into named arrays of the given shapes (copies, float32)."""
    sizes = [int(np.prod(shape, dtype=np.int64)) for _, shape in layout]
    if int(vector.size) != sum(sizes):
        raise ValueError(f"vector has {vector.size} values but the layout needs {sum(sizes)}")
    out: dict[str, np.ndarray] = {}
    offset = 0
    for (name, shape), size in zip(layout, sizes, strict=True):
        out[name] = np.array(vector[offset : offset + size], dtype=np.float32).reshape(shape)
        offset += size
    return out


def global_norm(update: Mapping[str, np.ndarray]) -> float:
    """L2 norm of the whole update as one vector, computed in float64."""
    return float(np.sqrt(sum(float(np.sum(np.square(v, dtype=np.float64))) for v in update.values())))


def check_finite(update: Mapping[str, np.ndarray], what: str = "update") -> None:
    """Raise ``ValueError`` naming the first tensor that holds NaN or Inf."""
    for name, value in update.items():
        if not np.all(np.isfinite(value)):
            raise ValueError(f"{what}[{name!r}] contains NaN or Inf")


def weighted_mean(updates: Sequence[Mapping[str, np.ndarray]], weights: Sequence[float]) -> dict[str, np.ndarray]:
    """The float32 mean of same-shaped updates weighted by ``weights`` (positive; summed in float64, in order)."""
    if not updates or len(updates) != len(weights):
        raise ValueError(f"need as many weights as updates (at least one), got {len(weights)} and {len(updates)}")
    share = np.asarray(weights, dtype=np.float64)
    share = share / share.sum()
    return {
        name: sum(w * u[name].astype(np.float64) for w, u in zip(share, updates, strict=True)).astype(np.float32)
        for name in updates[0]
    }
