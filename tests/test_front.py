"""The compression-front report: rows, gaps to the dense reference, CSV and plots, from a real sweep store."""

import csv
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import pytest

from simulations.report import front_rows, seed_means, write_front
from simulations.sweep import store

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "store"


@pytest.fixture()
def folder(tmp_path):
    out = tmp_path / "store"
    shutil.copytree(FIXTURE, out)
    return out


def test_each_cell_is_compared_with_the_dense_cell_of_its_own_privacy_and_seed():
    records = list(store.latest_records(store.read_records(FIXTURE)).values())
    rows = front_rows(records)
    assert len(rows) == sum(r["status"] == "ok" for r in records)  # a failed cell is left out, not zero
    by = {(r["privacy"], r["codec"], r["seed"]): r for r in rows}
    dense, balanced = by[("no DP", "none", 1)], by[("no DP", "balanced", 1)]
    assert balanced["gap_db"] == pytest.approx(balanced["final_psnr"] - dense["final_psnr"])
    assert dense["gap_db"] == 0.0
    private = by[("sample-level eps 8", "balanced", 0)]
    reference = by[("sample-level eps 8", "none", 0)]
    assert private["gap_db"] == pytest.approx(private["final_psnr"] - reference["final_psnr"])  # not the no-DP one
    record = next(
        r
        for r in records
        if r["config"]["codec"] == "balanced" and r["config"]["seed"] == 1 and r["config"]["dp"] == "none"
    )
    final = record["final"]
    assert balanced["ratio_vs_float32"] == pytest.approx(final["dense_uplink_bytes"] / final["uplink_bytes"])
    clients = sum(r["clients_ok"] for r in record["rounds"])
    assert balanced["bytes_per_client_round"] == pytest.approx(final["uplink_bytes"] / clients)


def test_seeds_of_one_cell_are_averaged_and_feedback_is_named():
    row = {"label": "c", "privacy": "no DP", "codec": "ultra", "ratio_vs_float32": 300.0}
    rows = [
        {**row, "seed": 0, "final_psnr": 28.0, "gap_db": -0.5},
        {**row, "seed": 1, "final_psnr": 29.0, "gap_db": -0.3},
        {**row, "codec": "none", "seed": 0, "final_psnr": 28.5, "gap_db": 0.0},  # one seed: no mean row
    ]
    (mean,) = seed_means(rows)
    assert mean["seeds"] == [0, 1] and mean["final_psnr"] == pytest.approx(28.5)
    assert mean["final_psnr_sd"] == pytest.approx(0.5**0.5) and mean["gap_db"] == pytest.approx(-0.4)
    records = list(store.latest_records(store.read_records(FIXTURE)).values())
    record = next(r for r in records if r["status"] == "ok" and r["config"]["codec"] == "balanced")
    ef21 = {**record, "config": {**record["config"], "error-feedback": "ef21"}}
    assert front_rows([ef21])[0]["codec"] == "balanced, EF21"


def test_the_front_files_load_and_the_plots_decode(folder):
    rows = write_front(folder)
    with open(folder / "front.csv", newline="") as f:
        table = list(csv.DictReader(f))  # one header row, one row per cell: what pandas.read_csv loads
    assert len(table) == len(rows) and {"psnr_round_1", "psnr_round_2", "ratio_vs_float32"} <= set(table[0])
    assert float(table[0]["psnr_round_2"]) == pytest.approx(rows[0]["psnr_per_round"][1])
    assert "| cell | privacy | codec |" in (folder / "front.md").read_text()
    for name in ("front.png", "rounds.png"):
        image = matplotlib.image.imread(folder / name)
        assert image.shape[0] > 200 and image.std() > 0.01


def _front_report(folder: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "simulations.cli", "bench", "front", "--report-only", "--out", str(folder)]
    return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=300)


def test_the_cli_writes_the_front_from_a_store_and_refuses_an_empty_folder(folder, tmp_path):
    ok = _front_report(folder)
    assert ok.returncode == 0, ok.stderr
    assert "front.md" in ok.stdout
    empty = _front_report(tmp_path)
    assert empty.returncode == 2 and "no completed cells" in empty.stderr
    assert "Traceback" not in empty.stderr
