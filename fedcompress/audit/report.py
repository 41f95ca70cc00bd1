"""What an audit writes: ``audit.json`` (every row with its full privacy record) and PNG image grids."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["LEAKAGE_FIELDS", "leakage_table", "save_grid", "write_json"]

#: Fields of every row of ``audit.json``'s ``leakage`` list (privacy fields are null without DP).
LEAKAGE_FIELDS: tuple[str, ...] = (
    "condition",
    "codec",
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
    "attack_reused_from",
    "seconds",
)


def write_json(result: Mapping[str, Any], path: str | Path) -> Path:
    """Write ``result`` as indented JSON; non-finite floats become null (strict JSON)."""
    path = Path(path)
    path.write_text(json.dumps(_finite(result), indent=2, sort_keys=False) + "\n")
    return path


def leakage_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """A fixed-width text table of the leakage rows, for the terminal."""
    lines = [f"{'condition':<28}{'B':>3}{'S':>3}{'epsilon':>9}{'PSNR mean':>11}{'max':>7}{'SSIM':>7}{'base':>7}"]
    for row in rows:
        eps = "-" if row["epsilon"] is None else f"{row['epsilon']:.3g}"
        lines.append(
            f"{row['condition']:<28}{row['batch_size']:>3}{row['local_steps']:>3}{eps:>9}"
            f"{row['psnr_mean']:>11.2f}{row['psnr_max']:>7.2f}{row['ssim_mean']:>7.3f}{row['baseline_psnr_mean']:>7.2f}"
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
        name = label if math.isnan(psnr) else f"{label}\n{psnr:.1f} dB"
        axes[r][0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=7)
    if title:
        figure.suptitle(title, fontsize=8)
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=100)
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
