"""``fedcompress sweep GRID.toml --out DIR``: a resumable grid of federations, one subprocess per cell.

A grid file has up to six tables (see ``simulations/grids/`` for ready ones)::

    [sweep]                 # optional: name, description, cpus-per-client, cell-timeout (seconds, 0 = none)
    [base]                  # settings every cell shares (any RunConfig key)
    [grid]                  # key = [values, ...]; the cells are the product of all lists
    [[cells]]               # extra cells over [base]: label, runner ("simulate" | "flower-dp"), settings;
                            # list values expand, so `seed = [0, 1, 2]` gives three cells
    [[skip]]                # a rule: skip grid cells whose settings match every key (value or list of values)
    [audit]                 # optional: after the cells, one leakage audit (``fedcompress audit`` settings;
                            # an empty table takes the defaults) into DIR/audit/, shown by the report

Meaningless combinations collapse: with ``dp = "none"`` every privacy setting returns to its default, with
``dp = "sample"`` the client-level ones do, and cells that become identical run once. Every cell is validated
by ``RunConfig`` before anything runs. Each cell runs in its own process (``python -m simulations.sweep --cell
DIR``), so a crash, a leak or a stuck Ray cluster ends with that cell; its record goes to the store either
way, and rerunning the same command skips every recorded cell.

Stopping: SIGINT (Ctrl-C) or SIGTERM to the sweep ends the running cell's whole session (the cell and its Ray
processes), waits until it is gone, releases the folder's lock (``.sweep.lock``) and exits with 130; a SIGKILLed
sweep takes its cell along too (the cell gets SIGTERM from Linux when its parent dies, and watches its parent).
An interrupted cell has no record, so a rerun runs it again: from its own checkpoint (``resume = true``) when its
folder holds one, from the start otherwise. A cell retried after a recorded failure (``--retry-failed``) starts
afresh, since what failed may be in its saved state.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from fedcompress.config import RunConfig, parse_overrides, toml_document
from fedcompress.errors import ConfigError, FedCompressError
from fedcompress.files import FolderLock, atomic_write_text
from simulations.processes import death_signal_setter, interrupt_on_signals, signals_held, stop_session

__all__ = ["RUNNERS", "Cell", "Sweep", "SweepRunner", "load_grid", "main", "register", "run_sweep"]

RUNNERS = ("simulate", "flower-dp")
_TABLES = ("sweep", "base", "grid", "cells", "skip", "audit")
AUDIT_DIR = "audit"
_SWEEP_KEYS = {"name": str, "description": str, "cpus-per-client": float, "cell-timeout": float}
_PRIVATE_KEYS = (
    "dp-noise",
    "pre-noise",
    "target-epsilon",
    "noise-multiplier",
    "clip-norm",
    "delta",
    "accountant",
    "max-epsilon",
    "dp-randomness",
)
_CLIENT_LEVEL_KEYS = ("dp-noise", "pre-noise")
_SWEEP_OWNED = ("out-dir", "resume")
SWEEP_LOCK = ".sweep.lock"
# What a cell folder holds once its run has sent a round: with one of them, an interrupted cell resumes.
_RUN_STATE = ("checkpoint.pt", "privacy-state.json")  # fedcompress.federation.checkpoint (which imports torch)
_STOP_GRACE_S = 10.0  # SIGTERM to a cell's session, then this long, then SIGKILL


@dataclasses.dataclass(frozen=True)
class Cell:
    """One federation of a sweep: its stable id, a readable label, the runner and the validated settings."""

    id: str
    label: str
    runner: str
    config: RunConfig

    def as_mapping(self) -> dict[str, Any]:
        """JSON-safe form (what ``cell.json`` and the store hold)."""
        return {"id": self.id, "label": self.label, "runner": self.runner, "config": self.config.to_dict()}


@dataclasses.dataclass(frozen=True)
class Sweep:
    """A parsed grid file: its cells in run order and the options from ``[sweep]``."""

    name: str
    description: str
    cells: tuple[Cell, ...]
    cpus_per_client: float = 1.0
    cell_timeout: float = 0.0
    skipped_by_rule: int = 0
    collapsed: int = 0
    audit: Mapping[str, Any] | None = None  # validated ``[audit]`` settings (kebab-case), or no audit


# ---------------------------------------------------------------------------------------------- grid files
def _fail(where: str, message: str) -> ConfigError:
    return ConfigError(f"{where}: {message}")


def _table(data: Mapping[str, Any], name: str, where: str) -> dict[str, Any]:
    value = data.get(name, {})
    if not isinstance(value, dict):
        raise _fail(where, f"[{name}] must be a table of key = value")
    return dict(value)


def _check_setting_keys(values: Mapping[str, Any], where: str) -> None:
    known = set(RunConfig.keys())
    for key in values:
        name = str(key).replace("_", "-")
        if name in _SWEEP_OWNED:
            raise _fail(where, f"setting {key!r} is chosen by the sweep (one folder per cell); remove it")
        if name not in known:
            raise _fail(where, f"unknown setting {key!r}; allowed settings: {', '.join(RunConfig.keys())}")


def _sweep_options(data: Mapping[str, Any], where: str) -> dict[str, Any]:
    options = _table(data, "sweep", where)
    for key, value in options.items():
        if key not in _SWEEP_KEYS:
            raise _fail(where, f"unknown [sweep] key {key!r}; allowed: {', '.join(_SWEEP_KEYS)}")
        kind = _SWEEP_KEYS[key]
        if kind is float and (isinstance(value, bool) or not isinstance(value, int | float) or value < 0):
            raise _fail(where, f"[sweep] {key!r} must be a number >= 0, got {value!r}")
        if kind is str and not isinstance(value, str):
            raise _fail(where, f"[sweep] {key!r} must be a string, got {value!r}")
    return options


def _axes(values: Mapping[str, Any], where: str, *, lists_only: bool) -> list[tuple[str, list[Any]]]:
    axes = []
    for key, value in values.items():
        if isinstance(value, list):
            if not value:
                raise _fail(where, f"{key!r} has an empty list of values")
            axes.append((key, value))
        elif lists_only:
            raise _fail(where, f"[grid] {key!r} must be a list of values, got {value!r}")
        else:
            axes.append((key, [value]))
    return axes


def _same(a: Any, b: Any) -> bool:
    numbers = (int, float)
    if isinstance(a, numbers) and isinstance(b, numbers) and not isinstance(a, bool) and not isinstance(b, bool):
        return float(a) == float(b)
    return bool(a == b)


def _matches(rule: Mapping[str, Any], settings: Mapping[str, Any]) -> bool:
    for key, wanted in rule.items():
        options = wanted if isinstance(wanted, list) else [wanted]
        if not any(_same(settings[key.replace("_", "-")], option) for option in options):
            return False
    return True


def _canonical(cfg: RunConfig) -> RunConfig:
    """Return privacy settings that cannot matter for this cell to their defaults (so duplicates collapse)."""
    defaults = RunConfig().to_dict()
    irrelevant = _PRIVATE_KEYS if cfg.dp == "none" else _CLIENT_LEVEL_KEYS if cfg.dp == "sample" else ()
    return cfg.replace(**{k.replace("-", "_"): defaults[k] for k in irrelevant})


def _label(axes: Sequence[tuple[str, Any]], cfg: RunConfig) -> str:
    dropped = _PRIVATE_KEYS if cfg.dp == "none" else _CLIENT_LEVEL_KEYS if cfg.dp == "sample" else ()
    parts = []
    for key, _ in axes:
        name = key.replace("_", "-")
        if name == "seed" or name in dropped:
            continue
        value = cfg.to_dict()[name]
        parts.append(f"{name}={value:g}" if isinstance(value, float) else f"{name}={value}")
    return " ".join(parts) or "base"


def _build(settings: Mapping[str, Any], where: str) -> RunConfig:
    try:
        return RunConfig.from_mapping(settings)
    except ConfigError as e:
        raise _fail(where, str(e)) from e


def _grid_cells(
    data: Mapping[str, Any],
    base: dict[str, Any],
    overrides: Mapping[str, Any],
    where: str,
) -> tuple[list[tuple[str, str, RunConfig]], int]:
    grid = _table(data, "grid", where)
    _check_setting_keys(grid, f"{where} [grid]")
    rules = data.get("skip", [])
    if not isinstance(rules, list) or not all(isinstance(r, dict) and r for r in rules):
        raise _fail(where, "[[skip]] must be a list of non-empty tables")
    for number, rule in enumerate(rules, start=1):
        _check_setting_keys(rule, f"{where} [[skip]] #{number}")
    axes = _axes(grid, f"{where} [grid]", lists_only=True)
    out: list[tuple[str, str, RunConfig]] = []
    skipped = 0
    if not axes and data.get("cells"):
        return out, 0
    for values in itertools.product(*(v for _, v in axes)):
        point = dict(zip((k for k, _ in axes), values, strict=True))
        desc = ", ".join(f"{k}={v!r}" for k, v in point.items()) or "base"
        cfg = _build({**base, **point, **overrides}, f"{where} [grid] cell ({desc})")
        if any(_matches(rule, cfg.to_dict()) for rule in rules):
            skipped += 1
            continue
        out.append(("simulate", _label(axes, cfg), cfg))
    return out, skipped


def _explicit_cells(
    data: Mapping[str, Any],
    base: dict[str, Any],
    overrides: Mapping[str, Any],
    where: str,
) -> list[tuple[str, str, RunConfig]]:
    cells = data.get("cells", [])
    if not isinstance(cells, list) or not all(isinstance(c, dict) for c in cells):
        raise _fail(where, "[[cells]] must be a list of tables")
    out: list[tuple[str, str, RunConfig]] = []
    for number, table in enumerate(cells, start=1):
        spec = dict(table)
        label, runner = spec.pop("label", None), spec.pop("runner", "simulate")
        here = f"{where} [[cells]] #{number}" + (f" ({label})" if label else "")
        if runner not in RUNNERS:
            raise _fail(here, f"runner {runner!r} is not allowed; choose one of {RUNNERS}")
        if label is not None and not isinstance(label, str):
            raise _fail(here, f"label must be a string, got {label!r}")
        _check_setting_keys(spec, here)
        axes = _axes(spec, here, lists_only=False)
        for values in itertools.product(*(v for _, v in axes)):
            cfg = _build({**base, **dict(zip((k for k, _ in axes), values, strict=True)), **overrides}, here)
            out.append((runner, label or _label(axes, cfg), cfg))
    return out


def load_grid(path: str | Path, overrides: Mapping[str, Any] | None = None) -> Sweep:
    """Parse and validate a grid file into cells (``overrides`` are ``--set`` items applied to every cell).

    Raises
    ------
    ConfigError
        Naming the file, the table and the key, for anything unknown, mistyped or out of range.
    """
    from fedcompress.audit.settings import AuditConfig
    from simulations.baselines import check_runner_config
    from simulations.store import cell_id

    where = str(path)
    try:
        data = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"cannot read grid file {where!r}: {e}") from e
    for key in data:
        if key not in _TABLES:
            raise _fail(where, f"unknown table {key!r}; allowed: {', '.join(_TABLES)}")
    options = _sweep_options(data, where)
    base = _table(data, "base", where)
    _check_setting_keys(base, f"{where} [base]")
    overrides = dict(overrides or {})
    _check_setting_keys(overrides, "--set")
    planned, skipped = _grid_cells(data, base, overrides, where)
    planned += _explicit_cells(data, base, overrides, where)
    cells: dict[str, Cell] = {}
    for runner, label, cfg in planned:
        cfg = _canonical(cfg)
        try:
            check_runner_config(runner, cfg)
        except ConfigError as e:
            raise _fail(f"{where} cell {label!r}", str(e)) from e
        key = cell_id(runner, cfg.to_dict())
        cells.setdefault(key, Cell(key, label, runner, cfg))
    audit = None
    if "audit" in data:
        try:
            audit = AuditConfig.from_mapping(_table(data, "audit", where)).to_dict()
        except ConfigError as e:
            raise _fail(f"{where} [audit]", str(e)) from e
    return Sweep(
        name=str(options.get("name", Path(path).stem)),
        description=str(options.get("description", "")),
        cells=tuple(cells.values()),
        cpus_per_client=float(options.get("cpus-per-client", 1.0)),
        cell_timeout=float(options.get("cell-timeout", 0.0)),
        skipped_by_rule=skipped,
        collapsed=len(planned) - len(cells),
        audit=audit,
    )


# ---------------------------------------------------------------------------------------------- running
# BLAS/OpenMP pools of one thread in each cell: clients already train on one torch thread each, and OpenBLAS's
# own pool was seen spinning for 14 minutes inside one numpy dot in a cell's server thread (17 CPU-minutes,
# no progress), a hang that single-threaded BLAS cannot have.
_ONE_THREAD = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
_ROUND_LINE = re.compile(r"^\[round (\d+)/(\d+)\]\s*(.*)$")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = max(0, round(seconds))
    return (
        f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"
    )


class _Progress:
    """ETA over the sweep, in seconds per federation round measured on the cells run so far."""

    def __init__(self, pending: Sequence[Cell]) -> None:
        self.total_rounds = sum(c.config.num_rounds for c in pending)
        self.done_rounds = 0
        self.spent = 0.0
        self.cell_started = time.monotonic()
        self.cell_rounds = 0

    def start_cell(self) -> None:
        self.cell_started, self.cell_rounds = time.monotonic(), 0

    def round_done(self, k: int) -> None:
        self.cell_rounds = k

    def finish_cell(self, cell: Cell) -> None:
        self.spent += time.monotonic() - self.cell_started
        self.done_rounds += cell.config.num_rounds
        self.start_cell()  # nothing of the next cell has run yet

    def eta(self) -> float | None:
        elapsed = time.monotonic() - self.cell_started
        rounds, seconds = self.done_rounds + self.cell_rounds, self.spent + elapsed
        if rounds == 0:
            return None
        return seconds / rounds * (self.total_rounds - rounds)


class SweepRunner:
    """Runs the pending cells of a sweep one after another, each in a child process, into the store.

    Parameters
    ----------
    sweep : Sweep
        The parsed grid.
    out_dir : Path
        The sweep folder (store, CSV view, one folder per cell under ``cells/``).
    retry_failed : bool
        Run cells whose latest record is a failure again (default: keep the failure, skip the cell).
    verbose : bool
        Echo every line of the children's output (it always goes to ``cells/<id>/log.txt``).
    cpus_per_client, cell_timeout : float | None
        Override the grid's ``[sweep]`` values; a timeout of 0 means none.
    command : Callable | None
        Builds the child's command line from the cell folder (tests swap in a fake federation).
    """

    def __init__(
        self,
        sweep: Sweep,
        out_dir: Path,
        *,
        retry_failed: bool = False,
        verbose: bool = False,
        cpus_per_client: float | None = None,
        cell_timeout: float | None = None,
        command: Callable[[Path], list[str]] | None = None,
    ) -> None:
        self.sweep, self.out_dir = sweep, Path(out_dir).resolve()
        self.retry_failed, self.verbose = retry_failed, verbose
        self.cpus_per_client = sweep.cpus_per_client if cpus_per_client is None else float(cpus_per_client)
        self.cell_timeout = sweep.cell_timeout if cell_timeout is None else float(cell_timeout)
        self.command = command or (lambda folder: [sys.executable, "-m", "simulations.sweep", "--cell", str(folder)])

    def pending(self) -> list[Cell]:
        """Cells without a record (or, with ``retry_failed``, whose latest record is a failure)."""
        from simulations.store import latest_records, read_records

        latest = latest_records(read_records(self.out_dir))
        keep = ("ok",) if self.retry_failed else ("ok", "failed")
        return [c for c in self.sweep.cells if latest.get(c.id, {}).get("status") not in keep]

    def run(self) -> int:
        """Run what is pending; returns 0 when every cell of the sweep has an ok record, else 1."""
        from simulations.store import latest_records, read_records

        if self.out_dir.exists() and not self.out_dir.is_dir():
            raise ConfigError(f"--out {str(self.out_dir)!r} is a file, not a folder; choose a folder for the sweep")
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"cannot create the sweep folder {str(self.out_dir)!r}: {e.strerror or e}") from e
        with _SweepLock(self.out_dir) as lock, interrupt_on_signals():
            latest = latest_records(read_records(self.out_dir))
            pending = self.pending()
            done = len(self.sweep.cells) - len(pending)
            print(
                f"sweep {self.sweep.name!r}: {len(self.sweep.cells)} cells, {done} already in the store, "
                f"{len(pending)} to run -> {self.out_dir}",
                flush=True,
            )
            progress = _Progress(pending)
            for number, cell in enumerate(pending, start=1):
                position = f"{done + number}/{len(self.sweep.cells)}"
                self._run_cell(cell, position, progress, lock.fd, fresh=cell.id in latest)
            audit_ok = self._run_audit()
        latest = latest_records(read_records(self.out_dir))
        failed = [c for c in self.sweep.cells if latest.get(c.id, {}).get("status") != "ok"]
        print(
            f"sweep {self.sweep.name!r} done: {len(self.sweep.cells) - len(failed)} ok, {len(failed)} failed "
            f"(store {self.out_dir / 'results.jsonl'})",
            flush=True,
        )
        return 1 if failed or not audit_ok else 0

    def _run_audit(self) -> bool:
        """Run the grid's ``[audit]`` in a child process into ``DIR/audit/``; False when it failed.

        Skipped when that folder already holds an ``audit.json`` of the same settings (a rerun resumes).
        """
        if self.sweep.audit is None:
            return True
        folder = self.out_dir / AUDIT_DIR
        try:
            done = json.loads((folder / "audit.json").read_text()).get("config") == dict(self.sweep.audit)
        except (OSError, ValueError, AttributeError):
            done = False
        if done:
            print(f"audit: already in {folder}", flush=True)
            return True
        settings = folder / "audit.toml"
        atomic_write_text(settings, toml_document(self.sweep.audit))
        print(f"audit: running -> {folder}", flush=True)
        command = [sys.executable, "-m", "fedcompress.cli", "audit", "--config", str(settings), "--out", str(folder)]
        child = _start(command, env={**os.environ, **dict.fromkeys(_ONE_THREAD, "1")})
        code = _wait(child, None, "audit")
        if code != 0:
            print(f"audit: FAILED with exit code {code}", flush=True)
        return code == 0

    # ------------------------------------------------------------------ one cell
    def _prepare_folder(self, cell: Cell, *, fresh: bool) -> tuple[Path, bool]:
        """The cell's folder and whether its run resumes: an interrupted run of ours continues from its checkpoint.

        ``fresh`` (the cell has a failure on record and is being retried) and the ``flower-dp`` runner (which
        keeps no checkpoint) start from an empty folder, as does a cell that never finished sending a round.
        """
        folder = self.out_dir / "cells" / cell.id
        resume = not fresh and cell.runner == "simulate" and any((folder / name).is_file() for name in _RUN_STATE)
        if folder.exists() and not resume:
            shutil.rmtree(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "error.txt").unlink(missing_ok=True)
        spec = cell.as_mapping()
        spec["config"]["out-dir"] = str(folder)
        spec["config"]["resume"] = resume
        spec["cpus_per_client"] = self.cpus_per_client
        atomic_write_text(folder / "cell.json", json.dumps(spec, indent=2) + "\n")
        return folder, resume

    def _run_cell(self, cell: Cell, position: str, progress: _Progress, lock_fd: int, *, fresh: bool) -> None:
        from simulations.store import append_record, build_record, failed_record, write_csv

        folder, resume = self._prepare_folder(cell, fresh=fresh)
        print(
            f"[cell {position}] {cell.id} {cell.runner} seed={cell.config.seed}: {cell.label} "
            f"{'(resuming its interrupted run from its checkpoint) ' if resume else ''}"
            f"(sweep ETA {_duration(progress.eta())})",
            flush=True,
        )
        progress.start_cell()
        started = time.monotonic()
        error = self._spawn(folder, position, progress, lock_fd, resume=resume)
        wall = time.monotonic() - started
        result = None
        if error is None:
            result, error = _read_cell_result(folder)
        record = (
            build_record(cell.as_mapping(), result, wall_seconds=wall)
            if result is not None
            else failed_record(cell.as_mapping(), error or "unknown failure", wall_seconds=wall)
        )
        append_record(self.out_dir, record)
        write_csv(self.out_dir)
        progress.finish_cell(cell)
        if record["status"] == "ok":
            final, eps = record["final"], record["privacy"].get("epsilon")
            eps_text = "" if eps is None else f" eps={eps:.3g}"
            uplink = "withheld" if final["uplink_bytes"] is None else f"{final['uplink_bytes']} B"
            print(
                f"[cell {position}] ok in {_duration(wall)}: psnr={final['psnr']:.2f} dB{eps_text} "
                f"uplink={uplink} (sweep ETA {_duration(progress.eta())})",
                flush=True,
            )
        else:
            print(f"[cell {position}] FAILED in {_duration(wall)}: {record['error']}", flush=True)

    def _spawn(self, folder: Path, position: str, progress: _Progress, lock_fd: int, *, resume: bool) -> str | None:
        """Run the child; stream its output to log.txt (and round lines to the terminal). Returns an error.

        The child leads its own session and holds the sweep's lock too (so an orphan still holds it). An
        interrupt (Ctrl-C, SIGTERM) ends its whole session before it propagates.
        """
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
        env["PYTHONUNBUFFERED"] = "1"
        for name in _ONE_THREAD:  # a user's own setting wins
            env.setdefault(name, "1")
        with open(folder / "log.txt", "a") as log_file:  # a resumed cell keeps the log of its first attempt
            log_file.write(f"=== sweep {time.strftime('%Y-%m-%d %H:%M:%S')}: {'resume' if resume else 'start'}\n")
            log_file.flush()
            child = _start(
                self.command(folder),
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                pass_fds=(lock_fd,),
                bufsize=1,
            )
            reader = threading.Thread(target=self._echo, args=(child, log_file, position, progress), daemon=True)
            reader.start()
            code = _wait(child, self.cell_timeout or None, f"[cell {position}]")
            reader.join(timeout=10)
        if code is None:
            return f"timed out after {self.cell_timeout:g} s (cell-timeout)"
        return None if code == 0 else _child_error(folder, code)

    def _echo(self, child: subprocess.Popen[str], log_file: Any, position: str, progress: _Progress) -> None:
        assert child.stdout is not None
        for line in child.stdout:
            log_file.write(line)
            log_file.flush()
            match = _ROUND_LINE.match(line.strip())
            if match:
                progress.round_done(int(match.group(1)))
                print(
                    f"[cell {position}] round {match.group(1)}/{match.group(2)} {match.group(3)} "
                    f"| sweep ETA {_duration(progress.eta())}",
                    flush=True,
                )
            elif self.verbose:
                print(f"  | {line.rstrip()}", flush=True)


class _SweepLock(FolderLock):
    """The sweep folder's exclusive lock, shared with the running child (``pass_fds``) so an orphan still holds it."""

    def __init__(self, out_dir: Path) -> None:
        super().__init__(out_dir, name=SWEEP_LOCK, what="sweep (or a cell it started)")


def _start(command: list[str], *, env: Mapping[str, str], **options: Any) -> subprocess.Popen[Any]:
    """Start a child in its own session that Linux SIGTERMs if this process dies (even by SIGKILL)."""
    return subprocess.Popen(command, env=env, start_new_session=True, preexec_fn=death_signal_setter(), **options)


def _wait(child: subprocess.Popen[Any], timeout: float | None, what: str) -> int | None:
    """The child's exit code, or None when it ran past ``timeout`` and was stopped.

    On an interrupt (Ctrl-C, SIGTERM) or any other error while waiting, the child's whole session is stopped
    first (further interrupts are held meanwhile), then the interrupt propagates.
    """
    try:
        return child.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        _stop(child, what)
        return None
    except BaseException:
        _stop(child, what, interrupted=True)
        raise


def _stop(child: subprocess.Popen[Any], what: str, *, interrupted: bool = False) -> None:
    """End the child's whole session (the cell and its Ray processes): SIGTERM, then SIGKILL; wait for all.

    A Ctrl-C or SIGTERM meanwhile waits for the stop to finish, then interrupts the sweep as usual.
    """
    with signals_held() as held:
        left = stop_session(child, grace=_STOP_GRACE_S)
    if left:
        print(f"{what} warning: processes {left} did not stop", file=sys.stderr, flush=True)
    elif interrupted:
        print(f"{what} interrupted: stopped it and every process it started; rerun to resume", flush=True)
    if held and not interrupted:
        raise KeyboardInterrupt(f"signal {held[0]}")


def _child_error(folder: Path, code: int) -> str:
    error_file = folder / "error.txt"
    if error_file.is_file():
        return error_file.read_text().strip()
    tail = (folder / "log.txt").read_text().strip().splitlines()[-5:] if (folder / "log.txt").is_file() else []
    return f"cell process exited with code {code}: " + " | ".join(tail)


def _read_cell_result(folder: Path) -> tuple[dict[str, Any] | None, str | None]:
    """The cell's ``result.json`` when its run finished (completed or budget exhausted), else the error."""
    path = folder / "result.json"  # fedcompress.federation.results.RESULT_FILE (importing it pulls in torch)
    try:
        result = json.loads(path.read_text())
    except FileNotFoundError:
        return None, f"the cell wrote no {path.name}"
    except (OSError, json.JSONDecodeError) as e:
        return None, f"{path} is unreadable: {e}"
    if not isinstance(result, dict) or result.get("status") not in ("completed", "budget_exhausted"):
        status = result.get("status") if isinstance(result, dict) else None
        return None, f"run ended with status {status!r}: {result.get('message', '') if status else ''}"
    return result, None


def _print_plan(sweep: Sweep) -> None:
    print(
        f"sweep {sweep.name!r}: {len(sweep.cells)} cells ({sweep.collapsed} duplicates collapsed, "
        f"{sweep.skipped_by_rule} skipped by rules)"
    )
    for cell in sweep.cells:
        c = cell.config
        print(
            f"  {cell.id}  {cell.runner:<9} seed={c.seed} rounds={c.num_rounds} clients={c.num_clients}  {cell.label}"
        )
    if sweep.audit is not None:
        print(f"  then a leakage audit into {AUDIT_DIR}/ ({sweep.audit['iterations']} iterations per attack)")


def run_sweep(sweep: Sweep, out_dir: str | Path, **options: Any) -> int:
    """Run every cell of ``sweep`` that ``out_dir``'s store lacks; options are ``SweepRunner``'s."""
    return SweepRunner(sweep, Path(out_dir), **options).run()


def _cmd_sweep(args: argparse.Namespace) -> int:
    sweep = load_grid(args.grid, parse_overrides(args.set))
    if args.dry_run:
        _print_plan(sweep)
        return 0
    return run_sweep(
        sweep,
        args.out,
        retry_failed=args.retry_failed,
        verbose=args.verbose,
        cpus_per_client=args.cpus_per_client,
        cell_timeout=args.cell_timeout,
    )


def register(subparsers: Any) -> None:
    """Add ``fedcompress sweep`` to the CLI's subparsers."""
    p = subparsers.add_parser(
        "sweep",
        help="a resumable grid of federations into a results store",
        description=__doc__.splitlines()[0],
    )
    p.add_argument("grid", help="grid file (TOML); ready ones are in simulations/grids/")
    p.add_argument("--out", required=True, help="sweep folder: results.jsonl, results.csv, cells/<id>/")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a setting in every cell")
    p.add_argument("--retry-failed", action="store_true", help="run cells whose record says failed again")
    p.add_argument("--cell-timeout", type=float, default=None, help="seconds before a cell is stopped")
    p.add_argument("--cpus-per-client", type=float, default=None, help="Ray CPUs per virtual client")
    p.add_argument("--dry-run", action="store_true", help="validate the grid and list its cells; run nothing")
    p.add_argument("--verbose", action="store_true", help="echo every line the cells print")
    p.set_defaults(func=_cmd_sweep)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m simulations.sweep``: the sweep command, or (``--cell DIR``) one cell in this process."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--cell"] and len(argv) == 2:
        from simulations.baselines import run_cell_here

        return run_cell_here(Path(argv[1]))
    parser = argparse.ArgumentParser(prog="python -m simulations.sweep")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["sweep", *argv])
    try:
        return int(args.func(args))
    except (FedCompressError, ValueError, FileNotFoundError) as e:
        print(f"sweep: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sweep: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
