"""``fedcompress report DIR`` for a sweep: ``DIR/report.md`` and PNG plots from its results store.

Every number comes from ``DIR/results.jsonl`` (the latest record of each cell) and, when a cell folder holds
them, from ``edge.json`` (the distilled edge model) and ``audit.json`` (measured leakage). Cells that differ
only in their seed form one configuration (:mod:`~simulations.report.summary`): means and sample standard
deviations are over seeds. Every epsilon is printed with its delta, noise multiplier, clip norm, sample rate,
steps, rounds, accountant and level (:mod:`~simulations.report.markdown`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from simulations.report import plots
from simulations.report.extras import EXTRAS, audit_rows, extras_table
from simulations.report.markdown import baselines_table, cells_table, eps_text, markdown_table, series_table
from simulations.report.summary import PSNR_TIE_DB, finite, pareto_front, summarize
from simulations.sweep.store import STORE_FILE, latest_records, read_records

__all__ = ["PLOTS_DIR", "REPORT_FILE", "render_report"]

# The settings the report reads from every record's config, with their JSON types (checked before anything).
_CONFIG_TYPES: dict[str, type | tuple[type, ...]] = {
    "dp": str,
    "dp-noise": str,
    "target-epsilon": (int, float),
    "noise-multiplier": (int, float),
    "codec": str,
    "seed": int,
}
REPORT_FILE = "report.md"
PLOTS_DIR = "plots"
_MAX_CURVES = 8


def _select_curves(series: Sequence[Mapping[str, Any]], front: Sequence[Mapping[str, Any]]) -> list[Any]:
    if len(series) <= _MAX_CURVES:
        return list(series)
    chosen = [s for s in series if s["runner"] == "flower-dp" or (not s["private"] and s["codec"] == "none")]
    chosen += [s for s in front if s not in chosen]
    return chosen[:_MAX_CURVES]


def _plots(store_dir: Path, series: list[dict[str, Any]], front: list[Any]) -> dict[str, Path]:
    folder = store_dir / PLOTS_DIR
    series = [s for s in series if finite(s["psnr"])]  # a run that diverged or never finished a round
    images = {
        "PSNR vs epsilon": plots.plot_psnr_vs_epsilon(series, folder / "psnr_vs_epsilon.png"),
        "PSNR vs uplink bytes": plots.plot_psnr_vs_uplink(series, folder / "psnr_vs_uplink.png"),
        "Pareto front": plots.plot_pareto(series, front, folder / "pareto.png"),
        "Convergence": plots.plot_convergence(_select_curves(series, front), folder / "convergence.png"),
    }
    leakage = audit_rows(store_dir)
    if leakage:
        images["Measured leakage vs epsilon"] = plots.plot_leakage_vs_epsilon(leakage, folder / "leakage.png")
    return images


def render_report(store_dir: str | Path) -> Path:
    """Write ``report.md`` and ``plots/*.png`` into ``store_dir`` from its store; return the report's path.

    Raises
    ------
    FileNotFoundError
        When ``store_dir`` holds no store.
    ValueError
        Naming the line and the field, when a record lacks a field the report reads (a store edited by hand or
        written by something else).
    """
    store_dir = Path(store_dir)
    if not (store_dir / STORE_FILE).is_file():
        raise FileNotFoundError(f"no {STORE_FILE} in {store_dir}: run `fedcompress sweep GRID --out {store_dir}`")
    records = list(latest_records(read_records(store_dir, strict=True, config_types=_CONFIG_TYPES)).values())
    series = summarize(records)
    front = pareto_front(series)
    images = _plots(store_dir, series, front)
    ok = sum(r["status"] == "ok" for r in records)
    lines = [
        f"# Sweep report: {store_dir.name}",
        "",
        f"{len(records)} cells ({ok} ok, {len(records) - ok} failed), {len(series)} configurations. "
        f"Generated {time.strftime('%Y-%m-%d %H:%M')} from `{STORE_FILE}`; every number below is read "
        "from the store. PSNR is the final global model's on the held-out test set; means and sample "
        "standard deviations are over seeds. Epsilon is the federation's (max over clients for "
        "sample-level DP; a configuration shows the largest over its seeds); 'no DP' has no guarantee "
        "(epsilon infinite). Noise sd zC is the Gaussian noise's standard deviation on a clipped sum.",
        "",
    ]
    for title, path in images.items():
        lines += [f"## {title}", "", f"![{title}]({path.relative_to(store_dir).as_posix()})", ""]
    lines += ["## Configurations (mean over seeds)", "", *series_table(series), ""]
    lines += ["## Baselines side by side", "", *baselines_table(series), ""]
    lines += [
        "## Pareto front (higher PSNR, lower epsilon, fewer uplink bytes)",
        "",
        f"PSNRs within {PSNR_TIE_DB} dB count as equal.",
        "",
        *markdown_table(
            ["configuration", "PSNR dB", "epsilon", "uplink B"],
            [[s["label"], s["psnr"], eps_text(s["epsilon"]), s["uplink"]] for s in front],
        ),
        "",
    ]
    for title, name, list_key, preferred in EXTRAS:
        rows = extras_table(store_dir, records, name, list_key, preferred)
        if rows:
            lines += [f"## {title}", "", f"From each cell's `{name}`.", "", *rows, ""]
    lines += ["## Every cell", "", *cells_table(records), ""]
    failed = [r for r in records if r["status"] != "ok"]
    if failed:
        lines += [
            "## Failed cells",
            "",
            *markdown_table(
                ["cell", "configuration", "error"], [[r["cell"], r["label"], r.get("error")] for r in failed]
            ),
            "",
        ]
    path = store_dir / REPORT_FILE
    path.write_text("\n".join(lines))
    return path
