"""``fedcompress report RUN_DIR`` for one run: ``report.md`` and ``plots/rounds.png`` from its ``result.json``.

A sweep folder (``results.jsonl``) gets the sweep report (:mod:`simulations.report.sweep`); a run folder gets this:
the settings that shape the run, the rounds as a table, the final line with its ratio to float32, the privacy
line (every epsilon with its delta, z, C, q, steps, accountant, level and threat model), and one figure: PSNR per
round against the noisy input, and uplink bytes per round on a human-readable axis.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fedcompress.federation.records import RoundRow, RunResult
from fedcompress.federation.results import RESULT_FILE, ROUNDS_FILE, read_result
from simulations.report.plots import bytes_axis, human_bytes, legend_outside, min_span

__all__ = ["render_run_report"]

_SHOWN = (
    "num-clients",
    "num-rounds",
    "samples-per-client",
    "width",
    "codec",
    "codec-framing",
    "dp",
    "dp-noise",
    "target-epsilon",
    "noise-multiplier",
    "clip-norm",
    "dp-keep",
    "aggregation",
    "seed",
)


def _plot(rounds: Sequence[RoundRow], noisy: float | None, path: Path) -> Path:
    import matplotlib.pyplot as plt  # Agg: simulations.report.plots selects it
    from matplotlib.ticker import MaxNLocator

    numbers = [r.round for r in rounds]
    epsilons = [r.epsilon for r in rounds]
    private = any(e is not None for e in epsilons)
    panels = 3 if private else 2
    fig, axes = plt.subplots(
        panels, 1, figsize=(7, 2.2 * panels + 1.6), sharex=True, height_ratios=(2,) + (1,) * (panels - 1)
    )
    top, bottom = axes[0], axes[-1]
    top.plot(numbers, [r.psnr for r in rounds], marker="o", label="global model")
    if any(r.real_psnr is not None for r in rounds):
        top.plot(numbers, [r.real_psnr for r in rounds], marker="^", label="real CT/MR patches")
        real_noisy = rounds[0].real_psnr_noisy
        if real_noisy is not None:
            top.axhline(real_noisy, color="tab:orange", linestyle=":", label="real patches, noisy input")
    if noisy is not None:
        top.axhline(noisy, color="0.5", linestyle=":", label="noisy input (do nothing)")
    min_span(top)
    top.set_ylabel("test PSNR (dB)")
    top.grid(True, alpha=0.3)
    legend_outside(top)
    if private:
        axes[1].plot(numbers, [e for e in epsilons], marker="o", color="tab:red")
        axes[1].set_ylabel("epsilon so far")
        axes[1].grid(True, alpha=0.3)
    uplink = [r.uplink_bytes for r in rounds]
    if all(u is not None for u in uplink):
        bottom.bar(numbers, uplink, color="tab:green")
        bytes_axis(bottom.yaxis)
    else:
        bottom.text(
            0.5,
            0.5,
            "uplink bytes withheld (central DP, minimal release)",
            ha="center",
            va="center",
            transform=bottom.transAxes,
            color="0.4",
        )
    bottom.set_ylabel("uplink per round")
    bottom.set_xlabel("round")
    bottom.xaxis.set_major_locator(MaxNLocator(integer=True))
    bottom.grid(True, alpha=0.3, axis="y")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def render_run_report(run_dir: str | Path) -> Path:
    """Write ``report.md`` and ``plots/rounds.png`` into a run folder; return the report's path."""
    run_dir = Path(run_dir)
    result = RunResult.from_dict(read_result(run_dir))
    rounds, final, cfg = result.rounds, result.final, result.config
    if not rounds:
        raise ValueError(f"{run_dir / RESULT_FILE} has no rounds yet (status {result.status!r})")
    figure = _plot(rounds, final.get("psnr_initial"), run_dir / "plots" / "rounds.png")
    ratio = final.get("compression_ratio")
    lines = [
        f"# Run report: {run_dir.name}",
        "",
        f"Status **{result.status}**, {final.get('rounds_completed')} of {cfg.get('num-rounds')} rounds. "
        f"Final PSNR **{final['psnr']:.2f} dB** (noisy input {_fmt(final.get('psnr_initial'), '.2f')} dB), SSIM "
        f"{final['ssim']:.3f}; uplink {human_bytes(final.get('uplink_bytes'))} in all"
        + (f", {ratio:.1f}x fewer bytes than float32" if ratio else "")
        + f". Per-round numbers: `{ROUNDS_FILE}`; everything: `{RESULT_FILE}`."
        + (
            f" On real CT/MR patches (pydicom's test slices, never trained on): {final['real_psnr']:.2f} dB, "
            f"noisy input {final['real_psnr_noisy']:.2f} dB."
            if final.get("real_psnr") is not None
            else ""
        ),
        "",
        f"![rounds]({figure.relative_to(run_dir).as_posix()})",
        "",
        "## Settings",
        "",
        "| setting | value |",
        "|---|---|",
        *[f"| {key} | `{cfg[key]}` |" for key in _SHOWN if key in cfg],
        "",
        "## Rounds",
        "",
        "| round | PSNR dB | SSIM | uplink | downlink | clients ok | failed | epsilon | s |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rounds:
        lines.append(
            f"| {r.round} | {r.psnr:.2f} | {r.ssim:.3f} | {human_bytes(r.uplink_bytes)} | "
            f"{human_bytes(r.downlink_bytes)} | {_fmt(r.clients_ok, 'd')} | "
            f"{_fmt(r.clients_failed, 'd')} | {_fmt(r.epsilon, '.3g')} | {r.seconds:.1f} |"
        )
    summary = result.privacy.get("summary")
    lines += ["", "## Privacy", "", summary or "No differential privacy (no guarantee).", ""]
    path = run_dir / "report.md"
    path.write_text("\n".join(lines))
    return path
