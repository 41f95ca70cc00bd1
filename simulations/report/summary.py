"""A sweep's records summarised per configuration (cells equal up to the seed), and their Pareto front.

Means and sample standard deviations are over seeds; a configuration's epsilon is the largest over its seeds.
The front keeps the configurations no other one beats on PSNR, epsilon and uplink bytes together.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from fedcompress.federation.records import RoundRow

__all__ = ["PSNR_TIE_DB", "finite", "pareto_front", "summarize"]

PSNR_TIE_DB = 0.05  # PSNR differences below this are ties on the Pareto front


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
        for row in map(RoundRow.from_dict, r["rounds"]):
            if row.psnr is not None:
                per_round.setdefault(int(row.round), []).append(float(row.psnr))
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


def finite(value: Any) -> bool:
    """Whether ``value`` is a finite number (a run that diverged or never finished a round has none)."""
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
    usable = [s for s in series if finite(s["psnr"]) and s["uplink"] is not None]
    return [s for s in usable if not any(_dominates(o, s, psnr_tol) for o in usable if o is not s)]
