"""A child that leads its own session, and everything it starts: started, waited for, stopped as one.

Parent side: :func:`start_session` starts a child with ``start_new_session`` that Linux SIGTERMs if we die;
:func:`wait_session` waits for it and, on a timeout or an interrupt, :func:`stop_session` ends the whole session
(found by its session id in /proc) and returns only when it is empty. Child side: :func:`tie_to_parent` ends the
child, with every process it started, on SIGTERM or when its parent is gone (:func:`end_own_session`).
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

from simulations.processes.proc import session_members
from simulations.processes.signals import death_signal_setter, signals_held

__all__ = ["GRACE_S", "end_own_session", "start_session", "stop_session", "tie_to_parent", "wait_session"]

GRACE_S = 5.0  # SIGTERM, then this long, then SIGKILL
_STOPPED = "stopped by signal {signum}; ending its processes"


def start_session(command: list[str], **options: Any) -> subprocess.Popen[Any]:
    """Start a child in its own session that Linux SIGTERMs if this process dies (even by SIGKILL)."""
    return subprocess.Popen(command, start_new_session=True, preexec_fn=death_signal_setter(), **options)


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


def wait_session(child: subprocess.Popen[Any], timeout: float | None, what: str, grace: float = GRACE_S) -> int | None:
    """The child's exit code, or None when it ran past ``timeout`` and its session was stopped.

    On an interrupt (Ctrl-C, SIGTERM) or any other error while waiting, the child's whole session is stopped
    first (further interrupts are held meanwhile), then the interrupt propagates. ``what`` names the child in
    the lines printed.
    """
    try:
        return child.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        _stop(child, what, grace)
        return None
    except BaseException:
        _stop(child, what, grace, interrupted=True)
        raise


def _stop(child: subprocess.Popen[Any], what: str, grace: float, *, interrupted: bool = False) -> None:
    """End the child's whole session: SIGTERM, then SIGKILL; wait for all.

    A Ctrl-C or SIGTERM meanwhile waits for the stop to finish, then interrupts as usual.
    """
    with signals_held() as held:
        left = stop_session(child, grace=grace)
    if left:
        print(f"{what} warning: processes {left} did not stop", file=sys.stderr, flush=True)
    elif interrupted:
        print(f"{what} interrupted: stopped it and every process it started; rerun to resume", flush=True)
    if held and not interrupted:
        raise KeyboardInterrupt(f"signal {held[0]}")


# ---------------------------------------------------------------------------------------------- child side
def end_own_session(code: int) -> None:
    """End this process at once with every process it started (when it leads its session), else alone."""
    if os.getsid(0) == os.getpid():
        for pid in session_members(os.getpid()):  # also those that moved to another process group
            if pid != os.getpid():
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
        os.killpg(os.getpgrp(), signal.SIGKILL)
    os._exit(code)


def _stop_on_signal(notice: str, signum: int, _frame: object) -> None:
    """SIGTERM: the parent is stopping us, or has died (PR_SET_PDEATHSIG). Nothing here needs saving."""
    with contextlib.suppress(OSError):  # stdout may be a pipe to a parent that is dead (EPIPE)
        os.write(1, (notice.format(signum=signum) + "\n").encode())
    end_own_session(128 + signum)


def _watch_parent(parent: int) -> None:
    """End this process when the parent that started it is gone (re-parented); a fallback for the signal."""
    while True:
        if os.getppid() != parent:
            end_own_session(1)
        time.sleep(0.5)


def tie_to_parent(notice: str = _STOPPED) -> None:
    """Tie this process to its parent: SIGTERM or the parent's death ends it and everything it started.

    ``notice`` (with ``{signum}``) is written to stdout when a signal ends it.
    """
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, functools.partial(_stop_on_signal, notice))
    threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True).start()
