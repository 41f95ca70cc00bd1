"""One-sided accounting checks: the epsilon we report is never below the truth, and calibration never overshoots.

The reference is Google's dp-accounting PLD accountant (add-or-remove-one neighbours, both directions), whose
``PLDAccountant`` always rounds pessimistically: its epsilon is an upper bound on the true epsilon of the
Poisson-subsampled Gaussian mechanism. Against an upper bound a one-sided check is strict in the direction that
matters: if we under-reported the true epsilon by more than 0.1%, we would be more than 0.1% below this reference
too, however coarse its grid. A coarse grid can only fail us falsely, never pass us falsely; with
``value_discretization_interval=1e-4`` it is within 0.1% of its 1e-5 value on every point here (the worst,
(10, 0.01, 1000), by 0.09%). Sample rate 1 is given to dp-accounting as plain Gaussian events, which it merges
exactly (``z / sqrt(T)``); as Poisson events with probability 1 it would round T times and be looser.
"""

from __future__ import annotations

import functools

import dp_accounting
import pytest
from dp_accounting import pld

from fedcompress.privacy import calibrate_noise, epsilon, history_epsilon

DELTA = 1e-5
SLACK = 1e-3  # one-sided tolerance: ours >= reference * (1 - SLACK); calibrated <= target * (1 + SLACK)
INTERVAL = 1e-4  # dp-accounting's value_discretization_interval

# (noise multiplier z, sample rate q, steps T). Our epsilon (PRV) is noted: small is < 0.3.
GRID = [
    # sample rate 1: one step and many (merged into one Gaussian step)
    (1.0, 1.0, 1),  # 4.4
    (30.0, 1.0, 1),  # 0.10
    (50.0, 1.0, 1),  # 0.059
    (30.0, 1.0, 1000),  # 4.7
    (100.0, 1.0, 1000),  # 1.2
    # small sample rate, many steps
    (1.0, 0.01, 1000),  # 1.8
    (1.0, 0.01, 10000),  # 6.2
    (2.0, 0.01, 10000),  # 2.2
    (4.0, 0.01, 1000),  # 0.27
    (10.0, 0.01, 1000),  # 0.098
    (1.0, 0.001, 1000),  # 0.15
    (1.0, 0.001, 10000),  # 0.48
    (0.6, 0.001, 10000),  # 2.5
    # small epsilon, few steps
    (2.0, 0.01, 100),  # 0.19
    (10.0, 0.1, 10),  # 0.10
    (5.0, 0.1, 1),  # 0.080
    # typical
    (1.0, 0.1, 100),  # 7.1
    (5.0, 0.1, 1000),  # 2.7
    (2.0, 0.5, 1),  # 1.4
    (0.8, 0.5, 10),  # 14.7: large, where PRV's error term (capped at 0.01) is the smallest fraction
]
# Several entries, sample rate 1 among them: PRV convolves them (a different code path from self-composition).
HETEROGENEOUS = ((1.2, 0.05, 200), (0.9, 0.1, 50), (2.0, 1.0, 3))


@functools.cache
def _pld_pessimistic(history: tuple[tuple[float, float, int], ...], delta: float = DELTA) -> float:
    """dp-accounting's pessimistic PLD epsilon of a history (cached: the PRV and RDP tests share it)."""
    accountant = pld.PLDAccountant(
        dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE, value_discretization_interval=INTERVAL
    )
    events = []
    for z, q, steps in history:
        gaussian = dp_accounting.GaussianDpEvent(z)
        step = gaussian if q == 1.0 else dp_accounting.PoissonSampledDpEvent(q, gaussian)
        events.append(dp_accounting.SelfComposedDpEvent(step, steps))
    accountant.compose(dp_accounting.ComposedDpEvent(events))
    return float(accountant.get_epsilon(delta))


@pytest.mark.parametrize("accountant", ["prv", "rdp"])
@pytest.mark.parametrize(("z", "q", "steps"), GRID)
def test_epsilon_is_never_below_the_pessimistic_pld(z, q, steps, accountant):
    reference = _pld_pessimistic(((z, q, steps),))
    assert reference > 0.0
    ours = epsilon(z, q, steps, DELTA, accountant)
    assert ours >= reference * (1 - SLACK), f"{accountant} under-reports: {ours} vs PLD {reference}"


@pytest.mark.parametrize("accountant", ["prv", "rdp"])
def test_history_epsilon_is_never_below_the_pessimistic_pld(accountant):
    reference = _pld_pessimistic(HETEROGENEOUS)
    ours = history_epsilon(list(HETEROGENEOUS), DELTA, accountant)
    assert ours >= reference * (1 - SLACK), f"{accountant} under-reports: {ours} vs PLD {reference}"


@pytest.mark.parametrize(
    ("target", "q", "steps", "accountant"),
    [
        (0.05, 1.0, 1, "prv"),
        (1.0, 1.0, 100, "prv"),
        (0.2, 0.01, 1000, "prv"),
        (0.3, 0.01, 100, "prv"),
        (2.0, 0.01, 1000, "prv"),
        (8.0, 0.1, 100, "prv"),
        (3.0, 0.05, 100, "rdp"),
    ],
)
def test_calibrated_noise_never_overshoots_the_pessimistic_pld(target, q, steps, accountant):
    z = calibrate_noise(target, q, steps, DELTA, accountant)
    spent = _pld_pessimistic(((z, q, steps),))
    assert spent <= target * (1 + SLACK), f"calibrated z={z} spends {spent} > target {target}"
    if accountant == "prv":  # and not by hiding behind far too much noise: PRV is within 1% of PLD here
        assert spent >= 0.97 * target
