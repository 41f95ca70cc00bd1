"""The ``distill`` subcommand: ``fedcompress distill RUN_DIR --out DIR [--epochs N]``.

``register`` adds it to the main parser's subparsers; torch and the exporters load only when it runs.
"""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["register"]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def register(subparsers: Any) -> None:
    """Add ``distill`` to ``subparsers`` (the object ``ArgumentParser.add_subparsers`` returned)."""
    parser = subparsers.add_parser(
        "distill",
        help="edge model of a finished run: distill into a small student, prune, int8, export, report",
        description="Distill a run's global model (teacher) into a compact student on server-side proxy data "
        "(no client data), prune it, quantize it to int8, export TorchScript and ONNX, and write edge.json "
        "and edge.txt with size, PSNR/SSIM and batch-1 CPU latency against the teacher.",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="run folder holding result.json and its weights file")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for the edge model and its report")
    parser.add_argument("--epochs", type=_positive_int, default=None, help="distillation epochs (default 200)")
    parser.set_defaults(func=_cmd_distill)


def _cmd_distill(args: argparse.Namespace) -> int:
    from fedcompress.distill.pipeline import EDGE_FILE, distill_run
    from fedcompress.distill.report import format_edge_table

    report = distill_run(args.run_dir, args.out, epochs=args.epochs)
    print(format_edge_table(report), flush=True)
    print(f"edge report: {args.out}/{EDGE_FILE}", flush=True)
    return 0
