"""``fedcompress report DIR``: ``DIR/report.md`` and PNG plots from a sweep's results store.

Every number comes from ``DIR/results.jsonl`` (the latest record of each cell) and, when a cell folder holds
them, from ``edge.json`` (the distilled edge model) and ``audit.json`` (measured leakage). Cells that differ
only in their seed form one configuration: means and sample standard deviations are over seeds. Every epsilon
is printed with its delta, noise multiplier, clip norm, sample rate, steps, rounds, accountant and level.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fedcompress.federation.results import RESULT_FILE
from simulations.store import STORE_FILE, latest_records, noise_std, read_records

__all__ = ["main", "pareto_front", "register", "render_report", "summarize"]

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
PSNR_TIE_DB = 0.05  # PSNR differences below this are ties on the Pareto front


# ---------------------------------------------------------------------------------------------- summaries
def _privacy_name(record: Mapping[str, Any]) -> str:
    cfg = record["config"]
    if cfg["dp"] == "none":
        return "no DP"
    budget = f"eps={cfg['target-epsilon']:g}" if cfg["target-epsilon"] > 0 else f"z={cfg['noise-multiplier']:g}"
    level = "sample-level" if cfg["dp"] == "sample" else f"client-level {cfg['dp-noise']}"
    who = "Flower DP wrapper" if record["runner"] == "flower-dp" else level
    return f"{who} {budget}"


def _curve_key(record: Mapping[str, Any]) -> str:
    cfg = record["config"]
    if record["runner"] == "flower-dp":
        return "Flower DP wrapper (float32)"
    level = "sample-level" if cfg["dp"] == "sample" else f"client-level {cfg['dp-noise']}"
    return f"codec {cfg['codec']}, {level}"


def _mean(values: Sequence[float | None]) -> float | None:
    kept = [float(v) for v in values if v is not None]
    return statistics.fmean(kept) if kept else None


def _max(values: Sequence[float | None]) -> float | None:
    kept = [float(v) for v in values if v is not None]
    return max(kept) if kept else None


def _std(values: Sequence[float | None]) -> float:
    kept = [float(v) for v in values if v is not None]
    return statistics.stdev(kept) if len(kept) > 1 else 0.0


def _rounds_curve(records: Sequence[Mapping[str, Any]]) -> list[tuple[int, float]]:
    per_round: dict[int, list[float]] = {}
    for r in records:
        if r["final"].get("psnr_initial") is not None:
            per_round.setdefault(0, []).append(r["final"]["psnr_initial"])
        for row in r["rounds"]:
            if row.get("psnr") is not None:
                per_round.setdefault(int(row["round"]), []).append(float(row["psnr"]))
    return [(k, statistics.fmean(v)) for k, v in sorted(per_round.items())]


def summarize(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One summary per configuration (cells equal up to the seed) of the ``ok`` records, in store order."""
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for r in records:
        if r["status"] == "ok":
            groups.setdefault(r["series"], []).append(r)
    out = []
    for key, group in groups.items():
        first, cfg = group[0], group[0]["config"]
        finals = [g["final"] for g in group]
        private = cfg["dp"] != "none"
        out.append(
            {
                "series": key,
                "label": first["label"],
                "short": first["label"][:48],
                "runner": first["runner"],
                "codec": cfg["codec"],
                "privacy": _privacy_name(first),
                "curve_key": _curve_key(first),
                "private": private,
                "config": cfg,
                "cells": [g["cell"] for g in group],
                "seeds": sorted(g["config"]["seed"] for g in group),
                "psnr": _mean([f.get("psnr") for f in finals]),
                "psnr_std": _std([f.get("psnr") for f in finals]),
                "ssim": _mean([f.get("ssim") for f in finals]),
                "psnr_initial": _mean([f.get("psnr_initial") for f in finals]),
                "real_psnr": _mean([f.get("real_psnr") for f in finals]),
                "epsilon": _max([g["privacy"].get("epsilon") for g in group]) if private else None,
                "uplink": _mean([f.get("uplink_bytes") for f in finals]),
                "ratio": _mean([f.get("compression_ratio") for f in finals]),
                "wall": _mean([g.get("wall_seconds") for g in group]),
                "privacy_params": first["privacy"],
                "rounds_curve": _rounds_curve(group),
            }
        )
    return out


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _dominates(a: Mapping[str, Any], b: Mapping[str, Any], tol: float) -> bool:
    ea = a["epsilon"] if a["epsilon"] is not None else math.inf
    eb = b["epsilon"] if b["epsilon"] is not None else math.inf
    no_worse = a["psnr"] >= b["psnr"] - tol and ea <= eb and a["uplink"] <= b["uplink"]
    return no_worse and (a["psnr"] > b["psnr"] + tol or ea < eb or a["uplink"] < b["uplink"])


def pareto_front(series: Sequence[Mapping[str, Any]], psnr_tol: float = PSNR_TIE_DB) -> list[Mapping[str, Any]]:
    """Configurations no other one beats on all of: higher PSNR, lower epsilon (no DP = inf), fewer bytes.

    PSNRs within ``psnr_tol`` dB count as equal, so a codec that loses 0.001 dB for 20x fewer bytes is not
    kept on the front beside the uncompressed run.
    """
    usable = [s for s in series if _finite(s["psnr"]) and s["uplink"] is not None]
    return [s for s in usable if not any(_dominates(o, s, psnr_tol) for o in usable if o is not s)]


# ---------------------------------------------------------------------------------------------- tables
def _fmt(value: Any, spec: str = ".4g") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return f"{value:.0f}" if abs(value) >= 1e4 else format(value, spec)
    return str(value).replace("|", "/").replace("\n", " ")


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return lines


def _pm(s: Mapping[str, Any]) -> str:
    if s["psnr"] is None:
        return "-"
    return f"{s['psnr']:.2f} (1 seed)" if len(s["seeds"]) == 1 else f"{s['psnr']:.2f} ± {s['psnr_std']:.2f}"


def _eps(value: float | None) -> str:
    return "∞ (no DP)" if value is None else f"{value:.3g}"


_PRIVACY_COLUMNS = (
    ("delta", "delta"),
    ("z", "noise_multiplier"),
    ("noise sd zC", ""),
    ("C", "clip_norm"),
    ("q", "sample_rate"),
    ("steps", "steps"),
    ("rounds", "rounds"),
    ("accountant", "accountant"),
    ("level", "level"),
    ("trust", "trust"),
)


def _privacy_values(privacy: Mapping[str, Any], private: bool) -> list[Any]:
    if not private:
        return [None] * len(_PRIVACY_COLUMNS)
    return [privacy.get(key) if key else noise_std(privacy) for _, key in _PRIVACY_COLUMNS]


def _series_table(series: Sequence[Mapping[str, Any]]) -> list[str]:
    header = ["configuration", "runner", "codec", "seeds", "PSNR dB (mean ± sd)", "real CT/MR dB", "SSIM"]
    header += ["epsilon (max)", *(name for name, _ in _PRIVACY_COLUMNS), "uplink MB", "ratio x"]
    rows = []
    for s in series:
        row = [s["label"], s["runner"], s["codec"], len(s["seeds"]), _pm(s), s["real_psnr"], s["ssim"]]
        row += [_eps(s["epsilon"]), *_privacy_values(s["privacy_params"], s["private"])]
        rows.append([*row, None if s["uplink"] is None else s["uplink"] / 1e6, s["ratio"]])
    return _table(header, rows)


def _cells_table(records: Sequence[Mapping[str, Any]]) -> list[str]:
    header = ["cell", "configuration", "seed", "status", "PSNR dB", "start dB", "SSIM", "epsilon"]
    header += [name for name, _ in _PRIVACY_COLUMNS] + ["uplink B", "ratio x", "wall s"]
    rows = []
    for r in records:
        f, p, ok = r["final"], r["privacy"], r["status"] == "ok"
        private = r["config"]["dp"] != "none"
        row = [r["cell"], r["label"], r["config"]["seed"], r["status"], f.get("psnr"), f.get("psnr_initial")]
        row += [f.get("ssim"), (_eps(p.get("epsilon")) if private else _eps(None)) if ok else None]
        row += _privacy_values(p, private and ok)
        rows.append([*row, f.get("uplink_bytes"), f.get("compression_ratio"), r.get("wall_seconds")])
    return _table(header, rows)


def _without_seed(config: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k != "seed"}


def _baseline_row(kind: str, s: Mapping[str, Any]) -> list[Any]:
    return [kind, s["label"], _pm(s), _eps(s["epsilon"]), s["uplink"]]


def _baselines_table(series: Sequence[Mapping[str, Any]]) -> list[str]:
    """Baselines (plain FedAvg in float32, Flower's DP wrapper) beside ours.

    Under each Flower DP row: our run of the same settings (the same mechanism, implemented by us), and our
    best PSNR among private configurations whose epsilon is at most Flower's (within 1%).
    """
    fedavg = [s for s in series if not s["private"] and s["codec"] == "none" and s["runner"] == "simulate"]
    ours = [s for s in series if s["runner"] == "simulate" and s["private"] and s["epsilon"] is not None]
    rows = [_baseline_row("plain FedAvg, float32", s) for s in fedavg]
    for s in (s for s in series if s["runner"] == "flower-dp"):
        rows.append(_baseline_row("Flower DP wrapper", s))
        same = [o for o in ours if _without_seed(o["config"]) == _without_seed(s["config"])]
        rows += [_baseline_row("  ours, same mechanism and settings", o) for o in same]
        within = [o for o in ours if s["epsilon"] is not None and o["epsilon"] <= 1.01 * s["epsilon"]]
        if within:
            rows.append(_baseline_row("  ours, best PSNR at epsilon <= Flower's", max(within, key=lambda o: o["psnr"])))
    if not rows:
        return ['No baseline cells in this store (add plain FedAvg or `runner = "flower-dp"` cells).']
    return _table(["baseline", "configuration", "PSNR dB", "epsilon", "uplink B"], rows)


# What the report shows of each extra file: (section, file name, key of its list of rows, preferred columns).
EXTRAS = (
    (
        "Edge models",
        "edge.json",
        "rows",
        (
            "name",
            "runtime",
            "params",
            "weights_bytes",
            "runnable_bytes",
            "psnr",
            "ssim",
            "latency_ms",
            "size_ratio",
            "speedup",
        ),
    ),
    (
        "Measured leakage (audits)",
        "audit.json",
        "leakage",
        (
            "condition",
            "codec",
            "dp",
            "epsilon",
            "delta",
            "noise_multiplier",
            "clip_norm",
            "sample_rate",
            "steps",
            "accountant",
            "psnr_mean",
            "psnr_max",
            "ssim_mean",
            "baseline_psnr_mean",
        ),
    ),
)


def _scalars(row: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if v is None or isinstance(v, str | int | float | bool)}


def _extra_rows(path: Path, list_key: str) -> list[dict[str, Any]]:
    """The rows of one extra file: its list of row objects, or else its top-level scalar fields as one row."""
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        return [{"error": f"unreadable {path.name}: {e}"}]
    if not isinstance(data, dict):
        return [{"error": f"{path.name} is not a JSON object"}]
    rows = data.get(list_key)
    if isinstance(rows, list) and all(isinstance(r, dict) for r in rows):
        return [_scalars(r) for r in rows]
    return [_scalars(data)]


def _extras(
    store_dir: Path, records: Sequence[Mapping[str, Any]], name: str, list_key: str, preferred: Sequence[str]
) -> list[str]:
    """A table of every ``name`` file under the sweep folder, one line per row it holds.

    A file inside ``cells/<id>/`` (for example ``edge/edge.json`` of a run with ``distill = true``) belongs to
    that cell; one elsewhere (``fedcompress audit --out DIR/audit``) is shown under its folder's name.
    """
    labels = {r["cell"]: r["label"] for r in records}
    found: list[tuple[str, str, dict[str, Any]]] = []
    for path in sorted(store_dir.rglob(name)):
        parts = path.relative_to(store_dir).parts
        if parts[0] == "cells" and len(parts) > 2:
            if parts[1] not in labels:
                continue  # a folder of a cell the store does not hold (an interrupted attempt)
            cell, label = parts[1], labels[parts[1]]
        else:
            cell, label = "-", path.parent.relative_to(store_dir).as_posix()
        found += [(cell, label, row) for row in _extra_rows(path, list_key)]
    if not found:
        return []
    present = list(dict.fromkeys(k for _, _, row in found for k in row))
    columns = [k for k in preferred if k in present] or present[:12]
    return _table(
        ["cell", "configuration", *columns],
        [[cell, label, *(row.get(k) for k in columns)] for cell, label, row in found],
    )


# ---------------------------------------------------------------------------------------------- the report
def _select_curves(series: Sequence[Mapping[str, Any]], front: Sequence[Mapping[str, Any]]) -> list[Any]:
    if len(series) <= _MAX_CURVES:
        return list(series)
    chosen = [s for s in series if s["runner"] == "flower-dp" or (not s["private"] and s["codec"] == "none")]
    chosen += [s for s in front if s not in chosen]
    return chosen[:_MAX_CURVES]


def _plots(store_dir: Path, series: list[dict[str, Any]], front: list[Any]) -> dict[str, Path]:
    from simulations import plots

    folder = store_dir / PLOTS_DIR
    series = [s for s in series if _finite(s["psnr"])]  # a run that diverged or never finished a round
    images = {
        "PSNR vs epsilon": plots.plot_psnr_vs_epsilon(series, folder / "psnr_vs_epsilon.png"),
        "PSNR vs uplink bytes": plots.plot_psnr_vs_uplink(series, folder / "psnr_vs_uplink.png"),
        "Pareto front": plots.plot_pareto(series, front, folder / "pareto.png"),
        "Convergence": plots.plot_convergence(_select_curves(series, front), folder / "convergence.png"),
    }
    leakage = _audit_rows(store_dir)
    if leakage:
        images["Measured leakage vs epsilon"] = plots.plot_leakage_vs_epsilon(leakage, folder / "leakage.png")
    return images


def _audit_rows(store_dir: Path) -> list[dict[str, Any]]:
    """Every ``audit.json`` leakage row under the sweep folder with a finite PSNR, ``source`` naming its audit."""
    paths = sorted(store_dir.rglob("audit.json"))
    rows = []
    for path in paths:
        source = path.parent.relative_to(store_dir).as_posix() if len(paths) > 1 else ""
        rows += [{**row, "source": source} for row in _extra_rows(path, "leakage") if _finite(row.get("psnr_mean"))]
    return rows


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
    lines += ["## Configurations (mean over seeds)", "", *_series_table(series), ""]
    lines += ["## Baselines side by side", "", *_baselines_table(series), ""]
    lines += [
        "## Pareto front (higher PSNR, lower epsilon, fewer uplink bytes)",
        "",
        f"PSNRs within {PSNR_TIE_DB} dB count as equal.",
        "",
        *_table(
            ["configuration", "PSNR dB", "epsilon", "uplink B"],
            [[s["label"], s["psnr"], _eps(s["epsilon"]), s["uplink"]] for s in front],
        ),
        "",
    ]
    for title, name, list_key, preferred in EXTRAS:
        rows = _extras(store_dir, records, name, list_key, preferred)
        if rows:
            lines += [f"## {title}", "", f"From each cell's `{name}`.", "", *rows, ""]
    lines += ["## Every cell", "", *_cells_table(records), ""]
    failed = [r for r in records if r["status"] != "ok"]
    if failed:
        lines += [
            "## Failed cells",
            "",
            *_table(["cell", "configuration", "error"], [[r["cell"], r["label"], r.get("error")] for r in failed]),
            "",
        ]
    path = store_dir / REPORT_FILE
    path.write_text("\n".join(lines))
    return path


def _cmd_report(args: argparse.Namespace) -> int:
    folder = Path(args.dir)
    if not (folder / STORE_FILE).is_file() and (folder / RESULT_FILE).is_file():  # one run, not a sweep
        from simulations.run_report import render_run_report

        path = render_run_report(folder)
        print(f"report: {path}")
        return 0
    path = render_report(folder)
    print(f"report: {path}")
    return 0


def register(subparsers: Any) -> None:
    """Add ``fedcompress report`` to the CLI's subparsers."""
    p = subparsers.add_parser(
        "report",
        help="report.md and PNG plots from a sweep's results store, or from one run's folder",
        description=__doc__.splitlines()[0],
    )
    p.add_argument("dir", help="sweep folder (holds results.jsonl) or run folder (holds result.json)")
    p.set_defaults(func=_cmd_report)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m simulations.report DIR``."""
    parser = argparse.ArgumentParser(prog="python -m simulations.report")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["report", *(sys.argv[1:] if argv is None else argv)])
    try:
        return int(args.func(args))
    except (FileNotFoundError, ValueError) as e:
        print(f"report: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
