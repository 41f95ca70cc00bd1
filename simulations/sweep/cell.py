"""One cell of a sweep, in its own process: what runs there, and the files it leaves for the sweep.

Runners (the ``runner`` of a grid's ``[[cells]]``):

- ``simulate``: fedcompress itself (:func:`simulations.run.simulate`). Plain FedAvg in float32 is this runner
  with ``dp = "none"`` and ``codec = "none"``.
- ``flower-dp``: Flower's own DP wrapper as a side-by-side baseline (:mod:`simulations.baselines.flower_dp`).

The sweep writes ``DIR/cell.json`` and starts ``python -m simulations.sweep --cell DIR``, which calls
:func:`run_cell_here`: it runs the cell and, on failure, writes ``DIR/error.txt`` and exits non-zero; the sweep
then reads ``result.json`` or the error back (:func:`read_cell_result`, :func:`cell_error`). SIGTERM (the sweep
stopping it, or Linux's parent-death signal when the sweep dies) and a watchdog on the parent end the cell's
whole session (:func:`simulations.processes.tie_to_parent`), so a stopped or killed sweep leaves no federation
running.
"""

from __future__ import annotations

import json
import traceback
from pathlib import Path

from fedcompress.config import RunConfig
from fedcompress.errors import ConfigError
from fedcompress.federation.records import RunResult
from fedcompress.federation.results import RESULT_FILE
from simulations.baselines.flower_dp import check_flower_dp_config, run_flower_dp
from simulations.processes import tie_to_parent

__all__ = ["RUNNERS", "cell_error", "check_runner_config", "read_cell_result", "run_cell_here"]

RUNNERS = ("simulate", "flower-dp")
_STOPPED = "cell: stopped by signal {signum}; ending its processes (a rerun resumes from the checkpoint)"


def check_runner_config(runner: str, cfg: RunConfig) -> None:
    """Refuse settings a runner cannot honour, naming the key (``ConfigError``)."""
    if runner == "simulate":
        return
    if runner != "flower-dp":
        raise ConfigError(f"runner {runner!r} is not allowed; choose 'simulate' or 'flower-dp'")
    check_flower_dp_config(cfg)


def run_cell_here(folder: Path) -> int:
    """Run the cell described by ``folder/cell.json`` in this process; 0 on success, 1 on failure.

    The cell ends, with every process it started, on SIGTERM and when its sweep dies.
    """
    tie_to_parent(_STOPPED)
    try:
        spec = json.loads((folder / "cell.json").read_text())
        cfg = RunConfig.from_mapping(spec["config"])
        check_runner_config(spec["runner"], cfg)
        cpus = float(spec.get("cpus_per_client", 1.0))
        if spec["runner"] == "flower-dp":
            run_flower_dp(cfg, cpus_per_client=cpus)
        else:
            from simulations.run.simulate import simulate

            simulate(cfg, cpus_per_client=cpus, quiet=True)
    except Exception as e:  # any failure of the cell becomes its record's error
        traceback.print_exc()
        text = f"{type(e).__name__}: {e}".strip()
        (folder / "error.txt").write_text(text[:4000] + "\n")
        return 1
    return 0


def cell_error(folder: Path, code: int) -> str:
    """Why the cell process in ``folder`` exited with ``code``: its ``error.txt``, else the end of its log."""
    error_file = folder / "error.txt"
    if error_file.is_file():
        return error_file.read_text().strip()
    tail = (folder / "log.txt").read_text().strip().splitlines()[-5:] if (folder / "log.txt").is_file() else []
    return f"cell process exited with code {code}: " + " | ".join(tail)


def read_cell_result(folder: Path) -> tuple[RunResult | None, str | None]:
    """The cell's result when its run finished (completed or budget exhausted), else the error."""
    path = folder / RESULT_FILE
    try:
        result = json.loads(path.read_text())
    except FileNotFoundError:
        return None, f"the cell wrote no {path.name}"
    except (OSError, json.JSONDecodeError) as e:
        return None, f"{path} is unreadable: {e}"
    if not isinstance(result, dict) or result.get("status") not in ("completed", "budget_exhausted"):
        status = result.get("status") if isinstance(result, dict) else None
        return None, f"run ended with status {status!r}: {result.get('message', '') if status else ''}"
    try:
        return RunResult.from_dict(result), None
    except ValueError as e:
        return None, f"{path} is unreadable: {e}"
