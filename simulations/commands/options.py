"""The options every run command shares: ``--config FILE.toml``, ``--set key=value`` (repeatable), ``--out``.

Every run setting comes from one schema (``fedcompress.config.RunConfig``): defaults, then the config file, then
the ``--set`` items, then ``--out``, validated once at start.
"""

from __future__ import annotations

import argparse

from fedcompress.config import RunConfig, load_config_file, parse_overrides

__all__ = ["add_run_options", "add_settings_options", "build_config", "finished"]


def build_config(config_file: str | None, overrides: list[str] | None, out: str | None = None) -> RunConfig:
    """Defaults <- config file <- ``--set`` items <- ``--out``, validated once."""
    values: dict[str, object] = dict(load_config_file(config_file)) if config_file else {}
    values.update(parse_overrides(overrides))
    if out:
        values["out-dir"] = out
    return RunConfig.from_mapping(values)


def add_settings_options(parser: argparse.ArgumentParser, config_help: str) -> None:
    """``--config`` and ``--set``."""
    parser.add_argument("--config", help=config_help)
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", help="override one setting (repeatable)")


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """``--config``, ``--set`` and ``--out``: the settings of one run and its folder."""
    add_settings_options(parser, "TOML file of settings (top-level keys, or a pyproject's app config)")
    parser.add_argument("--out", help="output folder (the out-dir setting)")


def finished(result: dict[str, object]) -> int:
    """The exit code of a run command: 0 when the run completed or stopped at its privacy budget, else 1."""
    return 0 if result["status"] in ("completed", "budget_exhausted") else 1
