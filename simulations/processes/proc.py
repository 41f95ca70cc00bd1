"""What /proc says about a process: its parent, group, session, state, start time and memory.

A PID is only "ours" together with its start time (clock ticks since boot, /proc/PID/stat field 22), so a PID
the kernel has reused for someone else's process is never signalled. Off Linux there is no /proc: the table is
empty, and callers fall back to what they started themselves.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

__all__ = [
    "ProcStat",
    "group_rss_bytes",
    "has_token",
    "proc_stat",
    "proc_table",
    "process_alive",
    "session_members",
]


@dataclasses.dataclass(frozen=True)
class ProcStat:
    """The fields of /proc/PID/stat this harness reads."""

    state: str  # one letter; Z (zombie) and X (dead) count as gone
    parent: int
    group: int
    session: int
    start_time: int  # clock ticks since boot
    rss_pages: int

    @property
    def gone(self) -> bool:
        """A zombie only waits for its parent to reap it: it counts as gone."""
        return self.state in "ZX"


def proc_stat(pid: int) -> ProcStat | None:
    """``pid``'s /proc/PID/stat, or None when it is gone (or off Linux)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2 :].split()  # the command name in parentheses may hold spaces
    return ProcStat(
        state=fields[0],
        parent=int(fields[1]),
        group=int(fields[2]),
        session=int(fields[3]),
        start_time=int(fields[19]),
        rss_pages=int(fields[21]),
    )


def proc_table() -> dict[int, ProcStat]:
    """``pid -> ProcStat`` for every process in /proc (empty off Linux)."""
    if not os.path.isdir("/proc"):
        return {}
    stats = {int(e): proc_stat(int(e)) for e in os.listdir("/proc") if e.isdigit()}
    return {pid: stat for pid, stat in stats.items() if stat is not None}


def has_token(pid: int, marker: bytes) -> bool:
    """Whether ``marker`` (``NAME=value``) is one of ``pid``'s environment entries."""
    try:
        return marker in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False


def process_alive(pid: int, start_time: int | None = None) -> bool:
    """Whether ``pid`` is a live process (and, if given, the one that started at ``start_time``).

    A zombie, which only waits for its parent to reap it, counts as gone. ``start_time`` is ignored off Linux.
    """
    stat = proc_stat(pid)
    if stat is not None:
        return not stat.gone and (start_time is None or stat.start_time == start_time)
    if os.path.isdir("/proc"):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, but belongs to someone else
    return True


def session_members(sid: int) -> list[int]:
    """Live PIDs of session ``sid`` (a child started with ``start_new_session`` leads one whose id is its PID).

    The kernel does not hand out a PID still in use as a session id, so the members found are that child's
    descendants (those that did not ``setsid`` again) and never a stranger. Empty off Linux.
    """
    return sorted(pid for pid, stat in proc_table().items() if stat.session == sid and not stat.gone)


def group_rss_bytes(pgid: int) -> int:
    """Summed resident memory of every process in process group ``pgid`` (0 off Linux)."""
    pages = sum(stat.rss_pages for stat in proc_table().values() if stat.group == pgid)
    return pages * os.sysconf("SC_PAGE_SIZE")
