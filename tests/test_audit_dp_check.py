"""The empirical DP check: sound on the real mechanism, and it flags a broken one."""

import math

import numpy as np
import pytest

from fedcompress.audit import check_client_level_dp, clopper_pearson_upper, epsilon_lower_bound
from fedcompress.privacy import add_noise, clip_and_noise

C, Z = 0.05, 1.0


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


def test_real_mechanism_is_consistent_with_its_epsilon():
    result = check_client_level_dp(clip_norm=C, noise_multiplier=Z, trials=2000, seed=1)
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
    } <= set(row)


def test_codec_after_noise_is_post_processing():
    result = check_client_level_dp(clip_norm=C, noise_multiplier=Z, codec="q8", trials=600, seed=2)
    assert result.passed


def test_flags_noise_ten_times_too_small():
    def broken(update, generator):
        return clip_and_noise(update, clip_norm=C, noise_multiplier=Z * 0.1, generator=generator)[0]

    result = check_client_level_dp(clip_norm=C, noise_multiplier=Z, mechanism=broken, trials=1000)
    assert not result.passed and result.epsilon_lower_bound > result.epsilon


def test_flags_a_missing_clip_on_a_large_update():
    def unclipped(update, generator):
        return add_noise(update, Z * C, generator)

    result = check_client_level_dp(clip_norm=C, noise_multiplier=Z, mechanism=unclipped, input_norm=10 * C, trials=1000)
    assert not result.passed
    # the same large update through the real mechanism is clipped, and passes
    assert check_client_level_dp(clip_norm=C, noise_multiplier=Z, input_norm=10 * C, trials=1000).passed


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="input_norm"):
        check_client_level_dp(clip_norm=C, noise_multiplier=Z, input_norm=C / 2)
    with pytest.raises(ValueError, match="confidence"):
        check_client_level_dp(clip_norm=C, noise_multiplier=Z, confidence=1.0)
