"""Real federations through the sweep: a tiny grid end to end, a failing cell, resume, and the report."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from simulations.report import render_report
from simulations.sweep import store

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[1]

TINY = """
    [sweep]
    name = "tiny"
    cell-timeout = 600
    [base]
    num-clients = 2
    num-rounds = 1
    samples-per-client = 16
    test-samples = 16
    width = 4
    codec = "balanced"
    [[cells]]
    label = "tiny federation"
    [[cells]]
    label = "flower dp baseline"
    runner = "flower-dp"
    dp = "client"
    dp-noise = "central"
    client-sampling = "poisson"
    codec = "none"
    target-epsilon = 8.0
    [[cells]]
    label = "fails at run time"
    dataset = "{broken}"
    [audit]
    width = 4
    image-size = 16
    targets = [[1, 1]]
    codecs = ["balanced"]
    epsilons = [8.0]
    combined = []
    iterations = 3
    restarts = 1
    dp-check-codecs = ["none"]
    dp-check-trials = 1000
    dp-check-selection-trials = 300
    workers = 1
"""


def sweep(grid: Path, out: Path) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "simulations.sweep", str(grid), "--out", str(out)]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1200)


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sweep")
    broken = folder / "broken.npz"
    broken.write_bytes(b"this is not a zip archive")  # passes the settings check, fails when loaded
    grid = folder / "tiny.toml"
    grid.write_text(textwrap.dedent(TINY).format(broken=broken))
    out = folder / "out"
    first = sweep(grid, out)
    return grid, out, first


def test_a_tiny_grid_runs_for_real_and_a_failing_cell_does_not_stop_it(swept):
    _, out, first = swept
    assert first.returncode == 1, first.stdout + first.stderr  # one cell failed, the sweep went on
    assert "[cell 1/3] round 1/1" in first.stdout  # round progress from the child
    by_label = {r["label"]: r for r in store.latest_records(store.read_records(out)).values()}
    assert set(by_label) == {"tiny federation", "flower dp baseline", "fails at run time"}
    ok = by_label["tiny federation"]
    assert ok["status"] == "ok" and ok["run_status"] == "completed" and ok["error"] is None
    assert ok["final"]["psnr"] > 0 and len(ok["rounds"]) == 1
    assert 0 < ok["final"]["uplink_bytes"] < ok["final"]["dense_uplink_bytes"]
    assert ok["config"]["num-clients"] == 2 and ok["wall_seconds"] > 0
    failed = by_label["fails at run time"]
    assert failed["status"] == "failed" and "broken.npz" in failed["error"]
    assert (out / "cells" / failed["cell"] / "log.txt").is_file()
    flower = by_label["flower dp baseline"]  # Flower's own DP wrapper, accounted by us
    assert flower["status"] == "ok" and flower["final"]["uplink_bytes"] == flower["final"]["dense_uplink_bytes"]
    assert flower["privacy"]["epsilon"] == pytest.approx(8.0, rel=0.05)
    assert len((out / store.CSV_FILE).read_text().splitlines()) == 4
    audit = json.loads((out / "audit" / "audit.json").read_text())  # the grid's [audit], after the cells
    assert audit["config"]["iterations"] == 3 and audit["config"]["codecs"] == ["balanced"]
    assert {row["condition"] for row in audit["leakage"]} == {
        "none",
        "codec=balanced",
        "dp=8",
        "dp=8+informed-server",  # the server regenerates the noise from public values: it must fail ...
        "dp=8+seeded-noise+informed-server",  # ... unless the client opted in to seeded noise (a control)
    }
    assert "audit: running" in first.stdout


def test_rerun_skips_finished_cells_and_reruns_an_interrupted_one(swept):
    grid, out, _ = swept
    again = sweep(grid, out)
    assert "3 already in the store, 0 to run" in again.stdout, again.stdout + again.stderr
    assert "audit: already in" in again.stdout  # same [audit] settings: not run twice
    lines = (out / store.STORE_FILE).read_text().splitlines()
    victim = json.loads(lines[0])  # pretend the sweep was killed while this cell ran
    (out / store.STORE_FILE).write_text("\n".join(lines[1:]) + "\n")
    folder = out / "cells" / victim["cell"]
    result = json.loads((folder / "result.json").read_text())
    (folder / "result.json").write_text(json.dumps({**result, "status": "running"}))
    resumed = sweep(grid, out)
    assert "2 already in the store, 1 to run" in resumed.stdout, resumed.stdout + resumed.stderr
    latest = store.latest_records(store.read_records(out))
    assert latest[victim["cell"]]["status"] == "ok"
    assert latest[victim["cell"]]["final"]["psnr"] == pytest.approx(victim["final"]["psnr"], abs=1e-6)
    assert json.loads((folder / "result.json").read_text())["status"] == "completed"


def test_the_report_renders_from_the_real_store(swept):
    _, out, _ = swept
    path = render_report(out)
    text = path.read_text()
    assert "fails at run time" in text and "tiny federation" in text
    assert "## Measured leakage vs epsilon" in text and (out / "plots" / "leakage.png").is_file()
    for png in (out / "plots").glob("*.png"):
        assert png.stat().st_size > 1000


def test_the_python_example_runs_a_sweep_without_cli_or_toml_and_plots_it(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "simulations.example_sweep",
            "--out",
            str(tmp_path),
            "--codecs",
            "ultra",
            "--rounds",
            "1",
            "--quick",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "codec=ultra dp=none: psnr" in done.stdout
    assert (tmp_path / "psnr_vs_uplink.png").stat().st_size > 10_000
    assert (tmp_path / "codec=ultra_dp=none" / "result.json").is_file()
