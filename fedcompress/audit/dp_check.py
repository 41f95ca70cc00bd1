"""An empirical check of the client-level Gaussian mechanism as deployed: a statistical lower bound on its epsilon.

The mechanism is the one clients run, randomness included (:func:`fedcompress.audit.dp_mechanisms.
local_noise_mechanism`: ``LocalNoiseClient.privatise``, which clips and adds noise from a fresh secret ChaCha20
generator per release, then the codec, then the server's :func:`fedcompress.codec.decode`). Two neighbouring
inputs, under the add/remove adjacency the accountant assumes: the client's update ``u`` (norm ``input_norm`` >=
C) present, or absent (a zero update). Each is released many times; an adversary may transform each release
first (for example subtract noise it regenerated from public values); a threshold test on one statistic, the
projection on ``u / ||u||``, tries to tell the inputs apart.

For any threshold, an (epsilon, delta)-DP mechanism bounds the test's error rates (Kairouz et al. 2015):
``FPR + e^eps FNR >= 1 - delta`` and ``FNR + e^eps FPR >= 1 - delta``, so

    eps >= max( ln((1 - delta - FNR) / FPR), ln((1 - delta - FPR) / FNR) ).

Following Jagielski et al. 2020 (https://arxiv.org/abs/2006.07709) and Nasr et al. 2021
(https://arxiv.org/abs/2101.04535), FPR and FNR are replaced by one-sided Clopper-Pearson upper bounds,
each at confidence ``1 - alpha/2``, so the lower bound holds with probability at least
``confidence = 1 - alpha``. The threshold is chosen on ``selection_trials`` releases per input (the middle of the
best plateau) and the bound computed on ``trials`` OTHER releases per input, so picking the best threshold does
not spend the confidence. With no error at all in ``n`` held-out releases the bound is ``ln((1 - delta - p) / p)``
with ``p = 1 - (alpha/2)^(1/n)``: ``n = 12,000`` certifies up to 8.09 at 95% (2,000 capped it at 6.3). The bound
must never exceed the accountant's epsilon for the same parameters (one release, sample rate 1); when it does,
the mechanism is less private than it claims.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from scipy import stats

from fedcompress.seeding import numpy_rng
from fedcompress.tensors import flatten, unflatten

__all__ = [
    "DEFAULT_LAYOUT",
    "Adversary",
    "DPCheckResult",
    "Mechanism",
    "check_client_level_dp",
    "clopper_pearson_upper",
    "epsilon_lower_bound",
]

#: A release: update in, released (decoded) update out; the mechanism owns its randomness, as deployed.
Mechanism = Callable[[Mapping[str, np.ndarray]], Mapping[str, np.ndarray]]
#: What the adversary computes from a release before the test (default: the release itself).
Adversary = Callable[[Mapping[str, np.ndarray]], Mapping[str, np.ndarray]]

#: The update checked: small, so that a release costs little and tens of thousands are affordable.
DEFAULT_LAYOUT: Mapping[str, tuple[int, ...]] = {"layer.weight": (16, 16), "layer.bias": (16,)}


@dataclasses.dataclass(frozen=True)
class DPCheckResult:
    """The audit's verdict: ``epsilon_lower_bound`` against the accountant's ``epsilon`` for one release."""

    epsilon_lower_bound: float
    epsilon: float
    passed: bool
    delta: float
    confidence: float
    trials: int
    selection_trials: int
    threshold: float
    false_positive_rate: float
    false_negative_rate: float
    noise_multiplier: float
    clip_norm: float
    input_norm: float
    codec: str
    accountant: str
    seconds: float

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


def check_client_level_dp(
    *,
    clip_norm: float,
    noise_multiplier: float,
    codec: str = "none",
    mechanism: Mechanism | None = None,
    adversary: Adversary | None = None,
    layout: Mapping[str, tuple[int, ...]] | None = None,
    input_norm: float | None = None,
    trials: int = 12_000,
    selection_trials: int = 1_000,
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
        The release to audit; default the deployed one,
        :func:`fedcompress.audit.dp_mechanisms.local_noise_mechanism` with the parameters above and secret
        randomness. Pass a deliberately broken one to see the check flag it.
    adversary : Adversary | None
        Applied to each release, once per release and in order, before the statistic (default none: the release
        itself). A stateful one (it follows the rounds) must be fresh for each check.
    layout : Mapping[str, tuple[int, ...]] | None
        Names and shapes of the update; default :data:`DEFAULT_LAYOUT` (272 values).
    input_norm : float | None
        L2 norm of the present client's update (default ``2 * clip_norm``; at least ``clip_norm``).
    trials : int
        Held-out releases per input that the bound is computed on (default 12,000: certifies up to 8.09).
    selection_trials : int
        Further releases per input that choose the threshold (default 1,000).
    delta, confidence : float
        The delta of the comparison (default 1e-5) and the bound's confidence (default 0.95).
    accountant : str
        Accountant of the claimed epsilon (default ``"prv"``).
    seed : int
        Seeds the update's direction only (the mechanism owns its randomness). Default 0.
    """
    from fedcompress.audit.dp_mechanisms import local_noise_mechanism  # it builds on this module's types
    from fedcompress.privacy import epsilon

    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    for name, value in (("trials", trials), ("selection_trials", selection_trials)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 10:
            raise ValueError(f"{name} must be an int >= 10, got {value!r}")
    input_norm = 2.0 * clip_norm if input_norm is None else float(input_norm)
    if not input_norm >= clip_norm:
        raise ValueError(f"input_norm must be >= clip_norm ({clip_norm}), got {input_norm!r}")
    started = time.perf_counter()
    release = mechanism or local_noise_mechanism(
        clip_norm=clip_norm, noise_multiplier=noise_multiplier, codec=codec, seed=seed
    )
    present, direction = _neighbour(layout or DEFAULT_LAYOUT, input_norm, seed)
    absent = {name: np.zeros_like(value) for name, value in present.items()}
    total = selection_trials + trials
    negatives = _statistics(release, adversary, absent, direction, total)
    positives = _statistics(release, adversary, present, direction, total)
    threshold = _choose_threshold(negatives[:selection_trials], positives[:selection_trials], delta, 1 - confidence)
    test_n, test_p = negatives[selection_trials:], positives[selection_trials:]
    false_positives, false_negatives = int(np.sum(test_n > threshold)), int(np.sum(test_p <= threshold))
    bound = float(
        epsilon_lower_bound(false_positives, trials, false_negatives, trials, delta=delta, alpha=1 - confidence)
    )
    claimed = epsilon(noise_multiplier, 1.0, 1, delta, accountant=accountant) if noise_multiplier > 0 else math.inf
    return DPCheckResult(
        epsilon_lower_bound=bound,
        epsilon=float(claimed),
        passed=bound <= claimed,
        delta=delta,
        confidence=confidence,
        trials=trials,
        selection_trials=selection_trials,
        threshold=threshold,
        false_positive_rate=false_positives / trials,
        false_negative_rate=false_negatives / trials,
        noise_multiplier=float(noise_multiplier),
        clip_norm=float(clip_norm),
        input_norm=input_norm,
        codec=codec,
        accountant=accountant,
        seconds=time.perf_counter() - started,
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
    adversary: Adversary | None,
    update: Mapping[str, np.ndarray],
    direction: np.ndarray,
    trials: int,
) -> np.ndarray:
    """Projection of each of ``trials`` releases of ``update`` (after the adversary) on ``direction`` (float64)."""
    rows = np.empty((trials, direction.size))
    for i in range(trials):
        released = release(update)
        rows[i], _ = flatten(adversary(released) if adversary else released)
    return rows @ direction


def _choose_threshold(negatives: np.ndarray, positives: np.ndarray, delta: float, alpha: float) -> float:
    """The threshold whose bound on these releases is largest: the middle of the best plateau.

    Candidates lie halfway between consecutive observed values; among those that tie for the best bound, the
    midpoint of the first and the last, so a perfectly separating test lands in the middle of the gap.
    """
    values = np.unique(np.concatenate([negatives, positives]))
    candidates = 0.5 * (values[1:] + values[:-1]) if values.size > 1 else values
    neg, pos = np.sort(negatives), np.sort(positives)
    false_positives = len(neg) - np.searchsorted(neg, candidates, side="right")  # "present" when above
    false_negatives = np.searchsorted(pos, candidates, side="right")
    bounds = np.asarray(
        epsilon_lower_bound(false_positives, len(neg), false_negatives, len(pos), delta=delta, alpha=alpha)
    )
    best = np.flatnonzero(bounds >= bounds.max() - 1e-12)
    return float(0.5 * (candidates[best[0]] + candidates[best[-1]]))
