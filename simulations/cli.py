"""The ``fedcompress`` command: one entry point for runs, sweeps, reports, edge models, audits and benchmarks.

Every run setting comes from one schema (``fedcompress.config.RunConfig``): ``--config FILE.toml`` then
``--set key=value`` overrides, validated once at start. Heavy imports happen inside each subcommand.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from typing import Any

from fedcompress.errors import FedCompressError

__all__ = ["COMMANDS", "build_parser", "dispatch", "main", "run_alone"]

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


def dispatch(args: argparse.Namespace, name: str, interrupted: str) -> int:
    """Run a parsed command; a bad setting or input prints ``{name}: error: ...`` (one line) and returns 2.

    Ctrl-C (or SIGTERM where the command turns it into one) prints ``interrupted`` and returns 130.
    """
    try:
        return int(args.func(args))
    except (FedCompressError, ValueError, FileNotFoundError) as e:
        print(f"{name}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(interrupted, file=sys.stderr)
        return 130


def run_alone(register: Callable[[Any], None], command: str, argv: Sequence[str] | None, *, interrupted: str) -> int:
    """``python -m simulations.<command> ...``: one subcommand on its own, without the ``fedcompress`` parser."""
    parser = argparse.ArgumentParser(prog=f"python -m simulations.{command}")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args([command, *(sys.argv[1:] if argv is None else argv)])
    return dispatch(args, command, interrupted)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; errors in settings or runs print one clear line and exit non-zero."""
    args = build_parser().parse_args(argv)
    name = f"fedcompress {args.command}"
    return dispatch(args, name, f"{name}: interrupted")


if __name__ == "__main__":
    sys.exit(main())
