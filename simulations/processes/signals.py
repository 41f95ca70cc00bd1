"""Signals around clean-up: SIGTERM and SIGINT that run it, a second Ctrl-C that cannot cut it short.

Handlers are only installed in the main thread, and never over a handler someone else installed. Children are
tied to our life with PR_SET_PDEATHSIG: Linux SIGTERMs them when we die, even by SIGKILL.
"""

from __future__ import annotations

import contextlib
import ctypes
import signal
import sys
import threading
from collections.abc import Callable, Iterator

__all__ = ["death_signal_setter", "interrupt_on_signals", "signals_held", "sigterm_to_interrupt"]

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


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
