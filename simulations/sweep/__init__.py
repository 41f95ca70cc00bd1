"""Sweeps: a resumable grid of federations, one process per cell, into a results store.

``fedcompress sweep GRID.toml --out DIR`` (:mod:`simulations.commands.sweep`) parses the grid
(:mod:`~simulations.sweep.grid`), runs every cell the store lacks in its own process session
(:mod:`~simulations.sweep.runner`, :mod:`~simulations.sweep.cell`) under the folder's lock
(:mod:`~simulations.sweep.lock`), and appends one record per cell (:mod:`~simulations.sweep.records`) to
``results.jsonl`` with a CSV view beside it (:mod:`~simulations.sweep.store`).
"""

from simulations.sweep.cell import RUNNERS, cell_error, check_runner_config, read_cell_result, run_cell_here
from simulations.sweep.grid import AUDIT_DIR, Cell, Sweep, load_grid
from simulations.sweep.lock import SWEEP_LOCK, SweepLock
from simulations.sweep.progress import ROUND_LINE, Progress, duration
from simulations.sweep.records import (
    FINAL_KEYS,
    NOT_HASHED,
    PRIVACY_KEYS,
    RECORD_SCHEMA,
    ROUND_KEYS,
    Kind,
    build_record,
    cell_id,
    failed_record,
    record_problem,
    series_key,
)
from simulations.sweep.runner import SweepRunner, run_sweep
from simulations.sweep.store import (
    CSV_FILE,
    STORE_FILE,
    append_record,
    csv_rows,
    latest_records,
    noise_std,
    read_records,
    write_csv,
)

__all__ = [
    "AUDIT_DIR",
    "CSV_FILE",
    "FINAL_KEYS",
    "NOT_HASHED",
    "PRIVACY_KEYS",
    "RECORD_SCHEMA",
    "ROUND_KEYS",
    "ROUND_LINE",
    "RUNNERS",
    "STORE_FILE",
    "SWEEP_LOCK",
    "Cell",
    "Kind",
    "Progress",
    "Sweep",
    "SweepLock",
    "SweepRunner",
    "append_record",
    "build_record",
    "cell_error",
    "cell_id",
    "check_runner_config",
    "csv_rows",
    "duration",
    "failed_record",
    "latest_records",
    "load_grid",
    "noise_std",
    "read_cell_result",
    "read_records",
    "record_problem",
    "run_cell_here",
    "run_sweep",
    "series_key",
    "write_csv",
]
