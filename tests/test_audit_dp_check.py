"""The empirical DP check: it runs the deployed mechanism, is sound on it, and flags broken ones."""

import math

import numpy as np
import pytest

from fedcompress.audit import (
    check_client_level_dp,
    clopper_pearson_upper,
    epsilon_lower_bound,
    local_noise_mechanism,
    public_noise_adversary,
)
from fedcompress.audit.dp_check import DEFAULT_LAYOUT
from fedcompress.privacy import NoiseSource, add_noise

C, Z = 0.05, 1.0
FLAGGING = dict(trials=1000, selection_trials=300)  # enough to flag a broken mechanism: a perfect test gives 5.6


def _update(norm: float = 2 * C) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    update = {name: rng.standard_normal(shape).astype(np.float32) for name, shape in DEFAULT_LAYOUT.items()}
    scale = norm / math.sqrt(sum(float(np.sum(v.astype(np.float64) ** 2)) for v in update.values()))
    return {name: (value * scale).astype(np.float32) for name, value in update.items()}


def test_clopper_pearson_matches_closed_forms():
    # zero successes: the bound solves (1 - p)^n = alpha
    assert clopper_pearson_upper(0, 100, 0.05) == pytest.approx(1 - 0.05 ** (1 / 100))
    assert clopper_pearson_upper(100, 100, 0.05) == 1.0
    assert 0.5 < clopper_pearson_upper(50, 100, 0.05) < 0.6
    assert np.all(np.diff(clopper_pearson_upper(np.arange(10), 10, 0.05)) > 0)
    with pytest.raises(ValueError):
        clopper_pearson_upper(11, 10, 0.05)


def test_lower_bound_of_a_perfect_test_is_limited_by_the_trials():
    p = 1 - 0.025 ** (1 / 1000)  # each rate at alpha / 2
    assert epsilon_lower_bound(0, 1000, 0, 1000, delta=1e-5, alpha=0.05) == pytest.approx(math.log((1 - 1e-5 - p) / p))
    assert epsilon_lower_bound(500, 1000, 500, 1000, delta=1e-5, alpha=0.05) == 0.0
    assert epsilon_lower_bound(0, 12_000, 0, 12_000, delta=1e-5, alpha=0.05) > 8.0  # the default's reach
    assert epsilon_lower_bound(0, 2_000, 0, 2_000, delta=1e-5, alpha=0.05) < 6.5  # what 4,000 trials split gave


def test_default_trials_certify_epsilon_8_for_a_perfectly_distinguishable_mechanism():
    # No noise at all: the check must certify at least 8 at its default trial count (2,000 held out capped at 6.3).
    result = check_client_level_dp(clip_norm=C, noise_multiplier=Z, mechanism=lambda update: update)
    assert result.trials == 12_000 and result.false_positive_rate == result.false_negative_rate == 0.0
    assert result.epsilon_lower_bound >= 8.0 and not result.passed


def test_seeded_noise_is_public_and_secret_noise_is_not():
    # Both mechanisms release fresh-looking noise every round; only the seeded one is reproduced from the run
    # config: an adversary that knows it removes that noise exactly, release after release, but not the secret one.
    update = _update()
    for randomness, removed in (("seeded", True), ("secret", False)):
        mechanism = local_noise_mechanism(clip_norm=C, noise_multiplier=Z, randomness=randomness)
        adversary = public_noise_adversary(clip_norm=C, noise_multiplier=Z)
        releases = [mechanism(update) for _ in range(3)]
        assert not np.array_equal(releases[0]["layer.weight"], releases[1]["layer.weight"])
        for released in releases:
            cleaned = adversary(released)
            norm = math.sqrt(sum(float(np.sum(v.astype(np.float64) ** 2)) for v in cleaned.values()))
            assert (norm == pytest.approx(C, rel=1e-4)) is removed  # exactly the clipped update, or noise
    again = local_noise_mechanism(clip_norm=C, noise_multiplier=Z, randomness="seeded")
    fresh = local_noise_mechanism(clip_norm=C, noise_multiplier=Z, randomness="seeded")
    assert np.array_equal(again(update)["layer.weight"], fresh(update)["layer.weight"])  # round 1 both times


def test_real_mechanism_is_consistent_with_its_epsilon():
    result = check_client_level_dp(clip_norm=C, noise_multiplier=Z, trials=3000, selection_trials=1000, seed=1)
    assert result.passed and result.epsilon_lower_bound <= result.epsilon
    assert result.epsilon == pytest.approx(4.39, abs=0.05)  # PRV, one Gaussian release, delta 1e-5
    assert result.epsilon_lower_bound > 0.5  # the test has power: it sees the mechanism is not perfectly private
    row = result.to_dict()
    assert {
        "epsilon_lower_bound",
        "epsilon",
        "delta",
        "noise_multiplier",
        "clip_norm",
        "sample_rate",
        "steps",
        "accountant",
        "confidence",
        "trials",
        "selection_trials",
    } <= set(row)


def test_regenerating_the_noise_does_not_help_against_secret_noise():
    adversary = public_noise_adversary(clip_norm=C, noise_multiplier=Z)
    assert check_client_level_dp(clip_norm=C, noise_multiplier=Z, adversary=adversary, **FLAGGING).passed


def test_codec_after_noise_is_post_processing():
    result = check_client_level_dp(clip_norm=C, noise_multiplier=Z, codec="q8", trials=600, selection_trials=200)
    assert result.passed


def test_flags_noise_ten_times_too_small():
    broken = local_noise_mechanism(clip_norm=C, noise_multiplier=Z * 0.1)
    result = check_client_level_dp(clip_norm=C, noise_multiplier=Z, mechanism=broken, **FLAGGING)
    assert not result.passed and result.epsilon_lower_bound > result.epsilon


def test_flags_noise_derived_from_the_public_seed():
    # A client whose noise stream comes from the run seed: the informed server regenerates and subtracts it.
    seeded = local_noise_mechanism(clip_norm=C, noise_multiplier=Z, randomness="seeded")
    adversary = public_noise_adversary(clip_norm=C, noise_multiplier=Z)
    result = check_client_level_dp(clip_norm=C, noise_multiplier=Z, mechanism=seeded, adversary=adversary, **FLAGGING)
    assert not result.passed and result.false_positive_rate == result.false_negative_rate == 0.0
    # the same client passes against a server that does not regenerate: its noise looks fresh and Gaussian, so
    # only an adversary who knows the seed finds the failure
    fresh = local_noise_mechanism(clip_norm=C, noise_multiplier=Z, randomness="seeded")
    assert check_client_level_dp(clip_norm=C, noise_multiplier=Z, mechanism=fresh, **FLAGGING).passed


def test_flags_a_missing_clip_on_a_large_update():
    def unclipped(update):
        return add_noise(update, Z * C, NoiseSource().numpy())

    result = check_client_level_dp(clip_norm=C, noise_multiplier=Z, mechanism=unclipped, input_norm=10 * C, **FLAGGING)
    assert not result.passed
    # the same large update through the real mechanism is clipped, and passes
    assert check_client_level_dp(clip_norm=C, noise_multiplier=Z, input_norm=10 * C, **FLAGGING).passed


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="input_norm"):
        check_client_level_dp(clip_norm=C, noise_multiplier=Z, input_norm=C / 2)
    with pytest.raises(ValueError, match="confidence"):
        check_client_level_dp(clip_norm=C, noise_multiplier=Z, confidence=1.0)
    with pytest.raises(ValueError, match="selection_trials"):
        check_client_level_dp(clip_norm=C, noise_multiplier=Z, selection_trials=0)
