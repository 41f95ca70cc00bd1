"""Each privacy mode as deployed: secret randomness, every release charged, clients that hold their own floor."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedcompress.codec import decode
from fedcompress.config import RunConfig
from fedcompress.errors import ConfigError, PrivacyPolicyError, RunError
from fedcompress.federation import downlink
from fedcompress.federation.client_round import run_client_round
from fedcompress.federation.client_state import SavedState
from fedcompress.federation.records import RoundRow
from fedcompress.federation.weights import initial_weights
from fedcompress.privacy import ClientPolicy, NoiseSource, add_noise, clip_update, epsilon
from fedcompress.privacy.mechanisms import (
    CentralNoiseServer,
    LocalNoiseServer,
    SampleLevelServer,
    server_mechanism,
)
from fedcompress.seeding import numpy_rng
from fedcompress.tensors import flatten

TINY = {"num_clients": 4, "samples_per_client": 16, "test_samples": 16, "width": 4, "local_epochs": 1}
LOCAL = RunConfig(dp="client", dp_noise="local", noise_multiplier=1.0, codec="none", error_feedback="off", **TINY)
SAMPLE = RunConfig(dp="sample", noise_multiplier=1.0, codec="none", error_feedback="off", **TINY)
SEEDED = ClientPolicy(allow_seeded_noise=True)


def _round(cfg: RunConfig, *, payload: bytes | None = None, saved: SavedState | None = None, **kwargs):
    payload = payload if payload is not None else downlink.broadcast(initial_weights(cfg), cfg, 1)
    return run_client_round(
        cfg,
        partition_id=1,
        server_round=1,
        downlink_payload=payload,
        noise_multiplier=kwargs.pop("noise_multiplier", cfg.noise_multiplier),
        saved=saved,
        **kwargs,
    )


def _flat(payload: bytes) -> np.ndarray:
    return flatten(decode(payload))[0].astype(np.float64)


# ---------------------------------------------------------------------------------------------- secret randomness
@pytest.mark.parametrize("cfg", [SAMPLE, LOCAL], ids=["sample", "local"])
def test_two_private_releases_with_the_same_public_seed_differ(cfg):
    first, second = _flat(_round(cfg).payload), _flat(_round(cfg).payload)
    assert np.linalg.norm(first - second) > 0.5 * np.linalg.norm(first)
    plain = cfg.replace(dp="none", noise_multiplier=0.0)  # without DP the same seed gives the same bytes
    assert _round(plain).payload == _round(plain).payload


def test_central_noise_and_client_sampling_are_secret():
    cfg = RunConfig(
        dp="client", dp_noise="central", client_sampling="poisson", fraction_train=0.5, noise_multiplier=1.0
    )
    server = server_mechanism(cfg)
    update = {"w": np.full(50, 0.01, np.float32)}
    a, b = (server.aggregate([update], [1.0], server_round=1, reference=update)["w"] for _ in range(2))
    assert not np.array_equal(a, b)
    draws = [server.sampling_generator(1).random(64) for _ in range(2)]
    assert not np.array_equal(*draws)
    public = server_mechanism(cfg.replace(dp="none", noise_multiplier=0.0))  # no amplification: public sampling
    assert np.array_equal(public.sampling_generator(1).random(8), public.sampling_generator(1).random(8))


def _informed_server_error(policy: ClientPolicy | None, randomness: str) -> float:
    """A server that knows the run config regenerates local noise from public values and subtracts it."""
    cfg = LOCAL.replace(dp_randomness=randomness)
    observed = decode(_round(cfg, policy=policy).payload)
    raw = decode(_round(cfg.replace(dp="none", noise_multiplier=0.0)).payload)  # the client's true update
    clipped, _ = clip_update(raw, cfg.clip_norm)
    guess = NoiseSource("seeded", cfg.seed).numpy("client-noise", 1, 1)
    noise = add_noise({k: np.zeros_like(v) for k, v in observed.items()}, cfg.clip_norm, guess)
    recovered = {k: observed[k] - noise[k] for k in observed}
    true, got = flatten(clipped)[0], flatten(recovered)[0]
    return float(np.linalg.norm(got - true) / np.linalg.norm(true))


def test_a_server_that_regenerates_the_noise_from_the_config_fails():
    assert _informed_server_error(None, "secret") > 10  # noise of norm ~z*C*sqrt(d) is left, doubled
    assert _informed_server_error(SEEDED, "seeded") < 1e-3  # the opt-in: anyone with the seed removes it


# ---------------------------------------------------------------------------------------------- replays
@pytest.mark.parametrize("cfg", [SAMPLE, LOCAL], ids=["sample", "local"])
def test_a_replayed_round_resends_the_stored_release_and_a_changed_model_is_charged_again(cfg):
    first = _round(cfg)
    again = _round(cfg, saved=SavedState(latest=first.state))
    assert again.payload == first.payload and again.metrics == first.metrics
    assert again.metrics["dp-releases"] == 1
    weights = {k: v + 0.01 for k, v in initial_weights(cfg).items()}  # the server sends another model
    other = _round(cfg, payload=downlink.broadcast(weights, cfg, 1), saved=SavedState(latest=first.state))
    assert other.payload != first.payload
    assert other.metrics["dp-releases"] == 2  # its own accountant never rewinds: charged again


# ---------------------------------------------------------------------------------------------- the site's floor
@pytest.mark.parametrize("cfg", [SAMPLE, LOCAL], ids=["sample", "local"])
@pytest.mark.parametrize("noise", [0.0, 0.3, math.nan])
def test_a_client_refuses_noise_below_its_floor(cfg, noise):
    with pytest.raises(PrivacyPolicyError, match="min-noise-multiplier"):
        _round(cfg, noise_multiplier=noise)


def test_the_floor_comes_from_the_node_config_and_the_budget_is_the_clients_own():
    strict = ClientPolicy.from_node_config({"partition-id": 0, "min-noise-multiplier": 2.0, "max-epsilon": 4.0})
    assert (strict.min_noise_multiplier, strict.max_epsilon) == (2.0, 4.0)
    with pytest.raises(PrivacyPolicyError, match="min-noise-multiplier 2"):
        _round(LOCAL, policy=strict)
    cfg = LOCAL.replace(noise_multiplier=2.0)
    saved, rounds = SavedState(), 0
    with pytest.raises(PrivacyPolicyError, match="past its max-epsilon 4"):
        for _ in range(50):
            reply = _round(cfg, policy=strict, saved=saved)
            saved, rounds = SavedState(latest=reply.state), rounds + 1
            saved.latest["round"] = np.array(0)  # not a replay: a new round each time
    assert epsilon(2.0, 1.0, rounds, 1e-5) <= 4.0 < epsilon(2.0, 1.0, rounds + 1, 1e-5)
    with pytest.raises(ValueError, match="max-epsilon"):
        ClientPolicy.from_node_config({"max-epsilon": "lots"})


def test_a_client_refuses_seeded_noise_unsafe_pre_noise_and_modes_without_client_noise():
    with pytest.raises(PrivacyPolicyError, match="public seed"):
        _round(LOCAL.replace(dp_randomness="seeded"))
    topk = LOCAL.replace(pre_noise="topk:0.1")  # the server's order check would refuse it; a lying server would not
    with pytest.raises(PrivacyPolicyError, match="pre-noise"):
        _round(topk)
    only_randk = ClientPolicy.from_node_config({"pre-noise-stages": "randk"})
    with pytest.raises(PrivacyPolicyError, match="pre-noise"):
        _round(LOCAL.replace(pre_noise="q:8:range=0.01"), policy=only_randk)
    _round(LOCAL.replace(pre_noise="randk:0.5"), policy=only_randk)
    required = ClientPolicy.from_node_config({"require-client-dp": "true"})
    central = LOCAL.replace(dp_noise="central", client_sampling="poisson")
    for cfg in (LOCAL.replace(dp="none", noise_multiplier=0.0), central):
        with pytest.raises(PrivacyPolicyError, match="require-client-dp"):
            _round(cfg, policy=required)


# ---------------------------------------------------------------------------------------------- the server's ledger
def test_every_client_sent_work_is_charged_and_the_ledger_never_trails():
    cfg = RunConfig(dp="sample", target_epsilon=4.0, num_rounds=5, num_clients=4, samples_per_client=64, batch_size=16)
    server = server_mechanism(cfg)
    assert isinstance(server, SampleLevelServer) and (server.sample_rate, server.steps_per_round) == (0.25, 8)
    server.charge([0, 1])  # round 1: client 1's reply failed, the round was skipped: both still spent
    server.charge([1, 2])
    entry = server.entry(2)
    assert entry.max_over == (1,) and (entry.steps, entry.rounds) == (16, 2)
    assert entry.epsilon == epsilon(server.noise_multiplier, 0.25, 16, 1e-5)
    server.check_reported({1: {"dp-releases": 2, "epsilon": entry.epsilon}, 2: {"dp-releases": 1}})
    with pytest.raises(RunError, match="client 2 reports 2 DP releases"):
        server.check_reported({2: {"dp-releases": 2}})
    with pytest.raises(RunError, match="client 0 reports epsilon"):
        server.check_reported({0: {"epsilon": entry.epsilon}})
    clone = server_mechanism(cfg)
    clone.load_state_dict(server.state_dict())
    assert clone.entry(2) == entry
    with pytest.raises(ValueError, match="noise multiplier"):
        server_mechanism(cfg.replace(target_epsilon=8.0)).load_state_dict(server.state_dict())


def test_local_noise_claims_no_amplification_and_central_steps_every_round():
    local = server_mechanism(LOCAL.replace(fraction_train=0.25))
    assert isinstance(local, LocalNoiseServer) and local.sample_rate == 1.0
    local.charge([3])
    assert local.predict([3]) == epsilon(1.0, 1.0, 2, 1e-5)
    cfg = RunConfig(
        dp="client", dp_noise="central", client_sampling="poisson", fraction_train=0.5, noise_multiplier=1.2
    )
    central = server_mechanism(cfg)
    assert isinstance(central, CentralNoiseServer) and not central.skips(0)
    for _ in range(3):
        central.charge([])  # a round nobody was sampled in still releases noise
    assert central.entry(3).epsilon == epsilon(1.2, 0.5, 3, 1e-5) and central.entry(3).trust == "central"
    budget = server_mechanism(cfg.replace(max_epsilon=central.entry(3).epsilon))
    budget.load_state_dict(central.state_dict())
    assert budget.would_exceed_budget([])


def test_central_results_withhold_participation_and_raw_update_sizes_unless_release_all():
    cfg = RunConfig(dp="client", dp_noise="central", client_sampling="poisson", noise_multiplier=1.0)
    row = RoundRow.from_dict(
        {"round": 1, "uplink_bytes": 10, "dense_uplink_bytes": 20, "downlink_bytes": 30, "clients_ok": 2,
         "clients_failed": 1, "failures": {"3": "timeout"}, "guarded": {"4": "norm 9 > 1"}, "psnr": 20.0}
    )  # fmt: skip
    public = server_mechanism(cfg).public_row(row)
    assert public.uplink_bytes is None and public.clients_ok is None and public.psnr == 20.0
    assert public.checks is not None and public.checks.failures == {} and public.checks.guarded == {}
    assert server_mechanism(cfg.replace(release="all")).public_row(row) == row
    assert cfg.minimal_release and not RunConfig().minimal_release  # "auto": minimal exactly when private


def test_delta_must_be_far_below_one_over_n():
    with pytest.raises(ConfigError, match="n=64 records per client"):
        RunConfig(dp="sample", noise_multiplier=1.0, delta=1 / 64)
    with pytest.raises(ConfigError, match="n=10 clients"):
        RunConfig(dp="client", noise_multiplier=1.0, num_clients=10, delta=0.1)
    loose = server_mechanism(RunConfig(dp="sample", noise_multiplier=1.0, delta=0.005))
    assert any("above 1/(10 n)" in line for line in loose.start_lines())
    assert not any("1/(10 n)" in line for line in server_mechanism(SAMPLE).start_lines())
    RunConfig(delta=0.05)  # no DP: delta is unused
    horizon = server_mechanism(SAMPLE.replace(num_rounds=8)).start_lines()  # q = 1, 8 steps: epsilon 12.6
    assert any("past the default client floor's max-epsilon 10" in line for line in horizon)


def test_seeded_noise_is_refused_outside_the_simulation_engine():
    from server.loop import _refuse_seeded_noise_outside_simulation

    with pytest.raises(ConfigError, match="outside Flower's simulation engine"):
        _refuse_seeded_noise_outside_simulation(object(), LOCAL.replace(dp_randomness="seeded"))  # type: ignore[arg-type]
    _refuse_seeded_noise_outside_simulation(object(), LOCAL)  # type: ignore[arg-type]


def test_public_randomness_is_only_for_what_must_be_reproducible():
    assert NoiseSource("seeded", 7).seed_for(1, 2) == NoiseSource("seeded", 7).seed_for(1, 2)
    assert NoiseSource().seed_for(1, 2) != NoiseSource().seed_for(1, 2)
    assert not np.array_equal(numpy_rng(0, "dp", 1).random(4), NoiseSource().numpy(1).random(4))
    with pytest.raises(ValueError, match="kind"):
        NoiseSource("public")
