"""Private federations end to end: the epsilon in result.json is the one the helpers give for its parameters,
every release is charged (failed replies, skipped rounds, replays after a crash), and no client out-spends it."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fedcompress.models import build_model
from fedcompress.privacy import Accountant, client_level_epsilon, epsilon
from fedcompress.privacy.masking import PublicMask

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.e2e


def _model_shapes(width: int) -> list[tuple[int, ...]]:
    return [tuple(v.shape) for v in build_model("unet", width=width).state_dict().values()]


def _simulate(out: Path, settings: dict) -> dict:
    cmd = [sys.executable, "-m", "simulations.cli", "simulate", "--out", str(out)]
    for key, value in settings.items():
        cmd += ["--set", f"{key}={value}"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads((out / "result.json").read_text())


def test_sample_level_epsilon_matches_the_accountant_and_the_clients(tmp_path):
    result = _simulate(
        tmp_path / "sample",
        {
            "num-clients": 2,
            "num-rounds": 2,
            "samples-per-client": 32,
            "test-samples": 16,
            "dp": "sample",
            "target-epsilon": 4,
            "local-epochs": 1,
            "release": "all",  # so clients report their own epsilon
        },
    )
    privacy = result["privacy"]
    assert (privacy["level"], privacy["accountant"], privacy["delta"]) == ("sample", "prv", 1e-5)
    assert privacy["sample_rate"] == 0.5 and privacy["steps"] == 4 and privacy["rounds"] == 2
    expected = epsilon(privacy["noise_multiplier"], 0.5, 4, 1e-5)
    assert math.isclose(privacy["epsilon"], expected, rel_tol=1e-9) and expected <= 4.0
    for row in result["rounds"]:  # each client's own Opacus accountant says the same
        assert math.isclose(row["client_epsilon_reported"], row["epsilon"], rel_tol=1e-9)
    assert "num-examples" in privacy["not_covered"] and "epsilon" in privacy["summary"]


def test_client_level_central_budget_stops_before_the_round_that_would_pass_it(tmp_path):
    z, q = 1.0, 0.5
    after = [
        client_level_epsilon(trust="central", noise_multiplier=z, rounds=r, delta=1e-5, sample_rate=q)
        for r in (1, 2, 3)
    ]
    budget = (after[1] + after[2]) / 2  # room for two rounds, not three
    result = _simulate(
        tmp_path / "central",
        {
            "num-clients": 4,
            "num-rounds": 5,
            "samples-per-client": 16,
            "test-samples": 16,
            "dp": "client",
            "dp-noise": "central",
            "client-sampling": "poisson",
            "fraction-train": q,
            "noise-multiplier": z,
            "clip-norm": 0.5,
            "max-epsilon": budget,
            "codec": "q8",
        },
    )
    assert result["status"] == "budget_exhausted" and "before round 3" in result["message"]
    assert len(result["rounds"]) == 2
    assert math.isclose(result["privacy"]["epsilon"], after[1], rel_tol=1e-9)
    assert result["privacy"]["trust"] == "central" and result["privacy"]["sample_rate"] == q


def _client_epsilon(out: Path, partition: int) -> float:
    """A client's own accountant, read from the newest state it saved on its disk."""
    newest = sorted((out / "client-state" / f"partition-{partition}").glob("round-*.npz"))[-1]
    with np.load(newest) as state:
        saved = {k.removeprefix("dp/"): state[k] for k in state.files if k.startswith("dp/") and k != "dp/releases"}
    accountant = Accountant("prv")
    accountant.load_state_dict(saved)
    return accountant.epsilon(1e-5)


def test_failed_replies_and_skipped_rounds_are_charged(tmp_path):
    out = tmp_path / "faulty-private"
    settings = {"num-rounds": 3, "dp": "sample", "noise-multiplier": 1.0, "local-epochs": 1, "release": "all"}
    script = str(ROOT / "tests" / "e2e" / "faulty_federation.py")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, script, str(out), json.dumps(settings)], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads((out / "result.json").read_text())
    rounds = result["rounds"]
    assert [r["skipped"] for r in rounds] == [False, False, True]  # partition 3 crashes in the last round
    assert all(r["failures"]["1"] == "client error: injected crash on partition 1" for r in rounds)
    privacy = result["privacy"]
    # q = 1 (16 records, batch 16) and 1 step per round: every client was sent work in all 3 rounds
    assert privacy["max_over"] == [0, 1, 2, 3] and privacy["rounds"] == 3
    assert math.isclose(privacy["epsilon"], epsilon(1.0, 1.0, 3, 1e-5), rel_tol=1e-9)
    for partition in (0, 2, 3):
        assert _client_epsilon(out, partition) <= privacy["epsilon"] * (1 + 1e-9)


def test_a_killed_private_run_charges_the_round_it_had_sent(tmp_path):
    out = tmp_path / "killed"
    settings = {"num-clients": 3, "num-rounds": 4, "samples-per-client": 16, "test-samples": 16}
    settings |= {"dp": "sample", "noise-multiplier": 2.0, "local-epochs": 1}
    cmd = [sys.executable, "-m", "simulations.cli", "simulate", "--out", str(out)]
    cmd += [arg for key, value in settings.items() for arg in ("--set", f"{key}={value}")]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    state = out / "privacy-state.json"
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:  # kill as soon as round 3's messages have left
            try:
                if json.loads(state.read_text())["round"] == 3:
                    break
            except (OSError, ValueError, KeyError):
                pass
            assert proc.poll() is None, "the run ended before it could be killed"
            time.sleep(0.02)
        else:
            pytest.fail("round 3 was never sent")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    done = subprocess.run([*cmd, "--set", "resume=true"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads((out / "result.json").read_text())
    assert result["status"] == "completed" and [r["round"] for r in result["rounds"]] == [1, 2, 3, 4]
    privacy = result["privacy"]
    assert privacy["rounds"] == 5  # round 3 was sent twice: charged twice (clients re-send the stored release)
    assert math.isclose(privacy["epsilon"], epsilon(2.0, 1.0, 5, 1e-5), rel_tol=1e-9)
    for partition in range(3):
        assert _client_epsilon(out, partition) <= privacy["epsilon"] * (1 + 1e-9)


def test_a_refusing_client_is_one_line_each_without_engine_tracebacks(tmp_path):
    """Quiet by default: a client past its own budget gives one line per client, not Ray's tracebacks."""
    cmd = [sys.executable, "-m", "simulations.cli", "simulate", "--out", str(tmp_path / "run")]
    # delta 1e-3 for the run, but each site holds its own max-epsilon 10 at delta 1e-5: round 2 is refused.
    settings = {
        "num-clients": 2,
        "num-rounds": 2,
        "samples-per-client": 16,
        "width": 4,
        "dp": "sample",
        "target-epsilon": 8,
        "delta": 1e-3,
        "test-samples": 16,
    }
    for key, value in settings.items():
        cmd += ["--set", f"{key}={value}"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert output.count("client error: refused") == 2, output[-3000:]
    for noise in ("Traceback", "deprecated", "Manually terminating", "FutureWarning"):
        assert noise not in output, f"{noise!r} in the default output:\n{output[-3000:]}"


def test_dp_keep_sends_a_fraction_of_the_bytes_at_the_same_epsilon(tmp_path):
    base = {
        "num-clients": 4,
        "num-rounds": 2,
        "samples-per-client": 16,
        "test-samples": 16,
        "width": 8,
        "local-epochs": 1,
        "dp": "client",
        "dp-noise": "local",
        "target-epsilon": 8,
        "delta": 1e-3,
        "codec": "q:8:block=256+zstd:3",
    }
    dense = _simulate(tmp_path / "dense", base)
    kept = _simulate(tmp_path / "kept", {**base, "dp-keep": 0.02})
    assert kept["privacy"]["epsilon"] == dense["privacy"]["epsilon"]  # the mask is public: nothing to charge
    assert kept["privacy"]["noise_multiplier"] == dense["privacy"]["noise_multiplier"]
    ratio = dense["final"]["uplink_bytes"] / kept["final"]["uplink_bytes"]
    sizes = [int(np.prod(shape)) for shape in _model_shapes(width=8)]
    fraction = PublicMask(0.02, 0).indices(sizes).size / sum(sizes)  # small tensors whole + 2% of the rest
    assert ratio > 0.5 / fraction, (ratio, fraction)  # the values shrink by the kept fraction (headers aside)
