"""The sweep folder's lock: one sweep at a time, and a cell orphaned by a killed sweep still holds it."""

from __future__ import annotations

from pathlib import Path

from fedcompress.files import FolderLock

__all__ = ["SWEEP_LOCK", "SweepLock"]

SWEEP_LOCK = ".sweep.lock"


class SweepLock(FolderLock):
    """The sweep folder's exclusive lock, shared with the running child (``pass_fds``) so an orphan still holds it."""

    def __init__(self, out_dir: Path) -> None:
        super().__init__(out_dir, name=SWEEP_LOCK, what="sweep (or a cell it started)")
