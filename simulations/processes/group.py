"""The processes of one local federation and their logs, found and stopped by PID: never by name.

Each process starts in its own session (:func:`~simulations.processes.session.start_session`) with a token in
its environment; a descendant that detached into a session of its own is still found, by its tree or its token.
PIDs are only ever signalled together with their start time (:mod:`simulations.processes.proc`).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from fedcompress.errors import RunError
from simulations.processes.proc import has_token, proc_stat, proc_table
from simulations.processes.session import GRACE_S, start_session

__all__ = ["CLI_TIMEOUT_S", "ProcessGroup", "strip_colours", "tail_log"]

CLI_TIMEOUT_S = 120.0  # a short CLI command (flwr ls, flwr run)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def strip_colours(text: str) -> str:
    """``text`` without ANSI colour codes (Flower colours its logs)."""
    return _ANSI.sub("", text)


def tail_log(path: Path, lines: int = 40) -> str:
    """The last ``lines`` of a log without colour codes, or a note that there is none."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(strip_colours(text).splitlines()[-lines:]) or f"({path} is empty)"


class ProcessGroup:
    """The processes of one federation: started in their own sessions, found again by tree and token.

    ``env[token_variable]`` is a random token every process gets; anything carrying it (a descendant that
    detached into its own session) is ours. ``say`` prints progress.
    """

    def __init__(self, logs: Path, env: Mapping[str, str], token_variable: str, say: Callable[[str], None]):
        self.logs = logs
        self.env = dict(env)
        self.marker = f"{token_variable}={env[token_variable]}".encode()
        self.say = say
        self.popens: dict[str, subprocess.Popen[bytes]] = {}
        self.seen: dict[int, tuple[str, int]] = {}  # pid -> (role, start time)

    def start(self, role: str, cmd: list[str], log_name: str | None = None) -> subprocess.Popen[bytes]:
        """Start ``cmd`` in a new session with its output in ``logs/<log_name or role>.log``."""
        with (self.logs / f"{log_name or role}.log").open("ab") as log:
            popen = start_session(
                cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=self.logs
            )
        self.popens[role] = popen
        stat = proc_stat(popen.pid)
        self.seen[popen.pid] = (role, stat.start_time if stat else -1)
        self.record()
        return popen

    def run(self, cmd: list[str], timeout: float = CLI_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
        """Run a short ``flwr`` CLI command to completion (it gets the token too, so it is never leaked)."""
        return subprocess.run(
            cmd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=self.env,
            cwd=self.logs,
            timeout=timeout,
            start_new_session=True,
            check=False,
        )

    def check_alive(self, roles: list[str]) -> None:
        """Raise ``RunError`` naming the first of ``roles`` that has exited, with the tail of its log."""
        for role in roles:
            code = self.popens[role].poll()
            if code is not None:
                log = self.logs / f"{role}.log"
                raise RunError(
                    f"{role} (pid {self.popens[role].pid}) exited with code {code} while the federation was "
                    f"running; last lines of {log}:\n{tail_log(log)}"
                )

    def members(self) -> list[int]:
        """Live PIDs of every process we started, their descendants, and anything carrying our token."""
        table = proc_table()
        if not table:  # not Linux: only what we started ourselves
            return [p.pid for p in self.popens.values() if p.poll() is None]
        ours = {pid for pid, (_, start) in self.seen.items() if pid in table and table[pid].start_time == start}
        children: dict[int, list[int]] = {}
        for pid, stat in table.items():
            children.setdefault(stat.parent, []).append(pid)
        stack = list(ours)
        while stack:
            for child in children.get(stack.pop(), []):
                if child not in ours:
                    ours.add(child)
                    stack.append(child)
        ours |= {pid for pid in table if pid != os.getpid() and has_token(pid, self.marker)}
        for pid in ours - self.seen.keys():
            self.seen[pid] = ("child", table[pid].start_time)
        return sorted(pid for pid in ours if not table[pid].gone)

    def record(self) -> None:
        """Write ``logs/pids.txt``: every PID seen so far, with its role."""
        lines = [f"# {self.marker.decode()}", "# pid start-time role"]
        lines += [f"{pid} {start} {role}" for pid, (role, start) in sorted(self.seen.items())]
        (self.logs / "pids.txt").write_text("\n".join(lines) + "\n")

    def _signal(self, pids: list[int], sig: int) -> None:
        for popen in self.popens.values():
            if popen.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(popen.pid, sig)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)

    def stop(self, grace: float = GRACE_S) -> None:
        """Stop everything: SIGTERM, wait up to ``grace`` seconds, SIGKILL what is left, reap our children."""
        alive = self.members()
        self.record()
        if alive:
            self._signal(alive, signal.SIGTERM)
            deadline = time.monotonic() + grace
            while alive and time.monotonic() < deadline:
                time.sleep(0.2)
                alive = self.members()
        for _ in range(3):
            if not alive:
                break
            self._signal(alive, signal.SIGKILL)
            time.sleep(0.5)
            alive = self.members()
        for popen in self.popens.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                popen.wait(timeout=2.0)
        self.record()
        if alive:
            self.say(f"warning: could not stop {sorted(alive)}")
        else:
            self.say(f"stopped all {len(self.seen)} processes (PIDs in {self.logs / 'pids.txt'})")
