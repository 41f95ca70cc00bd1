"""The compression front from a sweep's store: which codec keeps quality at the fewest uplink bytes.

Written into the sweep folder by ``fedcompress bench front`` (:mod:`simulations.bench.front`):

- ``front.md``: per cell, uplink bytes per client per round, ratio vs float32, final and best PSNR, the gap to
  its dense reference at the same privacy, seconds per round, and the privacy line;
- ``front.csv``: the same, plus PSNR per round (one column each; loads into pandas);
- ``front.png``: final PSNR against total uplink bytes (log x), one marker series per privacy setting, the
  noisy-input floor as a line; ``rounds.png``: PSNR per round.

The reference of a cell is the dense float32 cell (``codec = "none"``, no ``dp-keep``) with the same privacy
settings and seed; the ratio is always against float32 (``dense_uplink_bytes``), never against another codec.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fedcompress.federation.records import RoundRow
from simulations.report.plots import bytes_axis, legend_outside, min_span
from simulations.sweep.store import latest_records, read_records

__all__ = ["front_rows", "seed_means", "write_front"]

_PRIVACY_KEYS = ("dp", "dp-noise", "target-epsilon", "noise-multiplier", "clip-norm")


def _privacy(cfg: Mapping[str, Any]) -> str:
    if cfg["dp"] == "none":
        return "no DP"
    level = "sample-level" if cfg["dp"] == "sample" else f"client-level {cfg['dp-noise']}"
    budget = f"eps {cfg['target-epsilon']:g}" if cfg["target-epsilon"] > 0 else f"z {cfg['noise-multiplier']:g}"
    return f"{level} {budget}"


_FEEDBACK = {"ef21": "EF21", "off": "no error feedback"}  # the default, residual feedback, goes unsaid


def _codec(cfg: Mapping[str, Any]) -> str:
    keep = float(cfg.get("dp-keep", 1.0))
    codec = cfg["codec"] if keep >= 1.0 else f"dp-keep {keep:g} + {cfg['codec']}"
    feedback = _FEEDBACK.get(str(cfg.get("error-feedback", "residual")))
    return codec if feedback is None or cfg["codec"] == "none" else f"{codec}, {feedback}"


def _variant(cfg: Mapping[str, Any]) -> str:
    """The server optimizer when it is not plain FedAvg (the codec and privacy are named elsewhere)."""
    if cfg.get("server-optimizer") == "adam":
        return "FedAdam"
    momentum = float(cfg.get("server-momentum", 0.0))
    return f"FedAvgM {momentum:g}" if momentum > 0 else ""


def _name(row: Mapping[str, Any], seeded: set[tuple[str, str, str]]) -> str:
    """A point's or curve's name in the plots: codec, server optimizer, and the seed where it ran with several."""
    key = (row["privacy"], row["codec"], row["variant"])
    parts = [row["codec"], row["variant"], f"seed {row['seed']}" if key in seeded else ""]
    return ", ".join(p for p in parts if p)


def _seeded(rows: Sequence[Mapping[str, Any]]) -> set[tuple[str, str, str]]:
    """(privacy, codec, variant) of the rows that ran with more than one seed."""
    seen: dict[tuple[str, str, str], set[Any]] = {}
    for r in rows:
        seen.setdefault((r["privacy"], r["codec"], r["variant"]), set()).add(r["seed"])
    return {key for key, seeds in seen.items() if len(seeds) > 1}


def _reference_key(cfg: Mapping[str, Any]) -> tuple[Any, ...]:
    return (*(cfg[k] for k in _PRIVACY_KEYS), cfg["seed"])


def front_rows(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per completed cell (latest record), with its dense float32 reference's final PSNR and gap."""
    rows: list[dict[str, Any]] = []
    for record in records:
        if record.get("status") != "ok" or not record.get("rounds"):
            continue
        cfg, final = record["config"], record["final"]
        rounds = [RoundRow.from_dict(row) for row in record["rounds"]]
        clients = sum(int(r.clients_ok or 0) for r in rounds)
        uplink = final.get("uplink_bytes")
        dense = final.get("dense_uplink_bytes")
        psnrs = [float(r.psnr) for r in rounds if r.psnr is not None]
        rows.append(
            {
                "label": record["label"],
                "codec": _codec(cfg),
                "privacy": _privacy(cfg),
                "seed": cfg["seed"],
                "variant": _variant(cfg),
                "bytes_per_client_round": uplink / clients if uplink and clients else None,
                "ratio_vs_float32": dense / uplink if uplink and dense else None,
                "total_uplink_bytes": uplink,
                "final_psnr": final["psnr"],
                "best_psnr": max(psnrs) if psnrs else None,
                "noisy_psnr": final.get("psnr_initial"),
                "seconds_per_round": sum(float(r.seconds or 0.0) for r in rounds) / len(rounds),
                "epsilon": (record.get("privacy") or {}).get("epsilon"),
                "privacy_line": (record.get("privacy") or {}).get("summary", ""),
                "psnr_per_round": psnrs,
                "_reference": _reference_key(cfg),
                "_dense": cfg["codec"] == "none" and float(cfg.get("dp-keep", 1.0)) >= 1.0,
            }
        )
    references = {row["_reference"]: row["final_psnr"] for row in rows if row["_dense"]}
    for row in rows:
        reference = references.get(row.pop("_reference"))
        row.pop("_dense")
        row["gap_db"] = None if reference is None else row["final_psnr"] - reference
    return rows


def _fmt(value: Any, spec: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return format(value, spec)


def seed_means(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Rows of the same cell label, privacy and codec run with several seeds: mean and spread of each."""
    groups: dict[tuple[str, str, str], list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["label"], row["privacy"], row["codec"]), []).append(row)
    out = []
    for (label, privacy, codec), group in groups.items():
        if len(group) < 2:
            continue
        finals = [float(r["final_psnr"]) for r in group]
        gaps = [float(r["gap_db"]) for r in group if r["gap_db"] is not None]
        ratios = [float(r["ratio_vs_float32"]) for r in group if r["ratio_vs_float32"] is not None]
        out.append(
            {
                "label": label,
                "privacy": privacy,
                "codec": codec,
                "seeds": sorted(r["seed"] for r in group),
                "ratio_vs_float32": sum(ratios) / len(ratios) if ratios else None,
                "final_psnr": _mean(finals),
                "final_psnr_sd": _sd(finals),
                "gap_db": _mean(gaps) if gaps else None,
                "gap_db_sd": _sd(gaps) if gaps else None,
            }
        )
    return out


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def _sd(values: Sequence[float]) -> float:
    """Sample standard deviation (0 for one value)."""
    if len(values) < 2:
        return 0.0
    mean = _mean(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def _means_markdown(means: Sequence[Mapping[str, Any]]) -> list[str]:
    if not means:
        return []
    lines = [
        "",
        "Over seeds (mean +- sample sd; 'vs dense' pairs each seed with the dense cell of that seed):",
        "",
        "| cell | privacy | codec | seeds | x vs float32 | final dB | vs dense dB |",
        "|" + "---|" * 4 + "---:|" * 3,
    ]
    for m in means:
        gap = "-" if m["gap_db"] is None else f"{m['gap_db']:+.2f} +- {m['gap_db_sd']:.2f}"
        lines.append(
            f"| {m['label']} | {m['privacy']} | `{m['codec']}` | {', '.join(map(str, m['seeds']))} | "
            f"{_fmt(m['ratio_vs_float32'], '.1f')} | {m['final_psnr']:.2f} +- {m['final_psnr_sd']:.2f} | {gap} |"
        )
    return lines


def _markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    header = (
        "| cell | privacy | codec | seed | B/client/round | x vs float32 | final dB | best dB | vs dense dB | s/round |"
    )
    lines = [header, "|" + "---|" * 3 + "---:|" * 7]
    for r in rows:
        lines.append(
            f"| {r['label']} | {r['privacy']} | `{r['codec']}` | {r['seed']} | "
            f"{_fmt(r['bytes_per_client_round'], ',.0f')} | "
            f"{_fmt(r['ratio_vs_float32'], '.1f')} | {_fmt(r['final_psnr'], '.2f')} | {_fmt(r['best_psnr'], '.2f')} | "
            f"{_fmt(r['gap_db'], '+.2f')} | {_fmt(r['seconds_per_round'], '.1f')} |"
        )
    floors = sorted({round(r["noisy_psnr"], 2) for r in rows if r["noisy_psnr"] is not None})
    lines.append("")
    lines.append(f"Noisy input (do nothing): {', '.join(f'{f:.2f}' for f in floors)} dB. 'vs dense' is the gap to the")
    lines.append("dense float32 cell with the same privacy settings and seed.")
    lines += _means_markdown(seed_means(rows))
    privacy = sorted({r["privacy_line"] for r in rows if r["privacy_line"]})
    if privacy:
        lines += ["", "Privacy:", *[f"- {line}" for line in privacy]]
    return "\n".join(lines) + "\n"


def _plots(rows: Sequence[Mapping[str, Any]], out: Path) -> None:
    import matplotlib.pyplot as plt  # Agg: simulations.report.plots (imported above) selects it

    groups: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault(row["privacy"], []).append(row)
    colours = {name: plt.get_cmap("tab10")(i % 10) for i, name in enumerate(groups)}
    seeded = _seeded(rows)
    placed: list[tuple[float, float, float]] = []
    fig, ax = plt.subplots(figsize=(8, 5))
    for name, group in groups.items():
        group = sorted((r for r in group if r["total_uplink_bytes"]), key=lambda r: r["total_uplink_bytes"])
        ax.plot(
            [r["total_uplink_bytes"] for r in group],
            [r["final_psnr"] for r in group],
            "o",
            color=colours[name],
            label=name,
        )
        for r in group:
            placed.append(_annotate(ax, r, _name(r, seeded), placed))
    floor = next((r["noisy_psnr"] for r in rows if r["noisy_psnr"] is not None), None)
    if floor is not None:
        ax.axhline(floor, color="0.5", linestyle=":", label="noisy input (do nothing)")
    ax.set_xscale("log")
    ax.margins(x=0.12)  # room for the labels of the right-most points
    bytes_axis(ax.xaxis)
    min_span(ax)
    ax.set_xlabel("total uplink bytes over the run (log scale)")
    ax.set_ylabel("final test PSNR (dB)")
    ax.set_title("Compression front")
    ax.grid(True, alpha=0.3, which="both")
    legend_outside(ax)
    fig.savefig(out / "front.png", dpi=110, bbox_inches="tight")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 5))
    palette = plt.get_cmap("tab20")
    for i, r in enumerate(rows):
        curve = r["psnr_per_round"]
        style = "-" if r["privacy"] == "no DP" else "--"
        label = f"{r['privacy']}: {_name(r, seeded)}"
        ax.plot(range(1, len(curve) + 1), curve, style, marker=".", color=palette(i % 20), label=label)
    ax.set_xlabel("round")
    ax.set_ylabel("test PSNR (dB)")
    ax.set_title("PSNR per round")
    ax.grid(True, alpha=0.3)
    min_span(ax)
    legend_outside(ax)
    fig.savefig(out / "rounds.png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def _annotate(
    ax: Any, row: Mapping[str, Any], text: str, placed: Sequence[tuple[float, float, float]]
) -> tuple[float, float, float]:
    """Label a point, moved down past labels already placed near it; returns where it went (log x, y, offset)."""
    x, y = math.log10(row["total_uplink_bytes"]), float(row["final_psnr"])
    dy = 2.0
    while any(abs(x - px) < 0.35 and abs(y - py) < 0.12 and abs(dy - pd) < 7 for px, py, pd in placed):
        dy -= 8.0
    ax.annotate(text, (row["total_uplink_bytes"], y), fontsize=6, xytext=(4, dy), textcoords="offset points")
    return x, y, dy


def write_front(store_dir: str | Path) -> list[dict[str, Any]]:
    """Write ``front.md``, ``front.csv``, ``front.png`` and ``rounds.png`` into ``store_dir``; return the rows."""
    out = Path(store_dir)
    rows = front_rows(list(latest_records(read_records(out)).values()))
    if not rows:
        raise ValueError(f"{out} holds no completed cells")
    (out / "front.md").write_text(_markdown(rows))
    rounds = max(len(r["psnr_per_round"]) for r in rows)
    columns = [k for k in rows[0] if k not in ("psnr_per_round", "privacy_line")]
    with open(out / "front.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([*columns, *(f"psnr_round_{i}" for i in range(1, rounds + 1))])
        for r in rows:
            writer.writerow([*(r[k] for k in columns), *r["psnr_per_round"]])
    _plots(rows, out)
    return rows
