"""Server-side edge model: distill the global model into a small student, prune, export to ONNX, int8, report.

Names are re-exported lazily (PEP 562) so that ``fedcompress.distill.cli`` can register its subcommand
without importing torch, onnx or onnxruntime: each name's module loads on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "DEFAULT_EPOCHS": "settings",
    "DEFAULT_PRUNE_AMOUNT": "settings",
    "EDGE_FILE": "pipeline",
    "PRIVACY_NOTE": "distill",
    "TABLE_FILE": "pipeline",
    "DistillSettings": "settings",
    "FakeQuant": "qat",
    "build_edge_model": "pipeline",
    "conv_sparsity": "prune",
    "distill_after_run": "pipeline",
    "distill_model": "distill",
    "distill_run": "pipeline",
    "export_onnx": "export",
    "fit_to_teacher": "distill",
    "format_edge_table": "report",
    "kd_loss": "distill",
    "make_permanent": "prune",
    "measure_latency": "latency",
    "prune_model": "prune",
    "quantize_onnx": "quantize",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'fedcompress.distill' has no attribute {name!r}")
    return getattr(importlib.import_module(f"fedcompress.distill.{_EXPORTS[name]}"), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
