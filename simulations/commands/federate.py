"""``fedcompress federate``: a multi-process federation on loopback (:func:`simulations.deploy.federate`)."""

from __future__ import annotations

import argparse
from typing import Any

from simulations.commands.options import add_run_options, build_config, finished

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Add ``fedcompress federate`` to the CLI's subparsers."""
    parser = subparsers.add_parser("federate", help="a multi-process federation: SuperLink + N SuperNodes on loopback")
    add_run_options(parser)
    parser.add_argument("--supernodes", type=int, default=None, help="number of SuperNodes (default num-clients)")
    parser.add_argument("--tls", action="store_true", help="TLS only (on anyway with SuperNode authentication)")
    parser.add_argument(
        "--no-node-auth", action="store_true", help="let any SuperNode join (off by default: only this run's keys)"
    )
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds before the run is stopped")
    parser.set_defaults(func=_cmd_federate)


def _cmd_federate(args: argparse.Namespace) -> int:
    from simulations.deploy.federate import federate

    cfg = build_config(args.config, args.set, args.out)
    result = federate(
        cfg, supernodes=args.supernodes, tls=args.tls, node_auth=not args.no_node_auth, timeout=args.timeout
    )
    return finished(result)
