"""The app ``flwr run`` packs into a FAB: this repository, copied without its venv, runs and git-ignored folders."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

__all__ = ["APP_ROOT", "stage_app"]

APP_ROOT = Path(__file__).resolve().parents[2]
_FAB_SUFFIXES = (".py", ".toml", ".md", ".yaml", ".yml", ".json", ".jsonl")
_FAB_NAMES = (".gitignore", ".editorconfig", "LICENSE")


def stage_app(root: Path, dest: Path, *, exclude: tuple[Path, ...] = ()) -> Path:
    """Copy what ``flwr run`` could pack from the app at ``root`` into ``dest`` (replaced); return ``dest``.

    ``flwr run <root>`` lists every file under the root, the whole virtual environment included, before it
    filters them: 6 CPU-seconds here, 25 s of wall time on a busy 2-core machine. This copy skips git-ignored
    folders, the folders in ``exclude`` (a run folder inside the repository must not be packed) and files of
    kinds a FAB never holds; Flower still applies its own rules, so the FAB is otherwise the same.
    """
    import pathspec

    ignore = root / ".gitignore"
    lines = ignore.read_text().splitlines() if ignore.is_file() else []
    spec = pathspec.GitIgnoreSpec.from_lines(lines)
    skip = {dest.resolve(), *(path.resolve() for path in exclude)}
    if dest.exists():
        shutil.rmtree(dest)
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        rel = here.relative_to(root)
        dirnames[:] = [
            d
            for d in dirnames
            if d not in (".git", ".flwr")
            and not (here / d).is_symlink()
            and (here / d).resolve() not in skip
            and not spec.match_file(f"{(rel / d).as_posix()}/")
        ]
        for name in filenames:
            if (name.endswith(_FAB_SUFFIXES) or name in _FAB_NAMES) and not (here / name).is_symlink():
                (dest / rel).mkdir(parents=True, exist_ok=True)
                shutil.copy2(here / name, dest / rel / name)
    return dest
