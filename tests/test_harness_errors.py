"""User errors through the real command line: exit code 2 and one clear line on stderr, never a traceback."""

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedcompress.config import RunConfig
from fedcompress.federation.checkpoint import CHECKPOINT_FILE, Checkpoint, save_checkpoint
from fedcompress.files import FolderLock
from simulations.run import RUN_LOCK
from simulations.sweep import records, store

ROOT = Path(__file__).resolve().parents[1]
TINY = ["num-clients=2", "num-rounds=1", "samples-per-client=16", "test-samples=16", "width=4"]


def fedcompress(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "FLWR_HOME": str(home),
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    }
    cmd = [sys.executable, "-m", "simulations.cli", *args]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def simulate(out: Path, *settings: str) -> subprocess.CompletedProcess[str]:
    sets = [item for setting in (*TINY, *settings) for item in ("--set", setting)]
    return fedcompress("simulate", "--out", str(out), *sets, home=out.parent / "flwr-home")


def one_error_line(proc: subprocess.CompletedProcess[str], command: str) -> str:
    """The single stderr line of a refused command (checked: exit 2, no traceback)."""
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"fedcompress {command}: error: ")
    return lines[0]


def test_simulate_into_a_file_says_it_is_a_file(tmp_path):
    target = tmp_path / "notes.txt"
    target.write_text("mine")
    line = one_error_line(simulate(target), "simulate")
    assert str(target) in line and "is a file" in line
    assert target.read_text() == "mine"


def test_sweep_into_a_file_says_it_is_a_file(tmp_path):
    grid = tmp_path / "grid.toml"
    grid.write_text("[base]\nnum-rounds = 1\n")
    target = tmp_path / "results"
    target.write_text("mine")
    line = one_error_line(fedcompress("sweep", str(grid), "--out", str(target), home=tmp_path), "sweep")
    assert "is a file" in line


def _cell() -> dict[str, Any]:
    return {"id": "abc", "label": "x", "runner": "simulate", "config": RunConfig().to_dict()}


@pytest.mark.parametrize("missing", ["config", "status"])
def test_report_on_a_record_without_a_key_names_the_line_and_the_key(tmp_path, missing):
    cell = _cell()
    store.append_record(tmp_path, records.failed_record(cell, "boom", wall_seconds=1.0))
    record = records.failed_record({**cell, "id": "def"}, "boom", wall_seconds=1.0)
    del record[missing]
    store.append_record(tmp_path, record)
    line = one_error_line(fedcompress("report", str(tmp_path), home=tmp_path), "report")
    assert "line 2" in line and repr(missing) in line


def test_report_on_a_record_without_a_setting_it_reads_names_it(tmp_path):
    cell = _cell()
    del cell["config"]["dp"]
    store.append_record(tmp_path, records.failed_record(cell, "boom", wall_seconds=1.0))
    line = one_error_line(fedcompress("report", str(tmp_path), home=tmp_path), "report")
    assert "line 1" in line and "'dp'" in line


def _checkpoint(folder: Path) -> Path:
    weights = {"w": np.zeros((8, 8), np.float32)}
    save_checkpoint(folder, Checkpoint(round=1, weights=weights, optimizer={}, meta={"rows": [], "baseline": {}}))
    return folder / CHECKPOINT_FILE


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_resuming_a_corrupt_checkpoint_says_it_is_corrupt(tmp_path, damage):
    out = tmp_path / "run"
    path = _checkpoint(out)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"\x00garbage\xff" * 64)
    (out / "result.json").write_text(json.dumps({"status": "running"}))
    line = one_error_line(simulate(out, "resume=true"), "simulate")
    assert "corrupt" in line and str(path) in line


def test_a_second_run_into_a_folder_in_use_is_refused(tmp_path):
    out = tmp_path / "run"
    with FolderLock(out, name=RUN_LOCK, what="run"):
        line = one_error_line(simulate(out), "simulate")
    assert "in use by another run" in line and f"pid {os.getpid()}" in line
