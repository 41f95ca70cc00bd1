"""The one process toolkit of the harness: children in their own sessions, found and stopped by PID.

Never by name, never someone else's. A sweep's cell, a leakage audit and a benchmark run are each one child
session (:mod:`~simulations.processes.session`); a local federation is a :class:`ProcessGroup` of several.
"""

from simulations.processes.group import CLI_TIMEOUT_S, ProcessGroup, strip_colours, tail_log
from simulations.processes.proc import (
    ProcStat,
    group_rss_bytes,
    has_token,
    proc_stat,
    proc_table,
    process_alive,
    session_members,
)
from simulations.processes.session import (
    GRACE_S,
    end_own_session,
    start_session,
    stop_session,
    tie_to_parent,
    wait_session,
)
from simulations.processes.signals import (
    death_signal_setter,
    interrupt_on_signals,
    signals_held,
    sigterm_to_interrupt,
)

__all__ = [
    "CLI_TIMEOUT_S",
    "GRACE_S",
    "ProcStat",
    "ProcessGroup",
    "death_signal_setter",
    "end_own_session",
    "group_rss_bytes",
    "has_token",
    "interrupt_on_signals",
    "proc_stat",
    "proc_table",
    "process_alive",
    "session_members",
    "signals_held",
    "sigterm_to_interrupt",
    "start_session",
    "stop_session",
    "strip_colours",
    "tail_log",
    "tie_to_parent",
    "wait_session",
]
