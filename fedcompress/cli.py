"""The ``fedcompress`` command: one entry point for runs, sweeps, reports, edge models, audits and benchmarks.

Every run setting comes from one schema (``fedcompress.config.RunConfig``): ``--config FILE.toml`` then
``--set key=value`` overrides, validated once at start. Heavy imports happen inside each subcommand.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from fedcompress.config import RunConfig, load_config_file, parse_overrides
from fedcompress.errors import FedCompressError

__all__ = ["build_config", "main"]


def build_config(config_file: str | None, overrides: list[str] | None, out: str | None = None) -> RunConfig:
    """Defaults <- config file <- ``--set`` items <- ``--out``, validated once."""
    values: dict[str, object] = dict(load_config_file(config_file)) if config_file else {}
    values.update(parse_overrides(overrides))
    if out:
        values["out-dir"] = out
    return RunConfig.from_mapping(values)


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="TOML file of settings (top-level keys, or a pyproject's app config)")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", help="override one setting (repeatable)")
    parser.add_argument("--out", help="output folder (the out-dir setting)")


def _cmd_simulate(args: argparse.Namespace) -> int:
    from simulations.simulate import simulate

    cfg = build_config(args.config, args.set, args.out)
    result = simulate(
        cfg, cpus_per_client=args.cpus_per_client, gpus_per_client=args.gpus_per_client, quiet=not args.verbose
    )
    return 0 if result["status"] in ("completed", "budget_exhausted") else 1


def _cmd_federate(args: argparse.Namespace) -> int:
    from simulations.federate import federate

    cfg = build_config(args.config, args.set, args.out)
    result = federate(
        cfg, supernodes=args.supernodes, tls=args.tls, node_auth=not args.no_node_auth, timeout=args.timeout
    )
    return 0 if result["status"] in ("completed", "budget_exhausted") else 1


def _cmd_settings(args: argparse.Namespace) -> int:
    from fedcompress.config_doc import settings_document

    print(settings_document(build_config(args.config, args.set)), end="")
    return 0


# The front benchmark runs sweeps, so it lives with the harness; the others measure the library itself.
_BENCHES = {name: f"fedcompress.bench.{name}" for name in ("codec", "federation", "privacy")} | {
    "front": "simulations.front"
}


def _cmd_bench(args: argparse.Namespace) -> int:
    module = importlib.import_module(_BENCHES[args.what])
    return int(module.main(args.rest) or 0)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fedcompress", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    settings = sub.add_parser("settings", help="print every setting, resolved, as a commented TOML file")
    settings.add_argument("--config", help="TOML file of settings to resolve")
    settings.add_argument("--set", action="append", metavar="KEY=VALUE", help="override one setting (repeatable)")
    settings.set_defaults(func=_cmd_settings)

    simulate = sub.add_parser(
        "simulate",
        help="one federation on Flower's simulation engine",
        epilog="Every setting, its default and allowed values: `fedcompress settings` (save it and edit it, then "
        "pass it back with --config).",
    )
    _add_run_options(simulate)
    simulate.add_argument("--cpus-per-client", type=float, default=1.0, help="Ray CPUs per virtual client")
    simulate.add_argument(
        "--gpus-per-client", type=float, default=0.0, help="Ray GPUs per virtual client (with device auto or cuda)"
    )
    simulate.add_argument("--verbose", action="store_true", help="show Flower's own logs")
    simulate.set_defaults(func=_cmd_simulate)

    federate = sub.add_parser("federate", help="a multi-process federation: SuperLink + N SuperNodes on loopback")
    _add_run_options(federate)
    federate.add_argument("--supernodes", type=int, default=None, help="number of SuperNodes (default num-clients)")
    federate.add_argument("--tls", action="store_true", help="TLS only (on anyway with SuperNode authentication)")
    federate.add_argument(
        "--no-node-auth", action="store_true", help="let any SuperNode join (off by default: only this run's keys)"
    )
    federate.add_argument("--timeout", type=float, default=1800.0, help="seconds before the run is stopped")
    federate.set_defaults(func=_cmd_federate)

    bench = sub.add_parser(
        "bench", help="benchmarks: codec ratios/throughput, federation cost, privacy cost, the compression front"
    )
    bench.add_argument("what", choices=sorted(_BENCHES))
    bench.add_argument("rest", nargs=argparse.REMAINDER, help="options of that benchmark (--help for them)")
    bench.set_defaults(func=_cmd_bench)

    for module in _COMMAND_MODULES:
        importlib.import_module(module).register(sub)
    return parser


# Subcommands owned by other parts; each module exposes ``register(subparsers)`` and imports heavy code lazily.
_COMMAND_MODULES: tuple[str, ...] = (
    "simulations.sweep",
    "simulations.report",
    "fedcompress.distill.cli",
    "fedcompress.audit.cli",
)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; errors in settings or runs print one clear line and exit non-zero."""
    args = _parser().parse_args(argv)
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
