"""The markdown tables of a sweep report: configurations, cells, and the baselines beside ours.

Every epsilon is printed with its delta, noise multiplier, clip norm, sample rate, steps, rounds, accountant and
level (``noise sd zC`` is the Gaussian noise's standard deviation on a clipped sum).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from simulations.sweep.store import noise_std

__all__ = ["baselines_table", "cells_table", "eps_text", "markdown_table", "series_table"]


def _fmt(value: Any, spec: str = ".4g") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return f"{value:.0f}" if abs(value) >= 1e4 else format(value, spec)
    return str(value).replace("|", "/").replace("\n", " ")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    """A markdown table's lines; ``None`` and NaN show as ``-``, large floats without decimals."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return lines


def _pm(s: Mapping[str, Any]) -> str:
    if s["psnr"] is None:
        return "-"
    return f"{s['psnr']:.2f} (1 seed)" if len(s["seeds"]) == 1 else f"{s['psnr']:.2f} ± {s['psnr_std']:.2f}"


def eps_text(value: float | None) -> str:
    """An epsilon as the report prints it; None is no DP (epsilon infinite)."""
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


def series_table(series: Sequence[Mapping[str, Any]]) -> list[str]:
    """One row per configuration (:func:`~simulations.report.summary.summarize`), with every privacy parameter."""
    header = ["configuration", "runner", "codec", "seeds", "PSNR dB (mean ± sd)", "real CT/MR dB", "SSIM"]
    header += ["epsilon (max)", *(name for name, _ in _PRIVACY_COLUMNS), "uplink MB", "ratio x"]
    rows = []
    for s in series:
        row = [s["label"], s["runner"], s["codec"], len(s["seeds"]), _pm(s), s["real_psnr"], s["ssim"]]
        row += [eps_text(s["epsilon"]), *_privacy_values(s["privacy_params"], s["private"])]
        rows.append([*row, None if s["uplink"] is None else s["uplink"] / 1e6, s["ratio"]])
    return markdown_table(header, rows)


def cells_table(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """One row per cell (its latest record), failed cells included."""
    header = ["cell", "configuration", "seed", "status", "PSNR dB", "start dB", "SSIM", "epsilon"]
    header += [name for name, _ in _PRIVACY_COLUMNS] + ["uplink B", "ratio x", "wall s"]
    rows = []
    for r in records:
        f, p, ok = r["final"], r["privacy"], r["status"] == "ok"
        private = r["config"]["dp"] != "none"
        row = [r["cell"], r["label"], r["config"]["seed"], r["status"], f.get("psnr"), f.get("psnr_initial")]
        row += [f.get("ssim"), (eps_text(p.get("epsilon")) if private else eps_text(None)) if ok else None]
        row += _privacy_values(p, private and ok)
        rows.append([*row, f.get("uplink_bytes"), f.get("compression_ratio"), r.get("wall_seconds")])
    return markdown_table(header, rows)


def _without_seed(config: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k != "seed"}


def _baseline_row(kind: str, s: Mapping[str, Any]) -> list[Any]:
    return [kind, s["label"], _pm(s), eps_text(s["epsilon"]), s["uplink"]]


def baselines_table(series: Sequence[Mapping[str, Any]]) -> list[str]:
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
    return markdown_table(["baseline", "configuration", "PSNR dB", "epsilon", "uplink B"], rows)
