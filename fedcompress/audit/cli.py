"""The ``fedcompress audit`` subcommand: ``audit [--config FILE.toml] [--quick] --out DIR``.

Only argparse is imported at registration; torch, Opacus and the attack load when the command runs.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

__all__ = ["register"]


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``audit`` subcommand to ``subparsers`` (from ``ArgumentParser.add_subparsers``)."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "audit",
        help="measured leakage: gradient inversion per defence, and an empirical DP check",
        description="Attack the update of the real client round under each defence (codec, sample-level DP, "
        "both; and a server that regenerates the DP noise from public values), report reconstruction PSNR/SSIM "
        "beside epsilon, and bound the deployed client-level mechanism's epsilon empirically. Exits 1 if the "
        "real mechanism is flagged or a deliberately broken control is not.",
    )
    parser.add_argument("--config", help="TOML file of audit settings (top level or an [audit] table)")
    parser.add_argument("--quick", action="store_true", help="smoke-test size: batch 1, one codec, one epsilon")
    parser.add_argument("--out", required=True, help="output folder for audit.json and the image grids")
    parser.set_defaults(func=run_command)
    return parser


def run_command(args: argparse.Namespace) -> int:
    """Run the audit; exit 1 if the DP check flags the real mechanism or fails to flag the control."""
    from fedcompress.audit.report import dp_check_table, leakage_table
    from fedcompress.audit.runner import run_audit
    from fedcompress.audit.settings import AuditConfig, load_audit_config

    _show_progress()
    config = load_audit_config(args.config) if args.config else AuditConfig()
    if args.quick:
        config = config.quick()
    result = run_audit(config, args.out)
    print(leakage_table(result["leakage"]))
    print(dp_check_table(result["dp_check"]))
    status = 0
    for row in result["dp_check"]:
        if row["passed"] == row["control"]:
            status = 1  # the real mechanism flagged, or a broken one not
    print(f"wrote {args.out}/audit.json ({result['seconds']:.0f} s)")
    return status


def _show_progress() -> None:
    """Print the audit's progress lines (each attack done, with its PSNR) with a timestamp."""
    logger = logging.getLogger("fedcompress.audit")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False  # a root handler some library installed would print every line twice
