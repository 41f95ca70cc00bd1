"""The server's privacy plan against the privacy package's helpers (which are checked against dp-accounting)."""

import math

import pytest

from fedcompress.config import RunConfig
from fedcompress.errors import ConfigError
from fedcompress.federation.privacy_plan import PrivacyPlan
from fedcompress.privacy import calibrate_noise, client_level_epsilon, epsilon


def test_sample_level_calibrates_once_for_the_horizon_and_takes_the_max_over_clients():
    cfg = RunConfig.from_mapping(
        {
            "dp": "sample",
            "target-epsilon": 4.0,
            "num-rounds": 5,
            "num-clients": 4,
            "samples-per-client": 64,
            "batch-size": 16,
            "local-epochs": 1,
        }
    )
    plan = PrivacyPlan(cfg)
    assert (plan.sample_rate, plan.steps_per_round) == (0.25, 4)
    assert math.isclose(plan.noise_multiplier, calibrate_noise(4.0, 0.25, 20, 1e-5), rel_tol=1e-9)
    plan.commit(1, [0, 1])
    entry = plan.commit(2, [1, 2])
    assert entry.max_over == (1,) and entry.steps == 8 and entry.rounds == 2
    assert math.isclose(entry.epsilon, epsilon(plan.noise_multiplier, 0.25, 8, 1e-5), rel_tol=1e-12)
    for r in range(3, 6):
        last = plan.commit(r, [1])
    assert last.epsilon <= 4.0 and last.epsilon > 0.98 * 4.0  # the planned horizon lands on the target


def test_client_level_central_steps_every_released_round_with_poisson_rate():
    cfg = RunConfig.from_mapping(
        {
            "dp": "client",
            "dp-noise": "central",
            "client-sampling": "poisson",
            "fraction-train": 0.5,
            "noise-multiplier": 1.2,
            "num-clients": 10,
        }
    )
    plan = PrivacyPlan(cfg)
    for r in (1, 2, 3):
        entry = plan.commit(r, [])  # even a round with no sampled client is a release (noise only)
    expected = client_level_epsilon(trust="central", noise_multiplier=1.2, rounds=3, delta=1e-5, sample_rate=0.5)
    assert math.isclose(entry.epsilon, expected, rel_tol=1e-12) and entry.trust == "central"
    assert math.isclose(
        plan.predict([]),
        client_level_epsilon(trust="central", noise_multiplier=1.2, rounds=4, delta=1e-5, sample_rate=0.5),
        rel_tol=1e-12,
    )


def test_client_level_local_claims_no_amplification():
    cfg = RunConfig.from_mapping({"dp": "client", "dp-noise": "local", "fraction-train": 0.2, "noise-multiplier": 2.0})
    plan = PrivacyPlan(cfg)
    plan.commit(1, [3])
    entry = plan.commit(2, [3, 4])
    assert plan.sample_rate == 1.0 and entry.max_over == (3,)
    assert math.isclose(entry.epsilon, epsilon(2.0, 1.0, 2, 1e-5), rel_tol=1e-12)


def test_budget_refuses_the_round_that_would_pass_max_epsilon():
    cfg = RunConfig.from_mapping({"dp": "client", "dp-noise": "local", "noise-multiplier": 2.0, "max-epsilon": 3.0})
    plan = PrivacyPlan(cfg)
    rounds = 0
    while not plan.would_exceed_budget([0]):
        rounds += 1
        plan.commit(rounds, [0])
    assert plan.current_epsilon() <= 3.0 < epsilon(2.0, 1.0, rounds + 1, 1e-5)
    assert not plan.would_exceed_budget([1])  # a client that has spent nothing may still train


def test_state_round_trip_and_mismatched_noise_is_refused():
    cfg = RunConfig.from_mapping({"dp": "sample", "noise-multiplier": 1.0})
    plan = PrivacyPlan(cfg)
    plan.commit(1, [0, 2])
    clone = PrivacyPlan(cfg)
    clone.load_state_dict(plan.state_dict())
    assert clone.entry(1) == plan.entry(1)
    other = PrivacyPlan(cfg.replace(noise_multiplier=1.5))
    with pytest.raises(ConfigError, match="noise multiplier"):
        other.load_state_dict(plan.state_dict())


def test_non_private_plan_releases_no_ledger():
    plan = PrivacyPlan(RunConfig())
    assert plan.commit(1, [0]) is None and plan.predict([0]) == 0.0 and not plan.would_exceed_budget([0])


def test_impossible_target_fails_at_start_naming_the_setting():
    cfg = RunConfig.from_mapping({"dp": "client", "dp-noise": "local", "target-epsilon": 1e-6, "num-rounds": 5})
    with pytest.raises(ConfigError, match="target-epsilon"):
        PrivacyPlan(cfg)
