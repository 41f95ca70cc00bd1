"""`flwr run .` on the local simulation SuperLink: the app as Flower users run it, settings from pyproject."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the venv's bin: flwr starts flower-superlink from PATH
FLWR = BIN / "flwr"
pytestmark = pytest.mark.e2e


def _processes_with_env(key: str, value: str) -> list[int]:
    """PIDs whose environment has key=value (how we find the SuperLink that `flwr run` left running)."""
    needle = f"{key}={value}".encode()
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                if needle in Path(f"/proc/{entry}/environ").read_bytes().split(b"\0"):
                    pids.append(int(entry))
            except OSError:
                continue
    return pids


def test_flwr_run_local_simulation_completes(tmp_path):
    home, out = tmp_path / "flwr-home", tmp_path / "out"
    home.mkdir()
    (home / "config.toml").write_text('[superlink]\ndefault = "local"\n\n[superlink.local]\naddress = ":local:"\n')
    env = {
        **os.environ,
        "FLWR_HOME": str(home),
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        "PYTHONPATH": str(ROOT),
        "PATH": os.pathsep.join([str(BIN), os.environ.get("PATH", "")]),
    }
    run_config = f"num-rounds=2 num-clients=2 samples-per-client=16 test-samples=16 codec='aggressive' out-dir='{out}'"
    try:
        done = subprocess.run(
            [
                str(FLWR),
                "run",
                ".",
                "local",
                "--stream",
                "--run-config",
                run_config,
                "--federation-config",
                "num-supernodes=2 client-resources-num-cpus=1",
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        deadline = time.monotonic() + 120
        while not (out / "result.json").exists() and time.monotonic() < deadline:
            time.sleep(1)
        result = json.loads((out / "result.json").read_text())
        assert result["status"] == "completed", result.get("message")
        assert [r["round"] for r in result["rounds"]] == [1, 2]
        assert result["config"]["codec"] == "aggressive"
        assert result["final"]["compression_ratio"] > 50
        status = subprocess.run(
            [str(FLWR), "ls", "local", "--format", "json"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        runs = json.loads(status.stdout)["runs"]
        assert runs and runs[0]["status"] == "finished:completed"
    finally:
        for pid in _processes_with_env("FLWR_HOME", str(home)):  # the SuperLink `flwr run` started, by PID
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
