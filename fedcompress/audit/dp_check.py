"""An empirical check of the client-level Gaussian mechanism: a statistical lower bound on its epsilon.

The mechanism is the one clients run (:func:`fedcompress.privacy.clip_and_noise`, then the codec, then the
server's :func:`fedcompress.codec.decode`). Two neighbouring inputs, under the add/remove adjacency the
accountant assumes: the client's update ``u`` (norm ``input_norm`` >= C) present, or absent (a zero update).
Each is released ``trials`` times with fresh noise; a threshold test on one statistic, the projection of the
release on ``u / ||u||``, tries to tell them apart.

For any threshold, an (epsilon, delta)-DP mechanism bounds the test's error rates (Kairouz et al. 2015):
``FPR + e^eps FNR >= 1 - delta`` and ``FNR + e^eps FPR >= 1 - delta``, so

    eps >= max( ln((1 - delta - FNR) / FPR), ln((1 - delta - FPR) / FNR) ).

Following Jagielski et al. 2020 (https://arxiv.org/abs/2006.07709) and Nasr et al. 2021
(https://arxiv.org/abs/2101.04535), FPR and FNR are replaced by one-sided Clopper-Pearson upper bounds,
each at confidence ``1 - alpha/2``, so the lower bound holds with probability at least
``confidence = 1 - alpha``.
The threshold is chosen on one half of the trials and the bound computed on the other half, so picking the
best threshold does not spend the confidence. The bound must never exceed the accountant's epsilon for the
same parameters (one release, sample rate 1); when it does, the mechanism adds less noise than it claims.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from scipy import stats

from fedcompress.codec import decode, encode
from fedcompress.seeding import derive_seed, numpy_rng
from fedcompress.tensors import flatten, unflatten

__all__ = [
    "DPCheckResult",
    "Mechanism",
    "check_client_level_dp",
    "client_level_mechanism",
    "clopper_pearson_upper",
    "epsilon_lower_bound",
]

#: A release: update in, released (decoded) update out, all randomness from the generator.
Mechanism = Callable[[Mapping[str, np.ndarray], np.random.Generator], Mapping[str, np.ndarray]]


@dataclasses.dataclass(frozen=True)
class DPCheckResult:
    """The audit's verdict: ``epsilon_lower_bound`` against the accountant's ``epsilon`` for one release."""

    epsilon_lower_bound: float
    epsilon: float
    passed: bool
    delta: float
    confidence: float
    trials: int
    threshold: float
    false_positive_rate: float
    false_negative_rate: float
    noise_multiplier: float
    clip_norm: float
    input_norm: float
    codec: str
    accountant: str

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON fields, with ``sample_rate`` 1 and ``steps`` 1 (one release) stated."""
        return {**dataclasses.asdict(self), "sample_rate": 1.0, "steps": 1, "level": "client"}


def clopper_pearson_upper(successes: Any, trials: int, alpha: float) -> Any:
    """One-sided ``1 - alpha`` Clopper-Pearson upper bound on a binomial proportion (1 when all succeed).

    ``successes`` may be an int or an integer array (the result then has its shape).
    """
    k = np.asarray(successes)
    if trials < 1 or np.any(k < 0) or np.any(k > trials):
        raise ValueError(f"need 0 <= successes <= trials and trials >= 1, got {successes} of {trials}")
    with np.errstate(invalid="ignore"):
        upper = stats.beta.ppf(1.0 - alpha, k + 1, np.maximum(trials - k, 1))
    upper = np.where(k == trials, 1.0, upper)
    return float(upper) if upper.ndim == 0 else upper


def epsilon_lower_bound(
    false_positives: Any, negatives: int, false_negatives: Any, positives: int, *, delta: float, alpha: float
) -> Any:
    """Lower bound on epsilon from a threshold test's error counts, holding with probability ``1 - alpha``.

    Counts may be ints or arrays of one shape (one bound per threshold).
    """
    fpr = np.asarray(clopper_pearson_upper(false_positives, negatives, alpha / 2))
    fnr = np.asarray(clopper_pearson_upper(false_negatives, positives, alpha / 2))
    with np.errstate(divide="ignore", invalid="ignore"):
        first = np.where((1 - delta - fnr > 0) & (fpr > 0), np.log((1 - delta - fnr) / fpr), 0.0)
        second = np.where((1 - delta - fpr > 0) & (fnr > 0), np.log((1 - delta - fpr) / fnr), 0.0)
    bound = np.maximum(np.maximum(first, second), 0.0)
    return float(bound) if bound.ndim == 0 else bound


def client_level_mechanism(
    *, clip_norm: float, noise_multiplier: float, codec: str = "none", seed: int = 0
) -> Mechanism:
    """Client-level DP as a client runs it: ``clip_and_noise`` then ``encode``; the server's ``decode``."""
    from fedcompress.privacy import clip_and_noise

    counter = iter(range(1 << 62))

    def release(update: Mapping[str, np.ndarray], generator: np.random.Generator) -> Mapping[str, np.ndarray]:
        noised, _ = clip_and_noise(update, clip_norm=clip_norm, noise_multiplier=noise_multiplier, generator=generator)
        return decode(encode(noised, codec, seed=derive_seed(seed, "dp-check-codec", next(counter))))

    return release


def check_client_level_dp(
    *,
    clip_norm: float,
    noise_multiplier: float,
    codec: str = "none",
    mechanism: Mechanism | None = None,
    layout: Mapping[str, tuple[int, ...]] | None = None,
    input_norm: float | None = None,
    trials: int = 4000,
    delta: float = 1e-5,
    confidence: float = 0.95,
    accountant: str = "prv",
    seed: int = 0,
) -> DPCheckResult:
    """Audit a client-level Gaussian mechanism and compare with the accountant's epsilon for one release.

    Parameters
    ----------
    clip_norm, noise_multiplier : float
        C and z that the mechanism CLAIMS (the accountant's epsilon is computed from them).
    codec : str
        Codec applied after the noise (post-processing: it can only lower the bound). Default ``"none"``.
    mechanism : Mechanism | None
        The release to audit; default :func:`client_level_mechanism` with the parameters above. Pass a
        deliberately broken one to see the check flag it.
    layout : Mapping[str, tuple[int, ...]] | None
        Names and shapes of the update; default one 1024-value matrix and a 32-value vector.
    input_norm : float | None
        L2 norm of the present client's update (default ``2 * clip_norm``; at least ``clip_norm``).
    trials : int
        Releases per input (default 4000; half choose the threshold, half bound the rates).
    delta, confidence : float
        The delta of the comparison (default 1e-5) and the bound's confidence (default 0.95).
    accountant : str
        Accountant of the claimed epsilon (default ``"prv"``).
    seed : int
        Seeds the update's direction, the noise and the codec (default 0).
    """
    from fedcompress.privacy import epsilon

    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 20:
        raise ValueError(f"trials must be an int >= 20, got {trials!r}")
    input_norm = 2.0 * clip_norm if input_norm is None else float(input_norm)
    if not input_norm >= clip_norm:
        raise ValueError(f"input_norm must be >= clip_norm ({clip_norm}), got {input_norm!r}")
    release = mechanism or client_level_mechanism(
        clip_norm=clip_norm, noise_multiplier=noise_multiplier, codec=codec, seed=seed
    )
    present, direction = _neighbour(layout or {"layer.weight": (32, 32), "layer.bias": (32,)}, input_norm, seed)
    absent = {name: np.zeros_like(value) for name, value in present.items()}
    rng = numpy_rng(seed, "dp-check-noise")
    negatives = _statistics(release, absent, direction, trials, rng)
    positives = _statistics(release, present, direction, trials, rng)
    bound, threshold, fpr, fnr = _held_out_bound(negatives, positives, delta, 1.0 - confidence)
    claimed = epsilon(noise_multiplier, 1.0, 1, delta, accountant=accountant) if noise_multiplier > 0 else math.inf
    return DPCheckResult(
        epsilon_lower_bound=bound,
        epsilon=float(claimed),
        passed=bound <= claimed,
        delta=delta,
        confidence=confidence,
        trials=trials,
        threshold=threshold,
        false_positive_rate=fpr,
        false_negative_rate=fnr,
        noise_multiplier=float(noise_multiplier),
        clip_norm=float(clip_norm),
        input_norm=input_norm,
        codec=codec,
        accountant=accountant,
    )


def _neighbour(
    layout: Mapping[str, tuple[int, ...]], norm: float, seed: int
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """A random update of L2 norm ``norm`` in ``layout``, and its flat unit direction."""
    zeros = {name: np.zeros(shape, dtype=np.float32) for name, shape in layout.items()}
    flat, shapes = flatten(zeros)
    direction = numpy_rng(seed, "dp-check-direction").standard_normal(flat.size)
    direction /= np.linalg.norm(direction)
    return unflatten((direction * norm).astype(np.float32), shapes), direction


def _statistics(
    release: Mechanism,
    update: Mapping[str, np.ndarray],
    direction: np.ndarray,
    trials: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Projection of each of ``trials`` releases of ``update`` on ``direction`` (float64)."""
    out = np.empty(trials)
    for i in range(trials):
        released, _ = flatten(release(update, rng))
        out[i] = float(np.dot(released.astype(np.float64), direction))
    return out


def _held_out_bound(
    negatives: np.ndarray, positives: np.ndarray, delta: float, alpha: float
) -> tuple[float, float, float, float]:
    """Choose the threshold on the first halves, bound epsilon on the second; (bound, threshold, FPR, FNR)."""
    half_n, half_p = len(negatives) // 2, len(positives) // 2
    pick_n, pick_p = negatives[:half_n], positives[:half_p]
    test_n, test_p = negatives[half_n:], positives[half_p:]
    candidates = np.unique(np.concatenate([pick_n, pick_p]))

    def bound(thresholds: np.ndarray, neg: np.ndarray, pos: np.ndarray) -> np.ndarray:
        # "present" when the statistic exceeds the threshold
        neg, pos = np.sort(neg), np.sort(pos)
        false_positives = len(neg) - np.searchsorted(neg, thresholds, side="right")
        false_negatives = np.searchsorted(pos, thresholds, side="right")
        return np.asarray(
            epsilon_lower_bound(false_positives, len(neg), false_negatives, len(pos), delta=delta, alpha=alpha)
        )

    threshold = float(candidates[int(np.argmax(bound(candidates, pick_n, pick_p)))])
    fpr = float(np.mean(test_n > threshold))
    fnr = float(np.mean(test_p <= threshold))
    return float(bound(np.array([threshold]), test_n, test_p)[0]), threshold, fpr, fnr
