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
        description="Attack a client's update under each defence (codec, sample-level DP, both), report "
        "reconstruction PSNR/SSIM beside epsilon, and bound the client-level mechanism's epsilon "
        "empirically.",
    )
    parser.add_argument("--config", help="TOML file of audit settings (top level or an [audit] table)")
    parser.add_argument("--quick", action="store_true", help="smoke-test size: batch 1, one codec, one epsilon")
    parser.add_argument("--out", required=True, help="output folder for audit.json and the image grids")
    parser.set_defaults(func=run_command)
    return parser


def run_command(args: argparse.Namespace) -> int:
    """Run the audit; exit 1 if the DP check flags the real mechanism or fails to flag the control."""
    from fedcompress.audit.report import leakage_table
    from fedcompress.audit.runner import run_audit
    from fedcompress.audit.settings import AuditConfig, load_audit_config

    _show_progress()
    config = load_audit_config(args.config) if args.config else AuditConfig()
    if args.quick:
        config = config.quick()
    result = run_audit(config, args.out)
    print(leakage_table(result["leakage"]))
    status = 0
    for row in result["dp_check"]:
        verdict = "flagged" if not row["passed"] else "consistent"
        print(
            f"DP check, {row['mechanism']}: epsilon lower bound {row['epsilon_lower_bound']:.3f} "
            f"vs accountant {row['epsilon']:.3f} (delta {row['delta']:g}, z {row['noise_multiplier']:g}, "
            f"C {row['clip_norm']:g}, "
            f"{row['confidence']:.0%} confidence, {row['trials']} trials per input): {verdict}"
        )
        if row["passed"] == row["control"]:
            status = 1
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
