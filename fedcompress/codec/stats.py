"""What an encode cost and lost: payload size, ratio, error, and each stage's own measurements.

Measurements are returned beside the payload (as TensorFlow Federated's aggregators report theirs), never
mixed into the codec state.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["EncodeStats", "Meter"]


@dataclass(frozen=True)
class EncodeStats:
    """One encode's numbers.

    Attributes
    ----------
    spec : str
        Canonical spec of the codec.
    dense_bytes : int
        Size of the same update as dense float32 (4 bytes per value).
    payload_bytes : int
        ``len(payload)``: exactly what is sent.
    ratio : float
        ``dense_bytes / payload_bytes``.
    rel_l2_error : float
        ``||decoded - x|| / ||x||`` with ``x`` what was compressed (the update plus the error-feedback
        residual when a state is used). For an all-zero ``x``: 0 if decoded exactly, else ``inf``.
    stages : dict
        Per stage (keyed by its canonical spec, plus ``"format"`` for header and table bytes): counts, bytes
        and the stage's own relative L2 error on its input.
    """

    spec: str
    dense_bytes: int
    payload_bytes: int
    ratio: float
    rel_l2_error: float
    stages: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of numbers and strings (a deep copy); an infinite error dumps as JSON ``Infinity``."""
        return asdict(self)


class Meter:
    """Accumulates per-stage counters and squared errors during one encode."""

    def __init__(self) -> None:
        self._counts: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        self._errors: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])

    def add(self, stage: str, **counts: float) -> None:
        """Add to the named counters of ``stage``."""
        bucket = self._counts[stage]
        for key, value in counts.items():
            bucket[key] += value

    def error(self, stage: str, error_sq: float, reference_sq: float) -> None:
        """Add a squared error and the squared norm of the input it is relative to."""
        totals = self._errors[stage]
        totals[0] += error_sq
        totals[1] += reference_sq

    def result(self) -> dict[str, dict[str, float]]:
        """Counters per stage, with ``rel_l2_error`` where errors were recorded."""
        out = {stage: dict(counts) for stage, counts in self._counts.items()}
        for stage, (error_sq, reference_sq) in self._errors.items():
            out.setdefault(stage, {})["rel_l2_error"] = relative_error(error_sq, reference_sq)
        return out


def relative_error(error_sq: float, reference_sq: float) -> float:
    """``sqrt(error_sq / reference_sq)``, 0 when both are 0 and inf when only the reference is."""
    if reference_sq > 0:
        return math.sqrt(max(error_sq, 0.0) / reference_sq)
    return 0.0 if error_sq <= 0 else math.inf
