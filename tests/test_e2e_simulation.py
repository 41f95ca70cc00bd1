"""Real federations on Flower's simulation engine (Ray), each in its own process: failures, resume."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fedcompress.federation.weights import load_arrays

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.e2e

TINY = ["num-clients=3", "num-rounds=4", "samples-per-client=16", "test-samples=16", "codec=balanced"]


def _env() -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}


def _simulate_cmd(out: Path, settings: list[str]) -> list[str]:
    cmd = [sys.executable, "-m", "simulations.cli", "simulate", "--out", str(out)]
    for item in settings:
        cmd += ["--set", item]
    return cmd


def _run(cmd: list[str], timeout: float = 600) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def test_misbehaving_clients_are_counted_and_the_run_completes(tmp_path):
    out = tmp_path / "faulty"
    _run([sys.executable, str(ROOT / "tests" / "e2e" / "faulty_federation.py"), str(out)])
    result = json.loads((out / "result.json").read_text())
    assert result["status"] == "completed"
    rounds = result["rounds"]
    assert [r["round"] for r in rounds] == [1, 2, 3, 4, 5]
    for r in rounds[:4]:  # partition 1 crashes, partition 2 sends garbage, 0 and 3 are fine
        assert (r["clients_ok"], r["clients_failed"], r["skipped"]) == (2, 2, False)
        assert "injected crash" in r["failures"]["1"]
        assert r["failures"]["2"].startswith("bad payload")
    # a NaN payload and another model's tensors, both encoded with another codec than the run's: the server's
    # layout (model + codec) refuses them from the header, before their values are read
    assert "differ from the layout" in rounds[1]["failures"]["2"]
    assert "differ from the layout" in rounds[2]["failures"]["2"]
    last = rounds[4]  # partition 3 also crashes: one usable reply < min-clients=2
    assert last["skipped"] and last["clients_ok"] == 1 and last["clients_failed"] == 3
    assert last["psnr"] == rounds[3]["psnr"]  # skipped round leaves the model unchanged
    assert result["final"]["psnr"] > result["baseline"]["psnr"]
    assert result["final"]["uplink_bytes"] == sum(r["uplink_bytes"] for r in rounds)
    assert result["final"]["real_psnr"] is not None and all("real_psnr" in r for r in rounds)  # real CT/MR too
    with open(out / "rounds.csv", newline="") as f:  # one flat row per round: what pandas.read_csv loads
        table = list(csv.DictReader(f))
    assert [int(r["round"]) for r in table] == [0, 1, 2, 3, 4, 5]  # round 0: the untrained model
    assert [float(r["psnr"]) for r in table] == [result["baseline"]["psnr"]] + [r["psnr"] for r in rounds]
    assert "injected crash" in json.loads(table[1]["failures"])["1"]
    report = _run([sys.executable, "-m", "simulations.cli", "report", str(out)])  # a run folder, not a sweep
    assert "report.md" in report.stdout and (out / "plots" / "rounds.png").stat().st_size > 10_000
    assert "| 5 |" in (out / "report.md").read_text()


# EF21: the server's copies of the clients' estimates are in its checkpoint, the clients' own in their state; a
# resume that lost either would restart the estimates from zero and end on other weights.
EF21 = [*TINY, "error-feedback=ef21"]


def test_killed_server_resumes_to_the_same_weights(tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    _run(_simulate_cmd(straight, EF21))

    proc = subprocess.Popen(
        _simulate_cmd(killed, EF21),
        cwd=ROOT,
        env=_env(),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline:
            rows = []
            if (killed / "result.json").exists():
                try:
                    rows = json.loads((killed / "result.json").read_text())["rounds"]
                except json.JSONDecodeError:
                    rows = []
            if len(rows) >= 2:
                break
            assert proc.poll() is None, "the run ended before it could be killed"
            time.sleep(0.2)
        else:
            pytest.fail("round 2 never finished")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the whole group: server, Ray and its workers
        proc.wait()
    interrupted = json.loads((killed / "result.json").read_text())
    assert interrupted["status"] == "running" and len(interrupted["rounds"]) < 4

    _run(_simulate_cmd(killed, [*EF21, "resume=true"]))
    resumed = json.loads((killed / "result.json").read_text())
    assert resumed["status"] == "completed" and [r["round"] for r in resumed["rounds"]] == [1, 2, 3, 4]
    a, b = load_arrays(straight / "model.pt"), load_arrays(killed / "model.pt")
    assert list(a) == list(b)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_refuses_to_overwrite_a_run_without_resume(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "result.json").write_text("{}")
    done = subprocess.run(_simulate_cmd(out, TINY), cwd=ROOT, env=_env(), capture_output=True, text=True)
    assert done.returncode == 2 and "resume=true" in done.stderr


def test_too_few_nodes_fail_fast_naming_the_fix(tmp_path):
    script = str(ROOT / "tests" / "e2e" / "too_few_nodes.py")
    done = subprocess.run(  # round-timeout is an hour: waiting for it would hit this timeout instead
        [sys.executable, script, str(tmp_path / "run")],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert "only 2 of num-clients=3 clients connected" in done.stdout + done.stderr
    assert '--federation-config "num-supernodes=3"' in done.stdout + done.stderr
