"""``fedcompress report DIR``: ``DIR/report.md`` and PNG plots from a sweep's results store.

A sweep folder (``results.jsonl``) gets :func:`simulations.report.render_report`; a run folder (only a
``result.json``) gets :func:`simulations.report.render_run_report`. ``python -m simulations.report DIR`` is
this command too. Plotting (matplotlib) loads only when a report is written.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fedcompress.federation.results import RESULT_FILE
from simulations.sweep.store import STORE_FILE

__all__ = ["main", "register"]

_DESCRIPTION = __doc__.splitlines()[0]


def register(subparsers: Any) -> None:
    """Add ``fedcompress report`` to the CLI's subparsers."""
    p = subparsers.add_parser(
        "report",
        help="report.md and PNG plots from a sweep's results store, or from one run's folder",
        description=_DESCRIPTION,
    )
    p.add_argument("dir", help="sweep folder (holds results.jsonl) or run folder (holds result.json)")
    p.set_defaults(func=_cmd_report)


def _cmd_report(args: argparse.Namespace) -> int:
    from simulations.report import render_report, render_run_report

    folder = Path(args.dir)
    one_run = not (folder / STORE_FILE).is_file() and (folder / RESULT_FILE).is_file()
    path = render_run_report(folder) if one_run else render_report(folder)
    print(f"report: {path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m simulations.report DIR``."""
    from simulations.cli import run_alone

    return run_alone(register, "report", argv, interrupted="report: interrupted")
