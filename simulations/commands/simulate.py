"""``fedcompress simulate``: one federation on Flower's simulation engine (:func:`simulations.run.simulate`)."""

from __future__ import annotations

import argparse
from typing import Any

from simulations.commands.options import add_run_options, build_config, finished

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Add ``fedcompress simulate`` to the CLI's subparsers."""
    parser = subparsers.add_parser(
        "simulate",
        help="one federation on Flower's simulation engine",
        epilog="Every setting, its default and allowed values: `fedcompress settings` (save it and edit it, then "
        "pass it back with --config).",
    )
    add_run_options(parser)
    parser.add_argument("--cpus-per-client", type=float, default=1.0, help="Ray CPUs per virtual client")
    parser.add_argument(
        "--gpus-per-client", type=float, default=0.0, help="Ray GPUs per virtual client (with device auto or cuda)"
    )
    parser.add_argument("--verbose", action="store_true", help="show Flower's own logs")
    parser.set_defaults(func=_cmd_simulate)


def _cmd_simulate(args: argparse.Namespace) -> int:
    from simulations.run.simulate import simulate

    cfg = build_config(args.config, args.set, args.out)
    result = simulate(
        cfg, cpus_per_client=args.cpus_per_client, gpus_per_client=args.gpus_per_client, quiet=not args.verbose
    )
    return finished(result)
