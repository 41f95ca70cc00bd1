"""Following a submitted run: the ServerApp's progress lines on our terminal, its true status from ``flwr ls``.

``flwr log --stream`` copies the ServerApp's output to ``logs/serverapp.log``; :class:`ProgressTail` echoes the
lines of it that say how the run goes. ``flwr run`` exits 0 even when the ServerApp crashes, so the run's
status is asked from ``flwr ls`` until it says ``finished``.
"""

from __future__ import annotations

import contextlib
import math
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fedcompress.errors import RunError
from simulations.deploy.federation import CONNECTION, LocalFederation
from simulations.processes import strip_colours, tail_log

__all__ = ["ProgressTail", "wait_for_run"]

_LS_EVERY_S = 15.0
_POLL_S = 3.0
_PROGRESS = re.compile(r"^(\[round \d+/\d+\]|round \d+: |resuming |stopped before round|result: )")


class ProgressTail:
    """Echo the ServerApp's progress lines as ``flwr log --stream`` appends them to its log."""

    def __init__(self, path: Path, say: Callable[[str], None]):
        self.path, self.say, self.offset = path, say, 0

    def echo(self) -> None:
        try:
            with self.path.open("rb") as f:
                f.seek(self.offset)
                data = f.read()
        except OSError:
            return
        end = data.rfind(b"\n") + 1
        self.offset += end
        for line in data[:end].decode(errors="replace").splitlines():
            line = strip_colours(line).strip()
            if _PROGRESS.match(line):
                self.say(f"server: {line}")


def wait_for_run(fed: LocalFederation, run_id: int, deadline: float) -> dict[str, Any]:
    """Wait until the run finishes or ``deadline`` (``time.monotonic()``) passes; echo server progress.

    ``flwr ls`` starts a whole Python process (about 1.5 CPU-seconds), so it is asked every
    ``_LS_EVERY_S`` seconds, and at once when ``flwr log --stream`` ends (it ends with the run).
    """
    tail = ProgressTail(fed.logs / "serverapp.log", fed.say)
    watched = ["superlink", *(f"supernode-{i}" for i in range(fed.supernodes))]
    stream = fed.procs.popens["flwr-log"]
    status, last_ls, misses = "", -math.inf, 0
    while True:
        fed.procs.check_alive(watched)
        tail.echo()
        now = time.monotonic()
        if now - last_ls >= (_LS_EVERY_S if stream.poll() is None else _POLL_S):
            last_ls = now
            try:
                info, misses = fed.run_info(run_id), 0
            except (RunError, subprocess.TimeoutExpired):
                misses += 1
                if misses >= 3:
                    raise
                info = {"status": status}
            if str(info.get("status", "")).startswith("finished"):
                _drain_log(fed, run_id, tail)
                fed.say(f"run {run_id} {info['status']} ({info.get('status-details', '')})")
                return info
            status = str(info.get("status", ""))
            elapsed = float(info.get("elapsed") or 0.0)
            fed.say(f"run {run_id} status {status or '?'} (run elapsed {elapsed:.0f} s)")
            fed.procs.members()
            fed.procs.record()
        if now >= deadline:
            fed.flwr("stop", str(run_id), CONNECTION, timeout=30)
            log = fed.logs / "serverapp.log"
            raise RunError(
                f"run {run_id} did not finish before the timeout (status {status!r}); "
                f"last lines of {log}:\n{tail_log(log)}"
            )
        time.sleep(max(0.0, min(1.0, deadline - now)))


def _drain_log(fed: LocalFederation, run_id: int, tail: ProgressTail) -> None:
    """Let ``flwr log --stream`` catch up (it ends with the run); fall back to ``flwr log --show``."""
    with contextlib.suppress(subprocess.TimeoutExpired):
        fed.procs.popens["flwr-log"].wait(timeout=10)
    log = fed.logs / "serverapp.log"
    if not log.is_file() or log.stat().st_size == 0:
        shown = fed.flwr("log", str(run_id), CONNECTION, "--show")
        log.write_text(shown.stdout + shown.stderr)
    tail.echo()
