"""A real sweep stopped by SIGTERM mid-cell: nothing of it keeps running, its lock is free, a rerun resumes the cell."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fedcompress.federation.checkpoint import load_checkpoint
from simulations.processes import process_alive, session_members
from simulations.sweep import SweepLock, load_grid, store

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[1]
ROUNDS = 20  # rounds of a fraction of a second: time to stop the cell after its first checkpoint

GRID = f"""
[sweep]
name = "interrupted"
cell-timeout = 600
[base]
num-clients = 2
num-rounds = {ROUNDS}
samples-per-client = 16
test-samples = 16
width = 4
codec = "balanced"
[[cells]]
label = "stopped half way"
"""


def start_sweep(grid: Path, out: Path, home: Path) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "FLWR_HOME": str(home),
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    }
    cmd = [sys.executable, "-m", "simulations.sweep", str(grid), "--out", str(out)]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def cell_process(folder: Path) -> int:
    """PID of the process running ``--cell folder`` (it leads the cell's session)."""
    wanted = ["--cell", str(folder)]
    for entry in Path("/proc").iterdir():
        try:
            args = (entry / "cmdline").read_bytes().decode().split("\0")
        except (OSError, ValueError):
            continue
        if args[-3:-1] == wanted or args[-2:] == wanted:
            return int(entry.name)
    raise AssertionError(f"no cell process for {folder}")


def start_time(pid: int) -> int:
    text = Path(f"/proc/{pid}/stat").read_text()
    return int(text[text.rfind(")") + 2 :].split()[19])


def test_sigterm_stops_the_cell_frees_the_lock_and_a_rerun_resumes_from_the_checkpoint(tmp_path):
    grid = tmp_path / "grid.toml"
    grid.write_text(GRID)
    out, home = tmp_path / "out", tmp_path / "flwr-home"
    (cell,) = load_grid(grid).cells
    folder = out / "cells" / cell.id
    sweep = start_sweep(grid, out, home)
    deadline = time.monotonic() + 300
    while not (folder / "checkpoint.pt").exists():  # round 1 is done and checkpointed
        assert sweep.poll() is None and time.monotonic() < deadline, sweep.communicate()
        time.sleep(0.05)
    leader = cell_process(folder)
    members = {pid: start_time(pid) for pid in session_members(leader)}
    assert len(members) > 3  # the cell, Ray's GCS, raylet, workers ...
    sweep.send_signal(signal.SIGTERM)
    stdout, stderr = sweep.communicate(timeout=120)

    # --- stopped: exit 130, the cell's whole session gone the moment the sweep returns, the lock free ----------
    assert sweep.returncode == 130, stdout + stderr
    assert "interrupted" in stdout + stderr and "Traceback" not in stderr
    assert session_members(leader) == []
    assert [pid for pid, started in members.items() if process_alive(pid, started)] == []
    with SweepLock(out):
        pass
    assert store.read_records(out) == []  # interrupted, not failed: the rerun runs it
    saved = load_checkpoint(folder)
    assert 1 <= saved.round < ROUNDS, "the cell finished before it was stopped; make its rounds slower"
    before = json.loads((folder / "result.json").read_text())["rounds"][: saved.round]

    # --- the rerun resumes the cell from its checkpoint -----------------------------------------------------------
    again = start_sweep(grid, out, home)
    stdout, stderr = again.communicate(timeout=600)
    assert again.returncode == 0, stdout + stderr
    assert "resuming its interrupted run" in stdout
    assert f"after round {saved.round}" in (folder / "log.txt").read_text()  # the server's own resume line
    result = json.loads((folder / "result.json").read_text())
    assert result["status"] == "completed"
    assert [row["round"] for row in result["rounds"]] == list(range(1, ROUNDS + 1))
    assert result["rounds"][: saved.round] == before  # those rounds were not run again (same seconds, bytes ...)
    (record,) = store.read_records(out)
    assert record["status"] == "ok" and len(record["rounds"]) == ROUNDS
