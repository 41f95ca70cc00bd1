"""Client-level DP accounting under both trust models, and the order rules for compression before noise."""

from __future__ import annotations

import pytest

from fedcompress.config import RunConfig
from fedcompress.errors import ConfigError
from fedcompress.privacy import (
    check_order,
    check_stage_order,
    client_level_epsilon,
    client_level_noise,
    epsilon,
)

DELTA = 1e-5


@pytest.mark.parametrize("sampling", ["fixed", "poisson"])
def test_local_noise_gets_no_amplification_from_sampling(sampling):
    local = client_level_epsilon(
        trust="local", noise_multiplier=3.0, rounds=4, delta=DELTA, sample_rate=0.1, client_sampling=sampling
    )
    assert local == epsilon(3.0, 1.0, 4, DELTA)
    central = client_level_epsilon(trust="central", noise_multiplier=3.0, rounds=4, delta=DELTA, sample_rate=0.1)
    assert central == epsilon(3.0, 0.1, 4, DELTA)
    assert central < local


def test_local_replace_one_doubles_the_sensitivity():
    replace = client_level_epsilon(trust="local", noise_multiplier=4.0, rounds=3, delta=DELTA, adjacency="replace-one")
    assert replace == epsilon(2.0, 1.0, 3, DELTA)


def test_central_refuses_fixed_size_sampling_and_unknown_models():
    with pytest.raises(ValueError, match="Poisson"):
        client_level_epsilon(
            trust="central",
            noise_multiplier=1.0,
            rounds=10,
            delta=DELTA,
            sample_rate=0.1,
            client_sampling="fixed",
        )
    with pytest.raises(ValueError, match="add/remove"):
        client_level_epsilon(
            trust="central",
            noise_multiplier=1.0,
            rounds=1,
            delta=DELTA,
            sample_rate=0.1,
            adjacency="replace-one",
        )
    with pytest.raises(ValueError, match="trust"):
        client_level_epsilon(trust="server", noise_multiplier=1.0, rounds=1, delta=DELTA)


@pytest.mark.parametrize(("dp_noise", "sampling", "rate"), [("central", "poisson", 0.5), ("local", "fixed", 1.0)])
def test_client_level_noise_is_calibrated_for_the_whole_horizon(dp_noise, sampling, rate):
    cfg = RunConfig(
        dp="client",
        dp_noise=dp_noise,
        client_sampling=sampling,
        fraction_train=0.5,
        target_epsilon=8.0,
        num_rounds=6,
    )
    z = client_level_noise(cfg)
    assert 0.98 * 8.0 <= epsilon(z, rate, 6, cfg.delta) <= 8.0


# ------------------------------------------------------------------------------------------- order rules
SAFE_PRE_NOISE = ["", "none", "randk:0.1", "q:8:range=0.05", "randk:0.25+q:4:range=0.1"]
UNSAFE_PRE_NOISE = {
    "topk:0.1": "topk",
    "lowrank:2": "lowrank",
    "q:8": "q:8:block=256",
    "zstd:3": "zstd",
    "randk:0.1+zstd": "zstd",
    "balanced": "topk",
}


@pytest.mark.parametrize("pre_noise", SAFE_PRE_NOISE)
def test_data_independent_stages_before_local_noise_are_accepted(pre_noise):
    cfg = RunConfig(dp="client", dp_noise="local", pre_noise=pre_noise, noise_multiplier=1.0, codec="aggressive")
    check_order(cfg)  # the main codec (top-k, zstd ...) runs after the noise: post-processing


@pytest.mark.parametrize(("pre_noise", "stage"), sorted(UNSAFE_PRE_NOISE.items()))
def test_data_dependent_stages_before_local_noise_are_refused_by_name(pre_noise, stage):
    cfg = RunConfig(dp="client", dp_noise="local", pre_noise=pre_noise, noise_multiplier=1.0)
    with pytest.raises(ConfigError, match=stage) as info:
        check_order(cfg)
    assert "BEFORE" in str(info.value) and "data-independent" in str(info.value)


@pytest.mark.parametrize(
    "cfg",
    [
        RunConfig(),
        RunConfig(dp="sample", noise_multiplier=1.0, codec="aggressive"),
        RunConfig(dp="client", dp_noise="central", client_sampling="poisson", noise_multiplier=1.0, codec="balanced"),
    ],
)
def test_codecs_after_dp_are_post_processing(cfg):
    check_order(cfg)


def test_pre_noise_outside_local_client_dp_and_bad_specs_are_refused():
    with pytest.raises(ConfigError, match="dp-noise='local'"):
        check_stage_order(dp="sample", dp_noise="local", pre_noise="randk:0.1")
    with pytest.raises(ConfigError, match="not a valid codec spec"):
        check_stage_order(dp="client", dp_noise="local", pre_noise="randk:2.0")
