"""Atomic file writes and folder locks: a reader, or a crash, sees the old content or the new, never a torn file.

A write goes to a temporary file beside its target (``.NAME.PID.XXXXXXXX.tmp``), is flushed and fsynced, renamed
over the target, and then the folder itself is fsynced so that the rename survives a power cut too. A writer that
is killed half way leaves its temporary file behind; the next write into the same folder removes every such file
whose writer is gone (no live process has its PID), and never one that a live writer may still rename.

A folder lock is an ``flock`` on a file inside the folder, held while the open file lives: the kernel releases it
when the holder exits, however it ends (crash, SIGKILL), so a stale lock cannot outlive its process.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
import threading
from pathlib import Path
from typing import Any

from fedcompress.errors import RunError

__all__ = ["FolderLock", "atomic_write_bytes", "atomic_write_json", "atomic_write_text"]

_TEMP = re.compile(r"^\..+\.(\d+)\.[a-z0-9_]{8}\.tmp$")  # what mkstemp makes from our prefix and suffix
_IN_FLIGHT: set[str] = set()  # temporary files this process is writing right now (other threads' too)
_IN_FLIGHT_LOCK = threading.Lock()


def _pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def _remove_stale_temps(folder: Path) -> None:
    """Remove temporary files of killed writers (their PID no longer runs) from ``folder``."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        match = _TEMP.match(entry.name)
        if match is None:
            continue
        pid = int(match.group(1))
        with _IN_FLIGHT_LOCK:
            busy = entry.path in _IN_FLIGHT or (pid != os.getpid() and _pid_running(pid))
        if not busy:
            with contextlib.suppress(OSError):
                os.unlink(entry.path)


def _fsync_folder(folder: Path) -> None:
    """Make a rename inside ``folder`` durable (POSIX needs the directory itself fsynced)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return  # not possible on this platform
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on a directory; the rename is still atomic
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | Path, data: bytes, *, mode: int | None = None) -> None:
    """Write a file so a reader (or a crash) sees either the old or the new content, never a torn one.

    Parameters
    ----------
    path : str or Path
        The target; its folder is created if missing.
    data : bytes
        The whole new content.
    mode : int, optional
        Permission bits of the new file, set before any byte is written (for secrets: ``0o600``). By default
        those of a file made by ``open()``: 0666 less the umask, like every other output of a run.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")
    with _IN_FLIGHT_LOCK:
        _IN_FLIGHT.add(tmp)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), _default_mode() if mode is None else mode)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        with _IN_FLIGHT_LOCK:
            _IN_FLIGHT.discard(tmp)
    _fsync_folder(path.parent)


def _default_mode() -> int:
    umask = os.umask(0o022)  # read and restore: the only portable way to learn it
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write_text(path: str | Path, text: str) -> None:
    """Atomically write ``text`` as UTF-8."""
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


class FolderLock:
    """An exclusive lock on a folder: ``flock`` on ``folder/name``, held from ``__enter__`` to ``__exit__``.

    The kernel drops the lock when the last open copy of the file closes, so a crashed or killed holder never
    leaves it behind; a child process given ``fd`` (``pass_fds``) keeps holding it after its parent dies. The
    file stays in place (deleting a lock file races with the next locker) and holds the locker's PID, which the
    refusal names.

    Parameters
    ----------
    folder : Path
        The folder to lock; created if missing.
    name : str
        File name of the lock inside ``folder`` (default ``.lock``).
    what : str
        What holds the lock, for the refusal message (default ``"run"``).
    """

    def __init__(self, folder: str | Path, *, name: str = ".lock", what: str = "run") -> None:
        self.folder = Path(folder)
        self.path = self.folder / name
        self.what = what
        self.fd = -1

    def __enter__(self) -> FolderLock:
        import fcntl  # POSIX only: imported where it is needed

        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 32).decode(errors="replace").strip()
            os.close(fd)
            who = f" (pid {holder})" if holder.isdigit() else ""
            raise RunError(
                f"{self.folder} is in use by another {self.what}{who}; wait for it to end or choose another folder"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
