"""The report: tables and PNG plots from a fixed small store (tests/fixtures/store); numbers from it."""

import json
import math
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import pytest

from simulations.report import pareto_front, render_report, summarize
from simulations.sweep import store

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "store"
PLOTS = ("psnr_vs_epsilon.png", "psnr_vs_uplink.png", "pareto.png", "convergence.png")


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    folder = tmp_path_factory.mktemp("report") / "store"
    shutil.copytree(FIXTURE, folder)
    return folder, render_report(folder).read_text()


def fixture_records():
    return list(store.latest_records(store.read_records(FIXTURE)).values())


def test_fixture_store_has_what_the_report_must_show():
    records = fixture_records()
    assert {r["runner"] for r in records} == {"simulate", "flower-dp"}
    assert {r["config"]["dp"] for r in records} >= {"none", "sample", "client"}
    assert any(r["status"] == "failed" for r in records)
    assert len({r["config"]["seed"] for r in records}) >= 2


@pytest.mark.parametrize("name", PLOTS)
def test_plots_exist_are_non_empty_and_decode(rendered, name):
    folder, text = rendered
    path = folder / "plots" / name
    assert path.stat().st_size > 5000
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 300
    assert image[..., :3].std() > 0.01  # something is drawn, not a blank canvas
    assert f"(plots/{name})" in text


def test_every_cell_is_listed_with_its_full_privacy_parameters(rendered):
    _, text = rendered
    rows = {line.split(" | ")[0].strip("| "): line for line in text.splitlines() if line.startswith("| ")}
    for record in fixture_records():
        row = rows[record["cell"]]
        if record["status"] == "ok" and record["config"]["dp"] != "none":
            p = record["privacy"]
            for value in (p["epsilon"], p["delta"], p["noise_multiplier"], p["clip_norm"], p["sample_rate"]):
                assert f"{value:.4g}" in row or f"{value:.3g}" in row
            for value in (str(p["steps"]), p["accountant"], p["level"]):
                assert f"| {value} |" in row


def test_configuration_means_and_sds_come_from_the_store(rendered):
    _, text = rendered
    groups: dict[str, list[float]] = {}
    for r in fixture_records():
        if r["status"] == "ok":
            groups.setdefault(r["series"], []).append(r["final"]["psnr"])
    assert any(len(v) > 1 for v in groups.values())
    for psnrs in groups.values():
        if len(psnrs) > 1:
            assert f"{statistics.fmean(psnrs):.2f} ± {statistics.stdev(psnrs):.2f}" in text
        else:
            assert f"{psnrs[0]:.2f} (1 seed)" in text


def test_baselines_pareto_edge_audit_and_failures_sections(rendered):
    _, text = rendered
    for heading in (
        "## Baselines side by side",
        "## Pareto front (",
        "## Edge models",
        "## Measured leakage",
        "## Failed cells",
    ):
        assert heading in text
    assert (
        "plain FedAvg, float32" in text and "Flower DP wrapper" in text and "ours, same mechanism and settings" in text
    )
    assert "ours, best PSNR at epsilon <= Flower's" in text
    failed = next(r for r in fixture_records() if r["status"] == "failed")
    assert failed["error"].splitlines()[0][:40] in text
    edge = json.loads(next(FIXTURE.glob("cells/*/edge.json")).read_text())
    for row in edge["rows"]:
        assert f"| {row['name']} | {row['runtime']} | {row['params']} |" in text
    audit = json.loads(next(FIXTURE.glob("cells/*/audit.json")).read_text())
    for row in audit["leakage"]:
        assert f"| {row['condition']} |" in text


def test_audits_with_a_dp_condition_get_a_leakage_plot(rendered):
    folder, text = rendered
    assert "## Measured leakage vs epsilon" in text and "![Measured leakage vs epsilon](plots/leakage.png)" in text
    assert matplotlib.image.imread(folder / "plots" / "leakage.png").shape[0] > 100


def test_leakage_plot_draws_only_the_defended_target_and_skips_an_audit_without_dp(tmp_path):
    from simulations.report import leakage_curves, plot_leakage_vs_epsilon

    row = {"codec": "none", "batch_size": 1, "local_steps": 1, "psnr_mean": 20.0, "baseline_psnr_mean": 15.0}
    rows = [
        {**row, "dp": "none"},
        {**row, "dp": "sample", "epsilon": 8.0, "psnr_mean": 9.0},
        {**row, "dp": "none", "batch_size": 8, "psnr_mean": 14.0},  # not attacked under DP: left out
    ]
    assert leakage_curves(rows) == {"codec none": [(8.0, 9.0), (math.inf, 20.0)]}
    assert leakage_curves([{**row, "dp": "none"}]) == {}  # nothing was attacked under DP
    assert plot_leakage_vs_epsilon(rows, tmp_path / "leak.png").stat().st_size > 1000
    assert plot_leakage_vs_epsilon(rows[:1], tmp_path / "none.png").stat().st_size > 1000  # explained, empty


def test_pareto_front_keeps_only_non_dominated_configurations():
    def s(name, psnr, eps, up):
        return {"label": name, "psnr": psnr, "epsilon": eps, "uplink": up}

    series = [
        s("best-psnr", 30, None, 100),
        s("cheap", 20, 2.0, 10),
        s("private", 22, 1.0, 50),
        s("dominated", 19, 2.0, 20),
        s("tie-worse", 22, 1.0, 60),
        s("within-noise", 30.01, None, 1000),
    ]
    assert [x["label"] for x in pareto_front(series)] == ["best-psnr", "cheap", "private"]


def test_summaries_average_over_seeds_only():
    records = fixture_records()
    series = summarize(records)
    ok = [r for r in records if r["status"] == "ok"]
    assert sum(len(s["cells"]) for s in series) == len(ok)
    for s in series:
        assert len(set(s["seeds"])) == len(s["seeds"])
        assert all(math.isfinite(s["psnr"]) for s in series)


def test_report_cli_writes_the_report_and_refuses_a_folder_without_a_store(tmp_path):
    folder = tmp_path / "store"
    shutil.copytree(FIXTURE, folder)
    ok = subprocess.run(
        [sys.executable, "-m", "simulations.report", str(folder)], cwd=ROOT, capture_output=True, text=True
    )
    assert ok.returncode == 0 and (folder / "report.md").is_file()
    bad = subprocess.run(
        [sys.executable, "-m", "simulations.report", str(tmp_path / "nothing")],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "results.jsonl" in bad.stderr


def test_an_audit_outside_the_cells_is_shown_under_its_folder(tmp_path):
    folder = tmp_path / "store"
    shutil.copytree(FIXTURE, folder)
    (folder / "audit").mkdir()
    row = {"condition": "sweep-wide audit", "codec": "none", "dp": "none", "psnr_mean": 21.5}
    (folder / "audit" / "audit.json").write_text(json.dumps({"leakage": [row]}))
    text = render_report(folder).read_text()
    assert "| - | audit | sweep-wide audit | none | none |" in text


def test_a_diverged_or_empty_run_does_not_break_the_report(tmp_path):
    records = [r for r in fixture_records() if r["status"] == "ok"][:3]
    diverged = {**records[1], "cell": "diverged0000", "series": "diverged", "label": "diverged"}
    diverged["final"] = {**diverged["final"], "psnr": float("nan")}
    empty = {**records[2], "cell": "empty0000000", "series": "empty", "label": "no round ran"}
    empty["final"] = {**empty["final"], "psnr": None, "ssim": None}
    empty["rounds"] = []
    for record in (records[0], diverged, empty):
        store.append_record(tmp_path, record)
    text = render_report(tmp_path).read_text()
    assert "diverged" in text and "no round ran" in text
    front = pareto_front(summarize(store.read_records(tmp_path)))
    assert [s["label"] for s in front] == [records[0]["label"]]
    assert all((tmp_path / "plots" / name).stat().st_size > 5000 for name in PLOTS)
