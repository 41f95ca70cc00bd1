"""A sweep's record of one cell: its stable id, its identity, and what its ``result.json`` said.

Cell ids are a stable hash of the runner and the resolved settings (``out-dir`` and ``resume`` excluded), so
the same cell keeps its id across runs, machines and edits of the grid file that do not change it. A record
holds the cell's identity (id, series, label, runner, every setting), its status, and the final metrics,
privacy parameters and per-round rows copied from its result; :func:`record_problem` says what makes a record
read back from a store unusable.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from typing import Any

from fedcompress.config import RunConfig
from fedcompress.federation.records import RunResult

__all__ = [
    "FINAL_KEYS",
    "NOT_HASHED",
    "PRIVACY_KEYS",
    "RECORD_SCHEMA",
    "ROUND_KEYS",
    "Kind",
    "build_record",
    "cell_id",
    "failed_record",
    "record_problem",
    "series_key",
]

RECORD_SCHEMA = 1
NOT_HASHED = ("out-dir", "resume")
FINAL_KEYS = (
    "psnr",
    "ssim",
    "psnr_initial",
    "real_psnr",
    "real_psnr_noisy",
    "loss",
    "uplink_bytes",
    "downlink_bytes",
    "dense_uplink_bytes",
    "compression_ratio",
    "rounds_completed",
    "clients_failed",
    "seconds",
)
PRIVACY_KEYS = (
    "epsilon",
    "delta",
    "noise_multiplier",
    "clip_norm",
    "sample_rate",
    "steps",
    "rounds",
    "accountant",
    "level",
    "trust",
    "summary",
)
ROUND_KEYS = (
    "round",
    "psnr",
    "real_psnr",
    "ssim",
    "loss",
    "uplink_bytes",
    "downlink_bytes",
    "dense_uplink_bytes",
    "clients_ok",
    "clients_failed",
    "seconds",
    "skipped",
    "epsilon",
)


Kind = type | tuple[type, ...]
# The fields every record has (build_record / failed_record), with their JSON types.
_RECORD_FIELDS: dict[str, Kind] = {
    "cell": str,
    "series": str,
    "label": str,
    "runner": str,
    "status": str,
    "config": dict,
    "final": dict,
    "privacy": dict,
    "rounds": list,
}
_KIND_NAMES = {str: "a string", dict: "an object", list: "a list", int: "an integer", float: "a number"}


def _kinds(kind: Kind) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _is(value: Any, kind: Kind) -> bool:
    """``isinstance``, except that JSON's true/false is not a number."""
    return isinstance(value, kind) and (bool in _kinds(kind) or not isinstance(value, bool))


def _kind_name(kind: Kind) -> str:
    kinds = _kinds(kind)
    if float in kinds:  # (int, float): any number
        return "a number"
    return " or ".join(_KIND_NAMES.get(k, k.__name__) for k in kinds)


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def record_problem(record: Mapping[str, Any], config_types: Mapping[str, Kind] | None = None) -> str | None:
    """What makes a store record unusable (a field missing or of the wrong type), or None when it is sound.

    Parameters
    ----------
    record : Mapping
        One parsed line of ``results.jsonl``.
    config_types : Mapping, optional
        Settings the caller reads from ``record["config"]``, with their types.
    """
    for key, kind in _RECORD_FIELDS.items():
        if key not in record:
            return f"record lacks the key {key!r}"
        if not _is(record[key], kind):
            return f"record key {key!r} must be {_kind_name(kind)}, got {_short(record[key])}"
    for number, row in enumerate(record["rounds"], start=1):
        if not isinstance(row, dict) or not _is(row.get("round"), int):
            return f"row {number} of the rounds of cell {record['cell']!r} is not an object with an integer 'round'"
    for key, kind in (config_types or {}).items():
        if key not in record["config"]:
            return f"record of cell {record['cell']!r} lacks the setting {key!r} in its config"
        value = record["config"][key]
        if not _is(value, kind):
            return f"setting {key!r} of cell {record['cell']!r} must be {_kind_name(kind)}, got {_short(value)}"
    return None


def _hashed_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    defaults = RunConfig().to_dict()
    return {k: v for k, v in sorted(config.items()) if k not in NOT_HASHED and not (k in defaults and v == defaults[k])}


def cell_id(runner: str, config: Mapping[str, Any]) -> str:
    """Stable 12-hex-digit id of a cell: SHA-256 of the runner and the settings that differ from the defaults.

    Settings at their default (and out-dir, resume) are left out, so a new setting with a default does not change
    the id of any cell: a store written before it still knows which cells are done.
    """
    blob = json.dumps({"runner": runner, "config": _hashed_settings(config)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def series_key(runner: str, config: Mapping[str, Any]) -> str:
    """Id of the cell's configuration without its seed: the cells that are averaged together in reports."""
    return cell_id(runner, {k: v for k, v in config.items() if k != "seed"})


def _config_of(cfg: RunConfig | Mapping[str, Any]) -> dict[str, Any]:
    """Every setting of a cell as a record keeps it (all of them, defaults included; not out-dir or resume)."""
    values = cfg.to_dict() if isinstance(cfg, RunConfig) else dict(cfg)
    return {k: v for k, v in sorted(values.items()) if k not in NOT_HASHED}


def _identity(cell: Mapping[str, Any]) -> dict[str, Any]:
    config = _config_of(cell["config"])
    return {
        "schema": RECORD_SCHEMA,
        "cell": cell["id"],
        "series": series_key(cell["runner"], config),
        "label": cell["label"],
        "runner": cell["runner"],
        "config": config,
    }


def build_record(
    cell: Mapping[str, Any], result: RunResult | Mapping[str, Any], *, wall_seconds: float
) -> dict[str, Any]:
    """The store record of a finished cell from its result.

    Parameters
    ----------
    cell : Mapping
        ``id``, ``runner``, ``label`` and ``config`` (a RunConfig or kebab-case mapping) of the cell.
    result : RunResult or Mapping
        Its result, or the parsed ``result.json`` (read with :meth:`RunResult.from_dict`).
    wall_seconds : float
        Wall-clock time of the whole cell, process start-up included.
    """
    run = result if isinstance(result, RunResult) else RunResult.from_dict(result)
    return {
        **_identity(cell),
        "status": "ok",
        "error": None,
        "run_status": run.status,
        "final": {k: run.final.get(k) for k in FINAL_KEYS},
        "rounds": [{k: getattr(row, k) for k in ROUND_KEYS} for row in run.rounds],
        "privacy": {
            **{k: run.privacy.get(k) for k in PRIVACY_KEYS},
            "ledger_entries": len(run.privacy.get("ledger", [])),
        },
        "wall_seconds": round(float(wall_seconds), 3),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def failed_record(cell: Mapping[str, Any], error: str, *, wall_seconds: float) -> dict[str, Any]:
    """The store record of a cell that failed: its identity and the error, no metrics."""
    return {
        **_identity(cell),
        "status": "failed",
        "error": error,
        "run_status": None,
        "final": {},
        "rounds": [],
        "privacy": {},
        "wall_seconds": round(float(wall_seconds), 3),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
