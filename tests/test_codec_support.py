"""Shared fixtures for the codec tests (no tests here): small realistic-looking updates and spec lists."""

from __future__ import annotations

import numpy as np

from fedcompress.codec import PRESETS

#: One spec per stage variant and a few combinations, beside every preset.
LOSSY_SPECS = (
    "lowrank:2",
    "lowrank:3:svd",
    "topk:0.1",
    "randk:0.25",
    "q:1",
    "q:3:block=17",
    "q:4",
    "q:16:block=5",
    "q:8:range=0.5",
    "lowrank:2+topk:0.3+q:4:block=64+zstd:1",
    "randk:0.5+q:2:range=1",
    "rotate:64+q:4",
    "rotate+sign",
    "rotate:256+randk:0.1+sign",
    "rotate:16+randk:0.5+sign:scale=unbiased",
    "sign:scale=unbiased",
    "lowrank:2+rotate:32+topk:0.2+sign+zstd:1",
    "rotate:8+randk:0.3+q:8:range=2",
)
ALL_SPECS = (*PRESETS, *LOSSY_SPECS)


def sample_update(seed: int = 0, *, scale: float = 1.0) -> dict[str, np.ndarray]:
    """A small model-like update: conv kernels, a linear layer, biases, norms, a scalar, an empty tensor."""
    rng = np.random.default_rng(seed)

    def low_rank(rows: int, cols: int) -> np.ndarray:  # rank 2 plus some noise, like real deltas
        base = rng.standard_normal((rows, 2)) @ rng.standard_normal((2, cols))
        return (base + 0.1 * rng.standard_normal((rows, cols))).astype(np.float32)

    update = {
        "enc.conv.weight": low_rank(16, 27).reshape(16, 3, 3, 3),
        "enc.conv.bias": rng.standard_normal(16),
        "enc.norm.weight": 1 + 0.1 * rng.standard_normal(16),
        "mid.conv.weight": low_rank(32, 144).reshape(32, 16, 3, 3),
        "head.weight": low_rank(10, 32),
        "head.bias": rng.standard_normal(10),
        "step": np.array(3.0),
        "empty": np.zeros((0, 4)),
    }
    return {name: (scale * np.asarray(value)).astype(np.float32) for name, value in update.items()}


def as_float64(update: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The same update in float64."""
    return {name: np.asarray(value, dtype=np.float64) for name, value in update.items()}
