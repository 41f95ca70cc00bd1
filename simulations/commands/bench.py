"""``fedcompress bench WHAT [options]``: benchmarks, each with its own command line (``--help`` for it).

The codec benchmark measures the library itself (:mod:`fedcompress.bench.codec`); the others run federations
or sweeps, so they live with the harness (:mod:`simulations.bench`).
"""

from __future__ import annotations

import argparse
import importlib
from typing import Any

__all__ = ["BENCHES", "register"]

BENCHES = {
    "codec": "fedcompress.bench.codec",
    "federation": "simulations.bench.federation",
    "front": "simulations.bench.front",
    "privacy": "simulations.bench.privacy",
}


def register(subparsers: Any) -> None:
    """Add ``fedcompress bench`` to the CLI's subparsers."""
    parser = subparsers.add_parser(
        "bench", help="benchmarks: codec ratios/throughput, federation cost, privacy cost, the compression front"
    )
    parser.add_argument("what", choices=sorted(BENCHES))
    parser.add_argument("rest", nargs=argparse.REMAINDER, help="options of that benchmark (--help for them)")
    parser.set_defaults(func=_cmd_bench)


def _cmd_bench(args: argparse.Namespace) -> int:
    module = importlib.import_module(BENCHES[args.what])
    return int(module.main(args.rest) or 0)
