"""The results store of a sweep: one JSON record per cell in ``results.jsonl``, and a CSV view beside it.

A record (:mod:`simulations.sweep.records`) is appended with write + flush + fsync, so a killed sweep leaves
every finished cell on disk and at worst a torn last line, which ``read_records`` skips (and the next append
starts on a fresh line). A cell may have several records (a failure, then a retry); the latest one counts.
``results.csv`` is rewritten atomically after every cell with flat columns: identity, outcome, final metrics,
every privacy parameter, every setting. pandas reads it directly (``pandas.read_csv("results.csv")``).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from fedcompress.config import RunConfig, upgrade_settings
from fedcompress.files import atomic_write_text
from simulations.sweep.records import (
    FINAL_KEYS,
    NOT_HASHED,
    PRIVACY_KEYS,
    RECORD_SCHEMA,
    Kind,
    cell_id,
    record_problem,
)

__all__ = [
    "CSV_FILE",
    "STORE_FILE",
    "append_record",
    "csv_rows",
    "latest_records",
    "noise_std",
    "read_records",
    "write_csv",
]

STORE_FILE = "results.jsonl"
CSV_FILE = "results.csv"
log = logging.getLogger("fedcompress")


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
    config_types: Mapping[str, Kind] | None = None,
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
    setting_keys: list[str] = [k for k in RunConfig.keys() if k not in NOT_HASHED]  # noqa: SIM118
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
        row.update({f"final_{k}": (record.get("final") or {}).get(k) for k in FINAL_KEYS})
        row.update({f"privacy_{k}": privacy.get(k) for k in PRIVACY_KEYS if k != "summary"})
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
