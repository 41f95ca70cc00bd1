"""PNG plots of a sweep (matplotlib, Agg): PSNR vs epsilon, PSNR vs uplink bytes, Pareto front, rounds.

Every function takes series summaries built by :func:`simulations.report.summarize` (one per configuration,
averaged over seeds: ``label``, ``codec``, ``privacy`` (a short privacy-setting name), ``private``, ``psnr``,
``psnr_std``, ``epsilon``, ``uplink``, ``curve``) and a path, always writes a PNG (an empty plot says why it is
empty) and returns the path.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator

__all__ = [
    "bytes_axis",
    "human_bytes",
    "leakage_curves",
    "legend_outside",
    "min_span",
    "plot_convergence",
    "plot_leakage_vs_epsilon",
    "plot_pareto",
    "plot_psnr_vs_epsilon",
    "plot_psnr_vs_uplink",
]

Series = Mapping[str, Any]
_DPI = 110


def _colors(keys: Iterable[str]) -> dict[str, Any]:
    cmap = plt.get_cmap("tab10")
    return {key: cmap(i % 10) for i, key in enumerate(dict.fromkeys(keys))}


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=_DPI, bbox_inches="tight")  # legends outside the axes and long labels stay whole
    plt.close(fig)
    return path


def human_bytes(value: float | None) -> str:
    """``1.23 MB`` style: decimal units, three significant digits (``withheld`` for None)."""
    if value is None:
        return "withheld"
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if abs(value) >= size:
            return f"{value / size:.3g} {unit}"
    return f"{value:.0f} B"


def bytes_axis(axis: Any) -> None:
    """Label a byte axis in B/KB/MB/GB instead of powers of ten."""
    axis.set_major_formatter(FuncFormatter(lambda v, _: human_bytes(v)))


def legend_outside(ax: Axes) -> None:
    """The legend right of the axes, never over the data."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)


def min_span(ax: Axes, db: float = 1.0) -> None:
    """Widen the y axis to at least ``db``: a 0.02 dB difference must not fill the plot."""
    low, high = ax.get_ylim()
    if high - low < db:
        middle = (low + high) / 2
        ax.set_ylim(middle - db / 2, middle + db / 2)


def _empty(ax: Axes, why: str) -> None:
    ax.text(0.5, 0.5, why, ha="center", va="center", transform=ax.transAxes, color="0.4")


def _groups(series: Sequence[Series], key: str) -> dict[str, list[Series]]:
    out: dict[str, list[Series]] = {}
    for s in series:
        out.setdefault(str(s[key]), []).append(s)
    return out


def plot_psnr_vs_epsilon(series: Sequence[Series], path: Path) -> Path:
    """PSNR against epsilon: a curve per codec (and DP level), error bars over seeds, no-DP as lines."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    private = [s for s in series if s["private"] and s["epsilon"] is not None]
    public = [s for s in series if not s["private"]]
    colors = _colors([s["codec"] for s in series])
    for name, group in _groups(private, "curve_key").items():
        group = sorted(group, key=lambda s: s["epsilon"])
        ax.errorbar(
            [s["epsilon"] for s in group],
            [s["psnr"] for s in group],
            yerr=[s["psnr_std"] for s in group],
            marker="o",
            capsize=3,
            label=name,
            color=colors[group[0]["codec"]],
            linestyle="-" if group[0]["runner"] == "simulate" else ":",
        )
    for s in public:
        ax.axhline(
            s["psnr"],
            color=colors[s["codec"]],
            linestyle="--",
            linewidth=1,
            label=f"{s['codec']}, no DP (reference)",
        )
    if private:
        ax.set_xscale("log")
        plain = FuncFormatter(lambda v, _: f"{v:g}")  # 0.5, 1, 2, 8 rather than 10^0
        ax.xaxis.set_major_formatter(plain)
        ax.xaxis.set_minor_formatter(plain)
        ax.tick_params(axis="x", which="minor", labelsize=7)
    else:
        _empty(ax, "no private cells in the store")
    ax.set_xlabel("epsilon (final, at each cell's delta)")
    ax.set_ylabel("test PSNR (dB)")
    ax.set_title("PSNR vs privacy budget")
    legend_outside(ax)
    min_span(ax)
    ax.grid(True, alpha=0.3)
    return _save(fig, path)


def plot_psnr_vs_uplink(series: Sequence[Series], path: Path) -> Path:
    """PSNR against total uplink bytes: one curve per privacy setting, log-scale bytes, codecs annotated."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    usable = [s for s in series if s["uplink"]]
    colors = _colors([s["privacy"] for s in usable])
    for name, group in _groups(usable, "privacy").items():
        group = sorted(group, key=lambda s: s["uplink"])
        ax.errorbar(
            [s["uplink"] for s in group],
            [s["psnr"] for s in group],
            yerr=[s["psnr_std"] for s in group],
            marker="o",
            capsize=3,
            label=name,
            color=colors[name],
        )
        for s in group:
            ax.annotate(s["codec"], (s["uplink"], s["psnr"]), fontsize=6, xytext=(3, 3), textcoords="offset points")
    if usable:
        ax.set_xscale("log")
        bytes_axis(ax.xaxis)
        legend_outside(ax)
        min_span(ax)
    else:
        _empty(ax, "no cells with uplink bytes in the store")
    ax.set_xlabel("total uplink bytes over the run (log scale)")
    ax.set_ylabel("test PSNR (dB)")
    ax.set_title("PSNR vs bandwidth")
    ax.grid(True, alpha=0.3, which="both")
    return _save(fig, path)


def plot_pareto(series: Sequence[Series], front: Sequence[Series], path: Path) -> Path:
    """PSNR vs uplink bytes in small multiples: one panel per privacy setting, no DP as a grey reference in each.

    Read a panel as "at this epsilon, what does each codec cost and keep"; configurations on the Pareto front
    over (PSNR, epsilon, bytes) are ringed in red.
    """
    usable = [s for s in series if s["uplink"]]
    public = sorted((s for s in usable if s["epsilon"] is None), key=lambda s: s["uplink"])
    groups = _groups([s for s in usable if s["epsilon"] is not None], "privacy")
    names = sorted(groups, key=lambda name: max(s["epsilon"] for s in groups[name])) or ["no DP"]
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 4.2), sharey=True, squeeze=False)
    ringed = {id(s) for s in front}
    for ax, name in zip(axes[0], names, strict=True):
        if public:
            ax.plot([s["uplink"] for s in public], [s["psnr"] for s in public], "s--", color="0.6", label="no DP")
        group = sorted(groups.get(name, []), key=lambda s: s["uplink"])
        if group:
            ax.plot([s["uplink"] for s in group], [s["psnr"] for s in group], "o-", color="tab:blue", label=name)
        for s in [*group, *public]:
            if id(s) in ringed:
                ax.scatter([s["uplink"]], [s["psnr"]], facecolors="none", edgecolors="red", s=140, linewidths=1.5)
        for s in group or public:
            ax.annotate(s["codec"], (s["uplink"], s["psnr"]), fontsize=6, xytext=(3, 3), textcoords="offset points")
        if not usable:
            _empty(ax, "no finished cells in the store")
        else:
            ax.set_xscale("log")
            bytes_axis(ax.xaxis)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("total uplink bytes (log scale)")
        ax.grid(True, alpha=0.3, which="both")
    axes[0][0].set_ylabel("test PSNR (dB)")
    min_span(axes[0][0])
    fig.suptitle(
        "PSNR vs bandwidth at each privacy setting: blue, that setting's codecs; grey squares, no DP;\n"
        "red rings, Pareto-optimal over PSNR, epsilon and bytes",
        fontsize=10,
        y=1.06,  # above the panel titles (the figure is saved with a tight bounding box)
    )
    return _save(fig, path)


def plot_convergence(series: Sequence[Series], path: Path) -> Path:
    """Test PSNR per round (mean over seeds; round 0 is the initial model) for the selected configurations."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    drawn = 0
    for s in series:
        rounds = s.get("rounds_curve") or []
        if rounds:
            ax.plot([r for r, _ in rounds], [p for _, p in rounds], marker=".", label=s["short"])
            drawn += 1
    if drawn:
        legend_outside(ax)
        min_span(ax)
    else:
        _empty(ax, "no per-round results in the store")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("round")
    ax.set_ylabel("test PSNR (dB)")
    ax.set_title("Convergence")
    ax.grid(True, alpha=0.3)
    return _save(fig, path)


def leakage_curves(rows: Sequence[Series]) -> dict[str, list[tuple[float, float]]]:
    """(epsilon, attack PSNR) points per codec, from ``audit.json`` leakage rows; no DP is epsilon ``inf``.

    Only the defended target is kept (the batch size and local steps that the DP conditions were attacked
    at); rows need a finite ``psnr_mean``, and a ``source`` names the audit when there are several. Rows of
    another adversary (the informed server) and negative controls stay in the table, off the curves.
    """
    defended = {(r.get("batch_size"), r.get("local_steps")) for r in rows if r.get("dp") not in (None, "none")}
    curves: dict[str, list[tuple[float, float]]] = {}
    for r in rows:
        if r.get("control") or r.get("adversary") not in (None, "honest-but-curious"):
            continue
        if (r.get("batch_size"), r.get("local_steps")) in defended:
            name = f"{r.get('source') or ''} codec {r.get('codec')}".strip()
            eps = math.inf if r.get("dp") in (None, "none") else float(r["epsilon"])
            curves.setdefault(name, []).append((eps, float(r["psnr_mean"])))
    return {name: sorted(points) for name, points in curves.items()}


def plot_leakage_vs_epsilon(rows: Sequence[Series], path: Path) -> Path:
    """Measured leakage (attack PSNR) against epsilon: a curve per codec, no-DP points at the right edge.

    Curves are :func:`leakage_curves`; the mean-image baseline is a grey line (a point under it leaks less
    than a guess from public data).
    """
    fig, ax = plt.subplots(figsize=(7, 4.5))
    curves = leakage_curves(rows)
    finite = [eps for points in curves.values() for eps, _ in points if math.isfinite(eps)]
    if not finite:
        _empty(ax, "no audit with a DP condition")
    else:
        no_dp_x = max(finite) * 4  # where "no DP" (epsilon infinite) is drawn
        colors = _colors(curves)
        for name, points in curves.items():
            xs = [no_dp_x if math.isinf(eps) else eps for eps, _ in points]
            ax.plot(xs, [psnr for _, psnr in points], marker="o", color=colors[name], label=name)
        baseline = [float(r["baseline_psnr_mean"]) for r in rows if r.get("baseline_psnr_mean") is not None]
        if baseline:
            ax.axhline(sum(baseline) / len(baseline), color="0.5", linestyle="--", label="mean-image baseline")
        ax.set_xscale("log")
        ax.axvline(no_dp_x / 2, color="0.8", linewidth=1)
        ax.text(no_dp_x, ax.get_ylim()[1], "no DP", ha="center", va="bottom", fontsize=8, color="0.4")
        legend_outside(ax)
    ax.set_xlabel("epsilon (sample-level, at the audit's delta)")
    ax.set_ylabel("attack PSNR (dB), higher = more leakage")
    ax.set_title("Measured leakage vs privacy budget")
    ax.grid(True, alpha=0.3)
    return _save(fig, path)
