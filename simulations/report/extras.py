"""What a sweep folder holds beside its store: edge models (``edge.json``) and leakage audits (``audit.json``).

A file inside ``cells/<id>/`` belongs to that cell; one elsewhere (``fedcompress audit --out DIR/audit``, or a
grid's ``[audit]``) is shown under its folder's name.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from simulations.report.markdown import markdown_table
from simulations.report.summary import finite

__all__ = ["EXTRAS", "audit_rows", "extra_rows", "extras_table"]

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


def extra_rows(path: Path, list_key: str) -> list[dict[str, Any]]:
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


def extras_table(
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
        found += [(cell, label, row) for row in extra_rows(path, list_key)]
    if not found:
        return []
    present = list(dict.fromkeys(k for _, _, row in found for k in row))
    columns = [k for k in preferred if k in present] or present[:12]
    return markdown_table(
        ["cell", "configuration", *columns],
        [[cell, label, *(row.get(k) for k in columns)] for cell, label, row in found],
    )


def audit_rows(store_dir: Path) -> list[dict[str, Any]]:
    """Every ``audit.json`` leakage row under the sweep folder with a finite PSNR, ``source`` naming its audit."""
    paths = sorted(store_dir.rglob("audit.json"))
    rows = []
    for path in paths:
        source = path.parent.relative_to(store_dir).as_posix() if len(paths) > 1 else ""
        rows += [{**row, "source": source} for row in extra_rows(path, "leakage") if finite(row.get("psnr_mean"))]
    return rows
