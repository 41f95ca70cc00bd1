"""Runs the pending cells of a sweep one after another, each in its own process session, into the store.

Each cell runs in its own process (``python -m simulations.sweep --cell DIR``, :mod:`simulations.sweep.cell`), so
a crash, a leak or a stuck Ray cluster ends with that cell; its record goes to the store either way, and
rerunning the same command skips every recorded cell.

Stopping: SIGINT (Ctrl-C) or SIGTERM to the sweep ends the running cell's whole session (the cell and its Ray
processes), waits until it is gone, releases the folder's lock (``.sweep.lock``) and exits with 130; a SIGKILLed
sweep takes its cell along too (the cell gets SIGTERM from Linux when its parent dies, and watches its parent).
An interrupted cell has no record, so a rerun runs it again: from its own checkpoint (``resume = true``) when its
folder holds one, from the start otherwise. A cell retried after a recorded failure (``--retry-failed``) starts
afresh, since what failed may be in its saved state.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fedcompress.config import toml_document
from fedcompress.errors import ConfigError
from fedcompress.files import atomic_write_text
from simulations.processes import interrupt_on_signals, start_session, wait_session
from simulations.sweep.cell import cell_error, read_cell_result
from simulations.sweep.grid import AUDIT_DIR, Cell, Sweep
from simulations.sweep.lock import SweepLock
from simulations.sweep.progress import ROUND_LINE, Progress, duration
from simulations.sweep.records import build_record, failed_record
from simulations.sweep.store import append_record, latest_records, read_records, write_csv

__all__ = ["SweepRunner", "run_sweep"]

# What a cell folder holds once its run has sent a round: with one of them, an interrupted cell resumes.
_RUN_STATE = ("checkpoint.pt", "privacy-state.json")  # fedcompress.federation.checkpoint (which imports torch)
_STOP_GRACE_S = 10.0  # SIGTERM to a cell's session, then this long, then SIGKILL
# BLAS/OpenMP pools of one thread in each cell: clients already train on one torch thread each, and OpenBLAS's
# own pool was seen spinning for 14 minutes inside one numpy dot in a cell's server thread (17 CPU-minutes,
# no progress), a hang that single-threaded BLAS cannot have.
_ONE_THREAD = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


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
        latest = latest_records(read_records(self.out_dir))
        keep = ("ok",) if self.retry_failed else ("ok", "failed")
        return [c for c in self.sweep.cells if latest.get(c.id, {}).get("status") not in keep]

    def run(self) -> int:
        """Run what is pending; returns 0 when every cell of the sweep has an ok record, else 1."""
        if self.out_dir.exists() and not self.out_dir.is_dir():
            raise ConfigError(f"--out {str(self.out_dir)!r} is a file, not a folder; choose a folder for the sweep")
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"cannot create the sweep folder {str(self.out_dir)!r}: {e.strerror or e}") from e
        with SweepLock(self.out_dir) as lock, interrupt_on_signals():
            latest = latest_records(read_records(self.out_dir))
            pending = self.pending()
            done = len(self.sweep.cells) - len(pending)
            print(
                f"sweep {self.sweep.name!r}: {len(self.sweep.cells)} cells, {done} already in the store, "
                f"{len(pending)} to run -> {self.out_dir}",
                flush=True,
            )
            progress = Progress(pending)
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
        command = [sys.executable, "-m", "simulations.cli", "audit", "--config", str(settings), "--out", str(folder)]
        child = start_session(command, env={**os.environ, **dict.fromkeys(_ONE_THREAD, "1")})
        code = wait_session(child, None, "audit", grace=_STOP_GRACE_S)
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

    def _run_cell(self, cell: Cell, position: str, progress: Progress, lock_fd: int, *, fresh: bool) -> None:
        folder, resume = self._prepare_folder(cell, fresh=fresh)
        print(
            f"[cell {position}] {cell.id} {cell.runner} seed={cell.config.seed}: {cell.label} "
            f"{'(resuming its interrupted run from its checkpoint) ' if resume else ''}"
            f"(sweep ETA {duration(progress.eta())})",
            flush=True,
        )
        progress.start_cell()
        started = time.monotonic()
        error = self._spawn(folder, position, progress, lock_fd, resume=resume)
        wall = time.monotonic() - started
        result = None
        if error is None:
            result, error = read_cell_result(folder)
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
                f"[cell {position}] ok in {duration(wall)}: psnr={final['psnr']:.2f} dB{eps_text} "
                f"uplink={uplink} (sweep ETA {duration(progress.eta())})",
                flush=True,
            )
        else:
            print(f"[cell {position}] FAILED in {duration(wall)}: {record['error']}", flush=True)

    def _spawn(self, folder: Path, position: str, progress: Progress, lock_fd: int, *, resume: bool) -> str | None:
        """Run the child; stream its output to log.txt (and round lines to the terminal). Returns an error.

        The child leads its own session and holds the sweep's lock too (so an orphan still holds it). An
        interrupt (Ctrl-C, SIGTERM) ends its whole session before it propagates.
        """
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
        env["PYTHONUNBUFFERED"] = "1"
        for name in _ONE_THREAD:  # a user's own setting wins
            env.setdefault(name, "1")
        with open(folder / "log.txt", "a") as log_file:  # a resumed cell keeps the log of its first attempt
            log_file.write(f"=== sweep {time.strftime('%Y-%m-%d %H:%M:%S')}: {'resume' if resume else 'start'}\n")
            log_file.flush()
            child = start_session(
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
            code = wait_session(child, self.cell_timeout or None, f"[cell {position}]", grace=_STOP_GRACE_S)
            reader.join(timeout=10)
        if code is None:
            return f"timed out after {self.cell_timeout:g} s (cell-timeout)"
        return None if code == 0 else cell_error(folder, code)

    def _echo(self, child: subprocess.Popen[str], log_file: Any, position: str, progress: Progress) -> None:
        assert child.stdout is not None
        for line in child.stdout:
            log_file.write(line)
            log_file.flush()
            match = ROUND_LINE.match(line.strip())
            if match:
                progress.round_done(int(match.group(1)))
                print(
                    f"[cell {position}] round {match.group(1)}/{match.group(2)} {match.group(3)} "
                    f"| sweep ETA {duration(progress.eta())}",
                    flush=True,
                )
            elif self.verbose:
                print(f"  | {line.rstrip()}", flush=True)


def run_sweep(sweep: Sweep, out_dir: str | Path, **options: Any) -> int:
    """Run every cell of ``sweep`` that ``out_dir``'s store lacks; options are ``SweepRunner``'s."""
    return SweepRunner(sweep, Path(out_dir), **options).run()
