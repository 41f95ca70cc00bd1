"""The results store of a sweep: one JSON record per cell in ``results.jsonl``, and a CSV view beside it.

A record is appended with write + flush + fsync, so a killed sweep leaves every finished cell on disk and at
worst a torn last line, which ``read_records`` skips (and the next append starts on a fresh line). A cell may
have several records (a failure, then a retry); the latest one counts. ``results.csv`` is rewritten atomically
after every cell with flat columns: identity, outcome, final metrics, every privacy parameter, every setting.
pandas reads it directly (``pandas.read_csv("results.csv")``).

Cell ids are a stable hash of the runner and the resolved settings (``out-dir`` and ``resume`` excluded), so
the same cell keeps its id across runs, machines and edits of the grid file that do not change it.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from fedcompress.config import RunConfig, upgrade_settings
from fedcompress.files import atomic_write_text

__all__ = [
    "CSV_FILE",
    "RECORD_SCHEMA",
    "STORE_FILE",
    "append_record",
    "build_record",
    "cell_id",
    "csv_rows",
    "failed_record",
    "latest_records",
    "noise_std",
    "read_records",
    "record_problem",
    "series_key",
    "write_csv",
]

STORE_FILE = "results.jsonl"
CSV_FILE = "results.csv"
RECORD_SCHEMA = 1
log = logging.getLogger("fedcompress")

_NOT_HASHED = ("out-dir", "resume")
_FINAL_KEYS = (
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
_PRIVACY_KEYS = (
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
_ROUND_KEYS = (
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


_Kind = type | tuple[type, ...]
# The fields every record has (build_record / failed_record), with their JSON types.
_RECORD_FIELDS: dict[str, _Kind] = {
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


def _kinds(kind: _Kind) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _is(value: Any, kind: _Kind) -> bool:
    """``isinstance``, except that JSON's true/false is not a number."""
    return isinstance(value, kind) and (bool in _kinds(kind) or not isinstance(value, bool))


def _kind_name(kind: _Kind) -> str:
    kinds = _kinds(kind)
    if float in kinds:  # (int, float): any number
        return "a number"
    return " or ".join(_KIND_NAMES.get(k, k.__name__) for k in kinds)


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def record_problem(record: Mapping[str, Any], config_types: Mapping[str, _Kind] | None = None) -> str | None:
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
    return {
        k: v for k, v in sorted(config.items()) if k not in _NOT_HASHED and not (k in defaults and v == defaults[k])
    }


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
    return {k: v for k, v in sorted(values.items()) if k not in _NOT_HASHED}


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


def build_record(cell: Mapping[str, Any], result: Mapping[str, Any], *, wall_seconds: float) -> dict[str, Any]:
    """The store record of a finished cell from its ``result.json`` contents.

    Parameters
    ----------
    cell : Mapping
        ``id``, ``runner``, ``label`` and ``config`` (a RunConfig or kebab-case mapping) of the cell.
    result : Mapping
        The parsed ``result.json`` (see ``fedcompress.federation.results``).
    wall_seconds : float
        Wall-clock time of the whole cell, process start-up included.
    """
    privacy = dict(result.get("privacy") or {})
    return {
        **_identity(cell),
        "status": "ok",
        "error": None,
        "run_status": result.get("status"),
        "final": {k: (result.get("final") or {}).get(k) for k in _FINAL_KEYS},
        "rounds": [{k: row.get(k) for k in _ROUND_KEYS} for row in result.get("rounds", [])],
        "privacy": {
            **{k: privacy.get(k) for k in _PRIVACY_KEYS},
            "ledger_entries": len(privacy.get("ledger", [])),
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


def append_record(store_dir: str | Path, record: Mapping[str, Any]) -> None:
    """Append one record as one line of ``results.jsonl``: write, flush, fsync (never a partial old line)."""
    path = Path(store_dir) / STORE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(record, sort_keys=False) + "\n"
    with open(path, "ab+") as handle:
        handle.seek(0, os.SEEK_END)
        if handle.tell() > 0:  # a torn last line from a killed writer must not swallow this record
            handle.seek(-1, os.SEEK_END)
            if handle.read(1) != b"\n":
                line = "\n" + line
        handle.write(line.encode())
        handle.flush()
        os.fsync(handle.fileno())


def read_records(
    store_dir: str | Path,
    *,
    strict: bool = False,
    config_types: Mapping[str, _Kind] | None = None,
) -> list[dict[str, Any]]:
    """Every record in the store, in file order.

    Lines that are not a complete JSON record (a torn line of a killed write) or of another schema are skipped
    with a warning. A schema-1 record with a field missing or mistyped (see :func:`record_problem`) is skipped
    with a warning too, or, with ``strict``, raises ``ValueError`` naming the file, the line and the field.
    """
    path = Path(store_dir) / STORE_FILE
    if not path.is_file():
        return []
    records = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            log.warning("%s line %d is not a complete record (a killed write?); skipped", path, number)
            continue
        if not (isinstance(record, dict) and record.get("schema") == RECORD_SCHEMA and "cell" in record):
            log.warning("%s line %d is not a schema-%d record; skipped", path, number, RECORD_SCHEMA)
            continue
        if isinstance(record.get("config"), dict):
            record["config"] = upgrade_settings(record["config"])  # values older versions spelt differently
        problem = record_problem(record, config_types)
        if problem is not None and strict:
            raise ValueError(f"{path} line {number}: {problem}; fix or delete that line")
        if problem is not None:
            log.warning("%s line %d: %s; skipped", path, number, problem)
            continue
        records.append(record)
    return records


def latest_records(records: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """The last record of each cell, keyed by cell id, in order of first appearance.

    The id is recomputed from the record's runner and settings (:func:`cell_id`), so records written under an
    older id scheme, or before a setting existed, still match their cell; ``record["cell"]`` keeps naming the
    cell's folder.
    """
    latest: dict[str, dict[str, Any]] = {}
    for record in records:
        latest[cell_id(record["runner"], record["config"])] = dict(record)
    return latest


def noise_std(privacy: Mapping[str, Any]) -> float | None:
    """Standard deviation of the Gaussian noise on a clipped sum: noise multiplier x clip norm."""
    z, c = privacy.get("noise_multiplier"), privacy.get("clip_norm")
    return None if z is None or c is None else float(z) * float(c)


def csv_rows(records: Iterable[Mapping[str, Any]]) -> tuple[list[str], list[dict[str, Any]]]:
    """Flat columns (identity, outcome, final_*, privacy_*, every setting) and one row per record.

    Every column is snake_case, settings too (``num_rounds`` for ``num-rounds``), like ``rounds.csv``.
    """
    rows: list[dict[str, Any]] = []
    setting_keys: list[str] = [k for k in RunConfig.keys() if k not in _NOT_HASHED]  # noqa: SIM118
    for record in records:
        privacy = record.get("privacy") or {}
        row: dict[str, Any] = {
            k: record.get(k)
            for k in (
                "cell",
                "series",
                "label",
                "runner",
                "status",
                "run_status",
                "error",
                "wall_seconds",
                "finished_at",
            )
        }
        row.update({f"final_{k}": (record.get("final") or {}).get(k) for k in _FINAL_KEYS})
        row.update({f"privacy_{k}": privacy.get(k) for k in _PRIVACY_KEYS if k != "summary"})
        row["privacy_noise_std"] = noise_std(privacy)
        row.update({k.replace("-", "_"): record["config"].get(k) for k in setting_keys})
        rows.append(row)
    columns = list(rows[0]) if rows else []
    return columns, rows


def write_csv(store_dir: str | Path, records: Iterable[Mapping[str, Any]] | None = None) -> Path:
    """Rewrite ``results.csv`` atomically from the latest record of each cell; returns its path."""
    store_dir = Path(store_dir)
    chosen = latest_records(read_records(store_dir) if records is None else records).values()
    columns, rows = csv_rows(chosen)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    path = store_dir / CSV_FILE
    atomic_write_text(path, buffer.getvalue())
    return path
