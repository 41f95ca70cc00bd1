"""``fedcompress settings``: every setting, resolved, as a commented TOML file (save it, edit it, pass it back)."""

from __future__ import annotations

import argparse
from typing import Any

from simulations.commands.options import add_settings_options, build_config

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Add ``fedcompress settings`` to the CLI's subparsers."""
    parser = subparsers.add_parser("settings", help="print every setting, resolved, as a commented TOML file")
    add_settings_options(parser, "TOML file of settings to resolve")
    parser.set_defaults(func=_cmd_settings)


def _cmd_settings(args: argparse.Namespace) -> int:
    from fedcompress.config_doc import settings_document

    print(settings_document(build_config(args.config, args.set)), end="")
    return 0
