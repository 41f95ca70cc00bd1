"""``fedcompress bench front``: which codec keeps quality at the fewest uplink bytes, on a workload that learns.

The workload is ``simulations/grids/front.toml`` (10 sites x 2000 phantoms, every site every round, dense
float32 FedAvg beside every codec, then the private rows); ``--quick`` runs ``front-quick.toml`` (the same cells
on a small workload, minutes on 2 cores). The cells run as a sweep into ``--out`` (resumable: a rerun runs only
what is missing), then the front is written from the store (:mod:`simulations.report.front`): ``front.md``,
``front.csv``, ``front.png`` and ``rounds.png``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from fedcompress.config import parse_overrides
from simulations.report.front import write_front
from simulations.sweep import load_grid, run_sweep

__all__ = ["GRIDS", "main"]

GRIDS = Path(__file__).resolve().parents[1] / "grids"


def main(argv: Sequence[str] | None = None) -> int:
    """Command line of the front benchmark."""
    parser = argparse.ArgumentParser(prog="fedcompress bench front", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="sweep folder (resumable); the front files are written there")
    parser.add_argument("--quick", action="store_true", help="the small workload (front-quick.toml), minutes")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a setting in every cell")
    parser.add_argument("--report-only", action="store_true", help="write the front from the store; run nothing")
    args = parser.parse_args(argv)
    grid = GRIDS / ("front-quick.toml" if args.quick else "front.toml")
    if not args.report_only:
        code = run_sweep(load_grid(grid, parse_overrides(args.set)), args.out)
        if code not in (0, 1):  # 1: some cell failed; the front still shows the others
            return code
    rows = write_front(args.out)
    print(Path(args.out, "front.md").read_text(), end="")
    print(f"front: {len(rows)} cells -> {args.out}/front.md, front.csv, front.png, rounds.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
