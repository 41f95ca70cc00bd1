"""The ``fedcompress`` command: one entry point for runs, sweeps, reports, edge models, audits and benchmarks.

Every run setting comes from one schema (``fedcompress.config.RunConfig``): ``--config FILE.toml`` then
``--set key=value`` overrides, validated once at start. Heavy imports happen inside each subcommand.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from fedcompress.errors import FedCompressError

__all__ = ["COMMANDS", "build_parser", "main"]

# One module per subcommand, in the order ``fedcompress --help`` lists them; each has ``register(subparsers)``.
# The harness imports the library's commands (distill, audit), never the reverse.
COMMANDS: tuple[str, ...] = (
    "simulations.commands.settings",
    "simulations.commands.simulate",
    "simulations.commands.federate",
    "simulations.commands.bench",
    "simulations.commands.sweep",
    "simulations.commands.report",
    "fedcompress.distill.cli",
    "fedcompress.audit.cli",
)


def build_parser() -> argparse.ArgumentParser:
    """The ``fedcompress`` parser, with every module of ``COMMANDS`` registered."""
    parser = argparse.ArgumentParser(prog="fedcompress", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True)
    for module in COMMANDS:
        importlib.import_module(module).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; errors in settings or runs print one clear line and exit non-zero."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (FedCompressError, ValueError, FileNotFoundError) as e:
        print(f"fedcompress {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"fedcompress {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
