"""Processes of a local federation, found and stopped by PID: never by name, never someone else's.

A PID is only "ours" together with its start time (clock ticks since boot, /proc/PID/stat field 22), so a PID
the kernel has reused for someone else's process is never signalled. Children start in their own sessions
with a token in their environment; Linux SIGTERMs them if we die (PR_SET_PDEATHSIG).

A child that leads its own session (``start_new_session``) takes everything it starts with it: ``stop_session``
ends the whole session, found by its session id in /proc, and returns only when it is empty. While a clean-up
runs, ``signals_held`` keeps a second Ctrl-C from cutting it short.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from fedcompress.errors import RunError

__all__ = [
    "CLI_TIMEOUT_S",
    "GRACE_S",
    "ProcessGroup",
    "death_signal_setter",
    "interrupt_on_signals",
    "process_alive",
    "session_members",
    "signals_held",
    "sigterm_to_interrupt",
    "stop_session",
    "strip_colours",
    "tail_log",
]

GRACE_S = 5.0  # SIGTERM, then this long, then SIGKILL
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


_Stat = tuple[int, str, int]  # (parent pid, state letter, start time)


def _stat(pid: int) -> _Stat | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2 :].split()
    return int(fields[1]), fields[0], int(fields[19])


def _proc_table() -> dict[int, _Stat]:
    """``pid -> (parent pid, state, start time)`` for every process in /proc (empty off Linux)."""
    if not os.path.isdir("/proc"):
        return {}
    stats = {int(e): _stat(int(e)) for e in os.listdir("/proc") if e.isdigit()}
    return {pid: stat for pid, stat in stats.items() if stat is not None}


def _has_token(pid: int, marker: bytes) -> bool:
    try:
        return marker in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False


def death_signal_setter() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes Linux SIGTERM the child when we die, even by SIGKILL (PR_SET_PDEATHSIG).

    ``prctl`` is looked up here, in the parent, so the child between fork and exec only makes one C call.
    """
    if sys.platform != "linux":
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    pr_set_pdeathsig, sigterm = ctypes.c_int(1), ctypes.c_ulong(signal.SIGTERM)

    def set_death_signal() -> None:
        prctl(pr_set_pdeathsig, sigterm)

    return set_death_signal


def process_alive(pid: int, start_time: int | None = None) -> bool:
    """Whether ``pid`` is a live process (and, if given, the one that started at ``start_time``).

    A zombie, which only waits for its parent to reap it, counts as gone. ``start_time`` is ignored off Linux.
    """
    stat = _stat(pid)
    if stat is not None:
        return stat[1] not in "ZX" and (start_time is None or stat[2] == start_time)
    if os.path.isdir("/proc"):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, but belongs to someone else
    return True


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
            popen = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.logs,
                start_new_session=True,
                preexec_fn=death_signal_setter(),
            )
        self.popens[role] = popen
        stat = _stat(popen.pid)
        self.seen[popen.pid] = (role, stat[2] if stat else -1)
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
        table = _proc_table()
        if not table:  # not Linux: only what we started ourselves
            return [p.pid for p in self.popens.values() if p.poll() is None]
        ours = {pid for pid, (_, start) in self.seen.items() if pid in table and table[pid][2] == start}
        children: dict[int, list[int]] = {}
        for pid, (ppid, _, _) in table.items():
            children.setdefault(ppid, []).append(pid)
        stack = list(ours)
        while stack:
            for child in children.get(stack.pop(), []):
                if child not in ours:
                    ours.add(child)
                    stack.append(child)
        ours |= {pid for pid in table if pid != os.getpid() and _has_token(pid, self.marker)}
        for pid in ours - self.seen.keys():
            self.seen[pid] = ("child", table[pid][2])
        return sorted(pid for pid in ours if table[pid][1] not in "ZX")

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


def _raise_interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def sigterm_to_interrupt() -> bool:
    """Make SIGTERM raise ``KeyboardInterrupt`` (so clean-up runs), if it has its default action here.

    Only in the main thread, and never over a handler someone else installed. Returns whether it did.
    """
    if threading.current_thread() is not threading.main_thread():
        return False
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return False
    signal.signal(signal.SIGTERM, _raise_interrupt)
    return True


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def interrupt_on_signals() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM both raise ``KeyboardInterrupt`` (so clean-up code runs).

    Also where SIGINT was ignored (a job started with ``&`` by a script). Only in the main thread, and never over
    a handler someone else installed; the previous handlers come back at the end.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    replaceable = (signal.SIG_DFL, signal.SIG_IGN, signal.default_int_handler)
    previous = {sig: signal.getsignal(sig) for sig in _STOP_SIGNALS}
    ours = [sig for sig, handler in previous.items() if handler in replaceable]
    for sig in ours:
        signal.signal(sig, _raise_interrupt)
    try:
        yield
    finally:
        for sig in ours:
            signal.signal(sig, previous[sig])


@contextlib.contextmanager
def signals_held() -> Iterator[list[int]]:
    """Within the block, SIGINT and SIGTERM are noted (in the yielded list) instead of interrupting it.

    For a clean-up that must finish: a second Ctrl-C while a cell is being stopped must not leave it half
    stopped. Only in the main thread; elsewhere the block runs unprotected.
    """
    held: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield held
        return
    previous = {sig: signal.signal(sig, lambda signum, _frame: held.append(signum)) for sig in _STOP_SIGNALS}
    try:
        yield held
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _session_of(pid: int) -> tuple[int, str] | None:
    """``(session id, state letter)`` of ``pid`` from /proc/PID/stat, or None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2 :].split()
    return int(fields[3]), fields[0]


def session_members(sid: int) -> list[int]:
    """Live PIDs of session ``sid`` (a child started with ``start_new_session`` leads one whose id is its PID).

    The kernel does not hand out a PID still in use as a session id, so the members found are that child's
    descendants (those that did not ``setsid`` again) and never a stranger. Empty off Linux.
    """
    if not os.path.isdir("/proc"):
        return []
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            found = _session_of(int(entry))
            if found is not None and found[0] == sid and found[1] not in "ZX":
                members.append(int(entry))
    return sorted(members)


def _signal_session(sid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(sid, sig)
    for pid in session_members(sid):  # members that moved to another process group of the session
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def stop_session(leader: subprocess.Popen[Any], grace: float = GRACE_S) -> list[int]:
    """End ``leader`` (started with ``start_new_session``) and every process of its session; reap ``leader``.

    SIGTERM, up to ``grace`` seconds for all of them to exit, then SIGKILL and up to ``grace`` seconds more.
    Returns the PIDs still alive after that (empty unless a process is stuck in the kernel).
    """
    sid = leader.pid
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if leader.poll() is not None and not session_members(sid):
            return []
        _signal_session(sid, sig)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if leader.poll() is not None and not session_members(sid):
                return []
            time.sleep(0.05)
    return sorted(set(session_members(sid)) | ({sid} if leader.poll() is None else set()))
