"""Noise calibration: the noise multiplier that spends a target epsilon over a planned horizon, never more.

Calibrate ONCE for the whole run (all rounds, epochs and steps) and use the same noise multiplier every round:
calibrating per round as if nothing had been spent yet overspends (Opacus's ``make_private_with_epsilon``
called every round: target 4, spent 5.12 after two rounds).
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable

from fedcompress.privacy._checks import check_number
from fedcompress.privacy.accountant import epsilon

__all__ = ["calibrate_noise"]

_TOLERANCE = 0.01  # calibrated noise lands within 1% under the target
_MAX_NOISE = 1e6
_MIN_NOISE = 1e-3


def calibrate_noise(
    target_epsilon: float, sample_rate: float, steps: int, delta: float, accountant: str = "prv"
) -> float:
    """The noise multiplier whose :func:`epsilon` is at most ``target_epsilon`` and within 1% under it.

    A bracketed secant search on :func:`epsilon` itself, so the reported epsilon never overshoots. (Opacus's
    ``get_noise_multiplier`` stops within an ABSOLUTE 0.01, is 10% under at target 0.1, defaults to RDP, and
    its own ``eps_error`` can overshoot the epsilon reported here.) Raises ``ValueError`` when no noise
    multiplier up to 1e6 reaches the target.
    """
    target_epsilon = check_number(
        "target_epsilon", target_epsilon, low=0.0, high=math.inf, low_open=True, high_open=True
    )
    if check_number("steps", steps, low=1.0, high_open=True) != int(steps):
        raise ValueError(f"steps must be a whole number >= 1, got {steps!r}")

    @functools.cache
    def spend(z: float) -> float:
        return epsilon(z, sample_rate, steps, delta, accountant)

    guess = 1.0
    if accountant == "prv":  # RDP is looser than PRV, so its answer is a cheap first guess from above
        with contextlib.suppress(ValueError):  # RDP's orders (<= 63) cannot certify very small epsilons
            guess = calibrate_noise(target_epsilon, sample_rate, steps, delta, "rdp")
    low, high = _bracket(spend, target_epsilon, guess, delta)
    goal = math.log((1.0 - _TOLERANCE / 2) * target_epsilon)
    for _ in range(60):  # invariant: spend(high) <= target < spend(low)
        if spend(high) >= (1.0 - _TOLERANCE) * target_epsilon or low <= 0.0:
            break
        # secant step on log(epsilon) against log(z), kept inside the middle 80% of the bracket
        x_low, x_high = math.log(low), math.log(high)
        f_low, f_high = math.log(spend(low)) - goal, math.log(spend(high)) - goal
        x = x_high - f_high * (x_high - x_low) / (f_high - f_low) if f_low != f_high else 0.5 * (x_low + x_high)
        x = min(max(x, x_low + 0.1 * (x_high - x_low)), x_high - 0.1 * (x_high - x_low))
        middle = math.exp(x)
        if spend(middle) <= target_epsilon:
            high = middle
        else:
            low = middle
    return high


def _bracket(spend: Callable[[float], float], target: float, guess: float, delta: float) -> tuple[float, float]:
    """``(low, high)`` with ``spend(high) <= target < spend(low)``; ``low = 0`` if even tiny noise fits."""
    high = guess
    while spend(high) > target:
        high *= 2.0
        if high > _MAX_NOISE:
            raise ValueError(
                f"target epsilon {target} is out of reach: even noise multiplier {_MAX_NOISE:g} spends more "
                f"(delta {delta})"
            )
    low = 0.8 * high  # a near bracket: small noise multipliers are the slow ones for PRV
    while spend(low) <= target:
        if low < _MIN_NOISE:
            return 0.0, low
        high, low = low, 0.8 * low
    return low, high
