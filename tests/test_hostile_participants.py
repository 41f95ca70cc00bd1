"""Participants that lie: the real server round (CompressedFedAvg) and client round against each lie."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from flwr.app import ConfigRecord, Context, Message, MessageType, MetricRecord, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from clients.app import state_root
from fedcompress.codec import encode
from fedcompress.config import RunConfig
from fedcompress.errors import CodecError, ConfigError
from fedcompress.federation import downlink
from fedcompress.federation.attacks import LIE, attackers, parse_attack
from fedcompress.federation.client_round import run_client_round
from fedcompress.federation.robust import UpdateGuard, build_aggregator, capped_weight
from fedcompress.federation.weights import initial_weights
from fedcompress.privacy.mechanisms import server_mechanism
from server.loop import _check_same_run
from server.records import payload_record
from server.strategy import CompressedFedAvg

CFG = RunConfig(num_clients=4, samples_per_client=16, test_samples=16, width=4, min_clients=1, codec="none")
LAYOUT = {"w": np.zeros(64, np.float32)}


@pytest.fixture(autouse=True)
def _task_identity():
    """Flower messages need a run identity; tests build real ones outside a run."""
    saved = (TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id)
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 1, 1
    yield
    TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = saved


def _reply_from(node: int, content: RecordDict) -> Message:
    """A reply whose source is ``node`` (a reply's source is the node its query went to)."""
    query = Message(RecordDict(), dst_node_id=node, message_type=MessageType.TRAIN)
    return Message(content, reply_to=query)


def _train_reply(node: int, value: float, claimed: float | None = None) -> Message:
    metrics = MetricRecord({"num-examples": claimed} if claimed is not None else {})
    payload = encode({"w": np.full(64, value, np.float32)}, "none")
    return _reply_from(node, RecordDict({"arrays": payload_record(payload), "metrics": metrics}))


def _strategy(cfg: RunConfig = CFG) -> CompressedFedAvg:
    strategy = CompressedFedAvg(cfg, server_mechanism(cfg))
    strategy.node_of_partition = {p: 100 + p for p in range(cfg.num_clients)}
    strategy.prepare_round(list(range(cfg.num_clients)), LAYOUT)
    return strategy


# ---------------------------------------------------------------------------------------------- aggregation
def test_a_claim_of_1e30_examples_does_not_set_the_aggregate():
    replies = [_train_reply(100, 1.0, 16), _train_reply(101, 1.0, 16), _train_reply(102, 1.0, 16)]
    outcome = _strategy().aggregate_replies(1, [*replies, _train_reply(103, -2.0, 1e30)])  # within the guard
    assert outcome.delta is not None
    assert np.allclose(outcome.delta["w"], (3 * 1.0 - 2.0) / 4)  # its weight is capped at samples-per-client
    assert capped_weight(1e30, 16) == 16 and capped_weight(float("nan"), 16) == 1 and capped_weight(None, 16) == 1


def test_a_huge_or_non_finite_update_is_rejected_and_named():
    replies = [_train_reply(100, 0.01), _train_reply(101, 0.012), _train_reply(102, 0.011)]
    outcome = _strategy(CFG.replace(release="minimal")).aggregate_replies(1, [*replies, _train_reply(103, 3e38)])
    assert outcome.delta is not None and np.allclose(outcome.delta["w"], 0.011)
    assert outcome.guard.verdicts[3].startswith("rejected: update norm 2.4e+39") and outcome.aggregated == 3
    ones, huge = {"w": np.ones(4, np.float32)}, {"w": np.full(4, 1e6, np.float32)}
    clipped, verdicts = UpdateGuard(mode="clip").apply([(0, ones, 1.0), (1, ones, 1.0), (2, huge, 1.0)])
    assert np.linalg.norm(clipped[2][1]["w"]) <= 4 * 2.0 and verdicts.verdicts[2].startswith("clipped")
    _, infinite = UpdateGuard().apply([(0, {"w": np.array([np.inf])}, 1.0)])
    assert infinite.verdicts[0] == "rejected: update norm is not finite"


def test_robust_aggregators_resist_a_sign_flipping_minority():
    honest = [{"w": np.full(8, 1.0 + 0.1 * i, np.float32)} for i in range(6)]
    flipped = [{"w": -10 * np.full(8, 1.2, np.float32)} for _ in range(2)]
    weights = [1.0] * 8
    mean = build_aggregator(CFG)(honest + flipped, weights)["w"][0]
    median = build_aggregator(CFG.replace(aggregation="median"))(honest + flipped, weights)["w"][0]
    trimmed = build_aggregator(CFG.replace(aggregation="trimmed-mean", trim_fraction=0.25))(honest + flipped, weights)
    clip = build_aggregator(CFG.replace(aggregation="norm-clip"))(honest + flipped, weights)["w"][0]
    assert mean < 0 < clip and 1.0 <= median <= 1.5 and 1.0 <= trimmed["w"][0] <= 1.5


def test_central_dp_refuses_aggregators_it_does_not_compose_with_and_owns_the_norm_bound():
    central = {"dp": "client", "dp_noise": "central", "client_sampling": "poisson", "noise_multiplier": 1.0}
    with pytest.raises(ConfigError, match="does not compose with central"):
        RunConfig(**central, aggregation="trimmed-mean")
    assert _strategy(CFG.replace(**central)).guard.mode == "off"  # it clips every update to C itself


# ---------------------------------------------------------------------------------------------- membership
def _claim(node: int, partition: object) -> Message:
    return _reply_from(node, RecordDict({"config": ConfigRecord({"partition-id": partition})}))  # type: ignore[dict-item]


def test_the_handshake_refuses_rogue_duplicate_and_out_of_range_partition_ids():
    strategy = CompressedFedAvg(CFG, server_mechanism(CFG))
    assert strategy._register(_claim(7, 0)) == ""
    assert "already held by node 7: refused" in strategy._register(_claim(8, 0))
    assert "not an int in [0, 4)" in strategy._register(_claim(9, 4))
    assert "not an int" in strategy._register(_claim(10, "x"))
    assert "not an int" in strategy._register(_claim(11, True))
    assert strategy.node_of_partition == {0: 7}  # the rogue claimant did not replace node 7


def test_only_the_first_reply_of_a_selected_node_counts():
    strategy = _strategy()
    strategy.prepare_round([0, 1], LAYOUT)
    replies = [_train_reply(100, 1.0), _train_reply(100, 9.0), _train_reply(102, 9.0), _train_reply(999, 9.0)]
    updates, failures = strategy.collect(replies, [0, 1])
    assert [u.partition_id for u in updates] == [0] and -1 not in failures
    assert failures == {1: "no reply within round-timeout=300 s"}


# ---------------------------------------------------------------------------------------------- clients
def test_a_client_refuses_a_downlink_bomb_before_allocating_it():
    bomb = encode({"w": np.zeros(1 << 22, np.float32)}, "randk:0.00001")  # declares 4M values, the model has 7k
    assert len(bomb) < 4096
    start = time.perf_counter()
    with pytest.raises(CodecError):
        downlink.receive(bomb, CFG)
    assert time.perf_counter() - start < 5  # refused from the header, not after decoding
    wrong = encode({"other": np.zeros(3, np.float32)}, "none")
    with pytest.raises(CodecError, match="layout"):
        downlink.receive(wrong, CFG)
    downlink.receive(downlink.broadcast(initial_weights(CFG), CFG, 1), CFG)


def test_client_state_lives_where_the_node_says_never_where_the_server_says(tmp_path):
    context = Context(run_id=1, node_id=1, node_config={"state-dir": str(tmp_path)}, state=RecordDict(), run_config={})
    hostile = "/etc/../../root/.ssh|0"
    root = state_root(context, hostile)
    assert root.parent == tmp_path.resolve() and root.name.startswith("run-") and "/" not in root.name
    assert state_root(context, hostile) == root != state_root(context, "/other/run|0")
    default = Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config={})
    assert state_root(default, hostile).parent == (Path.cwd() / "fedcompress-state").resolve()


def test_attackers_are_chosen_by_the_seed_and_lie_in_the_real_client_round():
    cfg = CFG.replace(attack="scale:100", attack_clients=2)
    liars = attackers(cfg)
    assert liars == attackers(cfg) and len(set(liars)) == 2
    honest_id = next(p for p in range(4) if p not in liars)
    payload = downlink.broadcast(initial_weights(cfg), cfg, 1)
    kwargs = {"server_round": 1, "downlink_payload": payload, "noise_multiplier": 0.0}
    plain = cfg.replace(codec="none", attack="", attack_clients=0)
    honest = run_client_round(plain, partition_id=liars[0], **kwargs)
    scaled = run_client_round(cfg.replace(codec="none"), partition_id=liars[0], **kwargs)
    from fedcompress.codec import decode

    ratio = decode(scaled.payload)["head.weight"] / decode(honest.payload)["head.weight"]
    assert np.allclose(ratio[np.isfinite(ratio)], 100, rtol=1e-4)
    lie = cfg.replace(attack="lie-weight")
    assert run_client_round(lie, partition_id=liars[1], **kwargs).metrics["num-examples"] == LIE
    assert run_client_round(lie, partition_id=honest_id, **kwargs).metrics["num-examples"] == 16
    for bad in ("scale", "noise:-1", "flip", "sign-flip:2"):
        with pytest.raises(ValueError):
            parse_attack(bad)


# ---------------------------------------------------------------------------------------------- resume
def test_resume_with_other_settings_is_refused_naming_them(tmp_path):
    saved = CFG.to_dict()
    _check_same_run(CFG.replace(num_rounds=20, round_timeout=60.0), saved, tmp_path)  # allowed to change
    with pytest.raises(ConfigError, match=r"lr: 0.1 -> 0.2.*width: 4 -> 8"):
        _check_same_run(CFG.replace(width=8, lr=0.2), saved, tmp_path)
    with pytest.raises(ConfigError, match="records no settings"):
        _check_same_run(CFG, None, tmp_path)


def test_a_checkpoint_older_than_a_setting_resumes_when_that_setting_is_at_its_default(tmp_path):
    older = {k: v for k, v in CFG.to_dict().items() if k not in ("server-optimizer", "dp-keep")}
    _check_same_run(CFG, older, tmp_path)  # those settings did not exist: they were at their defaults
    with pytest.raises(ConfigError, match="server-optimizer: 'sgd' -> 'adam'"):
        _check_same_run(CFG.replace(server_optimizer="adam"), older, tmp_path)
