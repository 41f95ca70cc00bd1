"""A run's folder: where it goes by default, and the checks that fail in one line before any engine starts.

A file in the folder's place, a folder that already holds a finished run, a corrupt checkpoint to resume: each is
refused in a second, naming the path, instead of after Ray or a SuperLink is up. While a run writes into its
folder it holds the folder's lock (``RUN_LOCK``, :class:`fedcompress.files.FolderLock`).
"""

from __future__ import annotations

import time
from pathlib import Path

from fedcompress.config import RunConfig
from fedcompress.errors import ConfigError

__all__ = ["RUN_LOCK", "check_out_dir", "check_run_folder", "default_out_dir", "make_run_folder"]

RUN_LOCK = ".run.lock"  # file name of a run folder's lock


def default_out_dir() -> Path:
    """A fresh run folder under ./runs."""
    return (Path("runs") / time.strftime("run-%Y%m%d-%H%M%S")).resolve()


def check_out_dir(out: Path) -> None:
    """Raise ``ValueError`` naming the path if ``out`` is a file, or cannot be made because a parent is a file."""
    for path in (out, *out.parents):
        if path.exists():
            if path.is_dir():
                return
            what = "is a file, not a folder" if path == out else f"cannot be made: {str(path)!r} is a file"
            raise ValueError(f"out-dir {str(out)!r} {what}; choose a folder for the run")


def make_run_folder(out: Path) -> None:
    """Create ``out`` (and its parents), or raise ``ConfigError`` naming it."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"out-dir {str(out)!r} is a file, not a folder; choose a folder (it is created if missing)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot create out-dir {str(out)!r}: {e.strerror or e}") from e


def check_run_folder(cfg: RunConfig) -> None:
    """Refuse, in one line (``ConfigError``), a run folder the server would refuse once Ray is up.

    Without ``resume``: a folder that already holds a run. With it: a corrupt checkpoint or privacy state.
    """
    from fedcompress.federation.checkpoint import (
        CHECKPOINT_FILE,
        PRIVACY_STATE_FILE,
        load_checkpoint,
        load_privacy_state,
    )
    from server.loop import resolve_out_dir

    out = Path(cfg.out_dir)
    resolve_out_dir(cfg)
    if not cfg.resume:
        return
    for name, load in ((CHECKPOINT_FILE, load_checkpoint), (PRIVACY_STATE_FILE, load_privacy_state)):
        if not (out / name).is_file():
            continue
        try:
            load(out)
        except ValueError as e:  # the checkpoint's message says it is corrupt; a JSON error names no file
            reason = " ".join(str(e).split())
            shown = reason if str(out / name) in reason else f"{name} is corrupt ({reason})"
            raise ConfigError(f"cannot resume {out}: {shown}") from e
