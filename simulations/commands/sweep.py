"""``fedcompress sweep GRID.toml --out DIR``: a resumable grid of federations, one subprocess per cell.

The grid, the runner and the store are :mod:`simulations.sweep`; ``python -m simulations.sweep`` is this
command too, and (``--cell DIR``) the child process of one cell.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fedcompress.config import parse_overrides
from simulations.sweep import AUDIT_DIR, Sweep, load_grid, run_cell_here, run_sweep

__all__ = ["main", "register"]

_DESCRIPTION = __doc__.splitlines()[0]


def _print_plan(sweep: Sweep) -> None:
    """What ``--dry-run`` prints: the cells the grid makes, and the audit after them."""
    print(
        f"sweep {sweep.name!r}: {len(sweep.cells)} cells ({sweep.collapsed} duplicates collapsed, "
        f"{sweep.skipped_by_rule} skipped by rules)"
    )
    for cell in sweep.cells:
        c = cell.config
        print(
            f"  {cell.id}  {cell.runner:<9} seed={c.seed} rounds={c.num_rounds} clients={c.num_clients}  {cell.label}"
        )
    if sweep.audit is not None:
        print(f"  then a leakage audit into {AUDIT_DIR}/ ({sweep.audit['iterations']} iterations per attack)")


def _cmd_sweep(args: argparse.Namespace) -> int:
    sweep = load_grid(args.grid, parse_overrides(args.set))
    if args.dry_run:
        _print_plan(sweep)
        return 0
    return run_sweep(
        sweep,
        args.out,
        retry_failed=args.retry_failed,
        verbose=args.verbose,
        cpus_per_client=args.cpus_per_client,
        cell_timeout=args.cell_timeout,
    )


def register(subparsers: Any) -> None:
    """Add ``fedcompress sweep`` to the CLI's subparsers."""
    p = subparsers.add_parser(
        "sweep",
        help="a resumable grid of federations into a results store",
        description=_DESCRIPTION,
    )
    p.add_argument("grid", help="grid file (TOML); ready ones are in simulations/grids/")
    p.add_argument("--out", required=True, help="sweep folder: results.jsonl, results.csv, cells/<id>/")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a setting in every cell")
    p.add_argument("--retry-failed", action="store_true", help="run cells whose record says failed again")
    p.add_argument("--cell-timeout", type=float, default=None, help="seconds before a cell is stopped")
    p.add_argument("--cpus-per-client", type=float, default=None, help="Ray CPUs per virtual client")
    p.add_argument("--dry-run", action="store_true", help="validate the grid and list its cells; run nothing")
    p.add_argument("--verbose", action="store_true", help="echo every line the cells print")
    p.set_defaults(func=_cmd_sweep)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m simulations.sweep``: the sweep command, or (``--cell DIR``) one cell in this process."""
    from simulations.cli import run_alone

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--cell"] and len(argv) == 2:
        return run_cell_here(Path(argv[1]))
    return run_alone(register, "sweep", argv, interrupted="sweep: interrupted; rerun the same command to resume")
