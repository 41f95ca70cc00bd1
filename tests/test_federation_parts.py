"""Server-side building blocks without Flower: sampling, server optimizer, client state, checkpoints."""

import numpy as np
import pytest

from fedcompress.federation.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from fedcompress.federation.client_state import load_state_from_disk, save_state_to_disk, select_state
from fedcompress.federation.sampling import sample_clients
from fedcompress.federation.server_optimizer import ServerOptimizer
from fedcompress.federation.weights import load_arrays, save_arrays
from fedcompress.seeding import numpy_rng


def test_fixed_sampling_is_seeded_sized_and_order_free():
    a = sample_clients(range(10), scheme="fixed", fraction=0.3, min_clients=2, generator=numpy_rng(1, "sample", 4))
    b = sample_clients(
        [9, 3, 1, 0, 2, 4, 5, 6, 7, 8], scheme="fixed", fraction=0.3, min_clients=2, generator=numpy_rng(1, "sample", 4)
    )
    assert a == b and len(a) == 3 and len(set(a)) == 3
    assert (
        sample_clients(range(10), scheme="fixed", fraction=0.01, min_clients=2, generator=numpy_rng(1, "sample", 4))
        != []
    )
    rounds = {
        tuple(
            sample_clients(range(10), scheme="fixed", fraction=0.3, min_clients=1, generator=numpy_rng(1, "sample", r))
        )
        for r in range(1, 20)
    }
    assert len(rounds) > 5


def test_poisson_sampling_rate_matches_fraction():
    counts = [
        len(
            sample_clients(
                range(100), scheme="poisson", fraction=0.2, min_clients=1, generator=numpy_rng(0, "sample", r)
            )
        )
        for r in range(1, 201)
    ]
    # mean of 200 Binomial(100, 0.2) draws: sd of the mean = 4 / sqrt(200) ~ 0.28
    assert abs(np.mean(counts) - 20) < 5 * 0.283


def test_sampling_rejects_bad_arguments():
    with pytest.raises(ValueError, match="fraction"):
        sample_clients(range(3), scheme="fixed", fraction=0.0, min_clients=1, generator=numpy_rng(0, "sample", 1))
    with pytest.raises(ValueError, match="scheme"):
        sample_clients(range(3), scheme="stratified", fraction=0.5, min_clients=1, generator=numpy_rng(0, "sample", 1))


def test_server_optimizer_fedavg_and_momentum_and_state():
    w = {"a": np.ones(3, np.float32)}
    d = {"a": np.full(3, 0.5, np.float32)}
    assert np.allclose(ServerOptimizer().step(w, d)["a"], 1.5)
    opt = ServerOptimizer(lr=1.0, momentum=0.5)
    w1 = opt.step(w, d)
    w2 = opt.step(w1, d)  # buffer = 0.5 * 0.5 + 0.5 = 0.75
    assert np.allclose(w2["a"], 1.5 + 0.75)
    clone = ServerOptimizer(lr=1.0, momentum=0.5)
    clone.load_state_dict(opt.state_dict())
    assert np.allclose(clone.step(w2, d)["a"], opt.step(w2, d)["a"])
    with pytest.raises(ValueError, match="momentum"):
        ServerOptimizer(momentum=1.0)
    before = clone.state_dict()
    with pytest.raises(FloatingPointError, match="non-finite"):  # never a step into a broken model
        clone.step({"a": np.full(3, 3e38, np.float32)}, {"a": np.full(3, 3e38, np.float32)})
    assert all(np.array_equal(before[k], v) for k, v in clone.state_dict().items())
    with pytest.raises(ValueError, match="schema"):
        clone.load_state_dict({})


def test_client_state_prefers_memory_then_disk_by_round(tmp_path):
    def state(r):
        return {"round": np.array(r), "codec/x": np.full(2, float(r))}

    for r in (1, 2, 3):
        save_state_to_disk(tmp_path, 5, state(r))
    assert len(list((tmp_path / "client-state" / "partition-5").glob("*.npz"))) == 2  # keeps the last two
    assert select_state(state(3), server_round=4, disk_root=tmp_path, partition_id=5).before["codec/x"][0] == 3
    # a re-run of round 3 (server resumed from round 2's checkpoint) starts its codec memory from round 2's
    # state, while the newest state (round 3: accountant, stored release) is kept beside it
    rerun = select_state(state(3), server_round=3, disk_root=tmp_path, partition_id=5)
    assert int(rerun.before["round"]) == 2 and int(rerun.latest["round"]) == 3
    fresh_process = select_state(None, server_round=3, disk_root=tmp_path, partition_id=5)
    assert int(fresh_process.before["round"]) == 2 and int(fresh_process.latest["round"]) == 3
    assert load_state_from_disk(tmp_path, 5, before_round=1) == {}
    empty = select_state(None, server_round=1, disk_root=None, partition_id=5)
    assert empty.before == {} and empty.latest == {}


def test_checkpoint_round_trip_and_refusal(tmp_path):
    optimizer = ServerOptimizer(momentum=0.5)
    optimizer.step({"w": np.zeros(4, np.float32)}, {"w": np.ones(4, np.float32)})
    ckpt = Checkpoint(
        round=3,
        weights={"w": np.arange(4, dtype=np.float32)},
        optimizer=optimizer.state_dict(),
        meta={"rows": [{"round": 1}]},
    )
    save_checkpoint(tmp_path, ckpt)
    back = load_checkpoint(tmp_path)
    assert back.round == 3 and np.array_equal(back.weights["w"], ckpt.weights["w"])
    assert back.meta["rows"] == [{"round": 1}]
    restored = ServerOptimizer(momentum=0.5)
    restored.load_state_dict(back.optimizer)  # 0-d arrays (the schema) must survive the file
    assert restored.state_dict()["momentum/w"].tolist() == [1.0] * 4
    save_arrays(tmp_path / "checkpoint.pt", {"w": np.zeros(2, np.float32)})
    with pytest.raises(ValueError, match=r"corrupt.*no 'meta' entry"):
        load_checkpoint(tmp_path)
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="cannot read"):
        load_arrays(tmp_path / "junk.pt")
    with pytest.raises(FileNotFoundError):
        load_arrays(tmp_path / "missing.pt")


def test_fedadam_steps_by_the_papers_rule_and_resumes_from_its_state():
    w = {"a": np.zeros(3, dtype=np.float32)}
    d = {"a": np.array([0.1, -0.2, 0.0], dtype=np.float32)}
    opt = ServerOptimizer(lr=0.01, kind="adam")  # b1 0.9 (momentum 0), b2 0.99, tau 1e-3
    m, v = 0.1 * d["a"], 0.01 * d["a"] ** 2
    expected = 0.01 * m / (np.sqrt(v) + 1e-3)
    w1 = opt.step(w, d)
    np.testing.assert_allclose(w1["a"], expected, rtol=1e-5)
    assert abs(float(w1["a"][0])) < 0.011  # a step per coordinate of about lr, whatever the delta's scale
    clone = ServerOptimizer(lr=0.01, kind="adam")
    clone.load_state_dict(opt.state_dict())
    np.testing.assert_array_equal(clone.step(w1, d)["a"], opt.step(w1, d)["a"])
    with pytest.raises(ValueError, match="adam"):
        ServerOptimizer(kind="rmsprop")
