"""What stands between a lying client and the global model: weights the server knows, a norm guard, an aggregator.

- Weights: a client's claimed ``num-examples`` is capped at the public ``samples-per-client`` (and unweighted
  when nothing is claimed, as with ``release = "minimal"``), so one claim of 1e30 weighs like an honest site.
- :class:`UpdateGuard`: a decoded update whose L2 norm passes the round's bound (``guard-norm``, or
  ``guard-median-factor`` x the median norm of the round's updates) is rejected or clipped (``guard``), and named
  in the round's row (Sun et al. 2019, https://arxiv.org/abs/1911.07963: norm bounding stops scaling attacks).
- Aggregators (``aggregation``): ``mean`` (weighted FedAvg), ``trimmed-mean`` (coordinate-wise, dropping
  ``trim-fraction`` of the values at each end) and ``median`` (coordinate-wise; Yin et al. 2018,
  https://arxiv.org/abs/1803.01498), and ``norm-clip`` (every update clipped to the round's median norm, then the
  weighted mean). Central client-level DP replaces the aggregation with its own clip, sum and noise: it composes
  with none of these (and a guard relative to other clients' norms would change its sensitivity), so the
  configuration refuses them there.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from fedcompress.config import RunConfig
from fedcompress.privacy.clipping import clip_update
from fedcompress.tensors import flatten, global_norm, unflatten, weighted_mean

__all__ = ["AGGREGATORS", "Aggregator", "GuardVerdicts", "UpdateGuard", "build_aggregator", "capped_weight"]

Update = Mapping[str, np.ndarray]
#: updates, weights -> the round's delta
Aggregator = Callable[[Sequence[Update], Sequence[float]], dict[str, np.ndarray]]


def capped_weight(claimed: float | int | None, cap: int) -> float:
    """A FedAvg weight the server can stand behind: the claim clipped to [1, cap], or 1 when nothing usable."""
    if claimed is None or isinstance(claimed, bool) or not math.isfinite(float(claimed)):
        return 1.0
    return float(min(max(float(claimed), 1.0), cap))


@dataclasses.dataclass(frozen=True)
class GuardVerdicts:
    """What the guard did in one round: the bound and, per partition, what happened to its update."""

    bound: float
    verdicts: dict[int, str]


@dataclasses.dataclass(frozen=True)
class UpdateGuard:
    """Reject or clip updates whose norm passes the round's bound.

    Parameters
    ----------
    mode : str
        ``"reject"``, ``"clip"`` or ``"off"``.
    absolute : float
        A fixed bound (> 0), or 0 for ``median_factor`` x the median norm of the round.
    median_factor : float
        The relative bound's factor (> 1): honest updates of one round have norms within a small factor.
    """

    mode: str = "reject"
    absolute: float = 0.0
    median_factor: float = 4.0

    def bound(self, norms: Sequence[float]) -> float:
        """The round's bound (infinite with no finite norm)."""
        if self.absolute > 0:
            return self.absolute
        finite = [n for n in norms if math.isfinite(n)]
        return self.median_factor * float(np.median(finite)) if finite else math.inf

    def apply(
        self, updates: Sequence[tuple[int, Update, float]]
    ) -> tuple[list[tuple[int, dict[str, np.ndarray], float]], GuardVerdicts]:
        """The updates that may be aggregated (clipped ones replaced) and the verdicts; inputs are not modified."""
        norms = [global_norm(update) for _, update, _ in updates]
        bound = self.bound(norms) if self.mode != "off" else math.inf
        kept: list[tuple[int, dict[str, np.ndarray], float]] = []
        verdicts: dict[int, str] = {}
        for (partition, update, weight), norm in zip(updates, norms, strict=True):
            if not math.isfinite(norm):
                verdicts[partition] = "rejected: update norm is not finite"
            elif norm <= bound:
                kept.append((partition, dict(update), weight))
            elif self.mode == "reject":
                verdicts[partition] = f"rejected: update norm {norm:.4g} > bound {bound:.4g}"
            else:
                kept.append((partition, clip_update(update, bound)[0], weight))
                verdicts[partition] = f"clipped: update norm {norm:.4g} > bound {bound:.4g}"
        return kept, GuardVerdicts(bound=bound, verdicts=verdicts)


def _coordinate_wise(updates: Sequence[Update], reduce: Callable[[np.ndarray], np.ndarray]) -> dict[str, np.ndarray]:
    flat = np.stack([flatten(update)[0].astype(np.float64) for update in updates])
    _, layout = flatten(updates[0])
    return unflatten(reduce(flat).astype(np.float32), layout)


def _trimmed_mean(fraction: float) -> Aggregator:
    def aggregate(updates: Sequence[Update], weights: Sequence[float]) -> dict[str, np.ndarray]:
        cut = math.floor(fraction * len(updates))

        def reduce(flat: np.ndarray) -> np.ndarray:
            ordered = np.sort(flat, axis=0)
            return ordered[cut : len(updates) - cut].mean(axis=0)

        return _coordinate_wise(updates, reduce)

    return aggregate


def _median(updates: Sequence[Update], weights: Sequence[float]) -> dict[str, np.ndarray]:
    return _coordinate_wise(updates, lambda flat: np.median(flat, axis=0))


def _norm_clip(updates: Sequence[Update], weights: Sequence[float]) -> dict[str, np.ndarray]:
    bound = float(np.median([global_norm(update) for update in updates]))
    clipped = [clip_update(update, bound)[0] if bound > 0 else dict(update) for update in updates]
    return weighted_mean(clipped, weights)


AGGREGATORS: tuple[str, ...] = ("mean", "trimmed-mean", "median", "norm-clip")


def build_aggregator(cfg: RunConfig) -> Aggregator:
    """The aggregator ``cfg`` names (``aggregation``, ``trim-fraction``)."""
    if cfg.aggregation == "trimmed-mean":
        return _trimmed_mean(cfg.trim_fraction)
    return {"mean": weighted_mean, "median": _median, "norm-clip": _norm_clip}[cfg.aggregation]
