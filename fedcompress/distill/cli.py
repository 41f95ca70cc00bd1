"""The ``distill`` subcommand: ``fedcompress distill RUN_DIR --out DIR [--set key=value ...] [--epochs N]``.

``register`` adds it to the main parser's subparsers; only the settings module (no torch, onnx or onnxruntime)
loads until the command runs.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from fedcompress.distill.settings import DEFAULT_EPOCHS, settings_help

__all__ = ["TIME_ESTIMATE", "register"]

TIME_ESTIMATE = (
    "Time: about 5 minutes with the defaults on one CPU core for a 32x32-pixel run (benchmarks/edge.py, one "
    "torch thread: 310 s, of which distillation 3.4 min, the pruning fine-tune 1.3 min, export, int8 and "
    "scoring 30 s); distillation grows with epochs x proxy-samples x image pixels. Progress lines (epoch, "
    "loss, ETA) go to stderr."
)


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
        help="edge model of a finished run: distill into a small student, prune, ONNX, int8 ONNX, report",
        description="Distill a run's global model (teacher) into a compact student on server-side proxy data "
        "(no client data), prune it, export it to ONNX (torch.onnx dynamo exporter), quantize it to int8 with "
        "ONNX Runtime's static quantization (QDQ), and write edge.json and edge.txt: size, PSNR/SSIM and "
        "batch-1 onnxruntime latency of the noisy input, the teacher and each student. " + TIME_ESTIMATE,
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="run folder holding result.json and its weights file")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for the edge model and its report")
    parser.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help=f"override one distillation setting (repeatable); settings and defaults: {settings_help()}",
    )
    parser.add_argument(
        "--epochs", type=_positive_int, default=None, help=f"distillation epochs (default {DEFAULT_EPOCHS})"
    )
    parser.set_defaults(func=_cmd_distill)


def _cmd_distill(args: argparse.Namespace) -> int:
    from fedcompress.distill.pipeline import EDGE_FILE, distill_run
    from fedcompress.distill.report import format_edge_table
    from fedcompress.distill.settings import DistillSettings

    base = DistillSettings(epochs=args.epochs) if args.epochs else None
    settings = DistillSettings.from_overrides(args.set, base)
    _show_progress()
    report = distill_run(args.run_dir, args.out, settings=settings)
    print(format_edge_table(report), flush=True)
    print(f"edge report: {args.out}/{EDGE_FILE}", flush=True)
    return 0


def _show_progress() -> None:
    """Print the pipeline's progress lines (epochs, loss, ETA; each stage's time) on stderr with a timestamp."""
    from fedcompress.distill.progress import LOGGER_NAME

    logger = logging.getLogger(LOGGER_NAME)
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
