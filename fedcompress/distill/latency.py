"""CPU latency per image at batch 1: every candidate measured in the same process, interleaved.

Each repeat runs every candidate once, in an order rotated by one each repeat, so a slow stretch of a busy
machine (other jobs, frequency changes) hits all candidates alike instead of whichever ran then. Torch and
onnxruntime each use one intra-op thread (``torch.set_num_threads(1)`` for the duration, then restored; the
sessions are built with one thread). Reported: median, 10th and 90th percentile, in milliseconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

__all__ = ["measure_latency"]


def measure_latency(
    candidates: Mapping[str, Callable[[Any], Any]],
    example: Any,
    *,
    repeats: int = 200,
    warmup: int = 10,
) -> dict[str, dict[str, float]]:
    """Median / p10 / p90 milliseconds of one call of each candidate on ``example`` (batch 1, one thread).

    ``example`` is passed as it is: a tensor for PyTorch modules, an array for onnxruntime sessions.
    """
    if not candidates:
        raise ValueError("candidates is empty: nothing to time")
    if not isinstance(repeats, int) or repeats < 1 or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got {repeats!r} and {warmup!r}")
    names = list(candidates)
    samples: dict[str, list[float]] = {name: [] for name in names}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.inference_mode():
            for name in names:
                for _ in range(warmup):
                    candidates[name](example)
            for r in range(repeats):
                for name in names[r % len(names) :] + names[: r % len(names)]:
                    start = time.perf_counter()
                    candidates[name](example)
                    samples[name].append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)
    return {
        name: {
            "median_ms": float(np.median(values) * 1e3),
            "p10_ms": float(np.percentile(values, 10) * 1e3),
            "p90_ms": float(np.percentile(values, 90) * 1e3),
            "runs": len(values),
        }
        for name, values in samples.items()
    }
