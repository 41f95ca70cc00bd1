"""What an audit writes: ``audit.json`` (every row with its full privacy record) and PNG image grids."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["LEAKAGE_FIELDS", "dp_check_table", "leakage_table", "save_grid", "write_json"]

#: Fields of every row of ``audit.json``'s ``leakage`` list (privacy fields are null without DP).
LEAKAGE_FIELDS: tuple[str, ...] = (
    "condition",
    "codec",
    "randomness",
    "adversary",
    "control",
    "dp",
    "epsilon",
    "target_epsilon",
    "delta",
    "noise_multiplier",
    "clip_norm",
    "sample_rate",
    "steps",
    "accountant",
    "batch_size",
    "local_steps",
    "psnr_mean",
    "psnr_max",
    "ssim_mean",
    "ssim_max",
    "psnr_per_image",
    "ssim_per_image",
    "baseline_psnr_mean",
    "baseline_ssim_mean",
    "match_loss",
    "payload_bytes",
    "recovered_rel_error",
    "attack_reused_from",
    "seconds",
)


def write_json(result: Mapping[str, Any], path: str | Path) -> Path:
    """Write ``result`` as indented JSON; non-finite floats become null (strict JSON)."""
    path = Path(path)
    path.write_text(json.dumps(_finite(result), indent=2, sort_keys=False) + "\n")
    return path


def leakage_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """A fixed-width text table of the leakage rows, for the terminal and ``audit.txt``.

    ``z`` is the noise multiplier; ``recov.`` is the informed server's relative error on the client's clipped
    update after subtracting the noise it regenerated (about 0: the noise was removed; far above 1: it was not).
    """
    lines = [
        f"{'condition':<36}{'B':>3}{'S':>3}{'epsilon':>9}{'z':>7}{'PSNR mean':>11}{'max':>7}{'SSIM':>7}"
        f"{'base':>7}{'recov.':>9}"
    ]
    for row in rows:
        eps = "-" if row["epsilon"] is None else f"{row['epsilon']:.3g}"
        z = "-" if row.get("noise_multiplier") is None else f"{row['noise_multiplier']:.3g}"
        recovered = "-" if row.get("recovered_rel_error") is None else f"{row['recovered_rel_error']:.2g}"
        lines.append(
            f"{row['condition']:<36}{row['batch_size']:>3}{row['local_steps']:>3}{eps:>9}{z:>7}"
            f"{row['psnr_mean']:>11.2f}{row['psnr_max']:>7.2f}{row['ssim_mean']:>7.3f}{row['baseline_psnr_mean']:>7.2f}"
            f"{recovered:>9}"
        )
    return "\n".join(lines)


def dp_check_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The DP-check rows as text: lower bound vs the accountant's epsilon, and the verdict (controls must fail)."""
    lines = [f"{'DP check (client level, one release)':<44}{'adversary':<20}{'bound':>7}{'claimed':>9}  verdict"]
    for row in rows:
        flagged = not row["passed"]
        verdict = "flagged" if flagged else "consistent"
        verdict += " (as it must)" if flagged == row["control"] else " (AUDIT FAILS)"
        lines.append(
            f"{row['mechanism']:<44}{row['adversary']:<20}{row['epsilon_lower_bound']:>7.3f}{row['epsilon']:>9.3f}  "
            f"{verdict}"
        )
    if rows:
        first = rows[0]
        lines.append(
            f"z {first['noise_multiplier']:g}, C {first['clip_norm']:g}, delta {first['delta']:g}, "
            f"{first['accountant']} accountant, {first['confidence']:.0%} confidence, {first['trials']} held-out + "
            f"{first['selection_trials']} threshold releases per input"
        )
    return "\n".join(lines)


def save_grid(
    path: str | Path, originals: np.ndarray, rows: Sequence[tuple[str, np.ndarray, float]], *, title: str = ""
) -> Path:
    """One PNG: originals on top, then one row per condition ``(label, images in originals' order, PSNR)``.

    Uses matplotlib's Agg canvas directly (no pyplot, no global backend change). Images are ``[B, 1, H, W]``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    batch = originals.shape[0]
    everything = [("original", originals, math.nan), *rows]
    figure = Figure(figsize=(1.2 * batch + 2.4, 1.2 * len(everything) + 0.4))
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(everything), batch, squeeze=False)
    for r, (label, images, psnr) in enumerate(everything):
        for b in range(batch):
            ax = axes[r][b]
            ax.imshow(np.clip(images[b, 0], 0.0, 1.0), cmap="gray", vmin=0.0, vmax=1.0)
            ax.set_xticks([])
            ax.set_yticks([])
        wrapped = label.replace("+", "+\n")  # long condition names on several short lines, never clipped
        name = wrapped if math.isnan(psnr) else f"{wrapped}\n{psnr:.1f} dB"
        axes[r][0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=7)
    if title:
        figure.suptitle(title, fontsize=8)
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=100, bbox_inches="tight")
    return path


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, np.generic):
        return _finite(value.item())
    return value
