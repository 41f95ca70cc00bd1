"""The edge model's files: write each float model's weights and ONNX file, reload and check them, build the int8 file.

Float models (teacher, fp32 student, pruned student) get a weights file (``save_arrays``, the format of a
run's ``model.pt``) and an ONNX file, checked in onnxruntime against PyTorch (max abs diff <= ``FP32_TOLERANCE``).
The int8 student is ONE ``.onnx`` file from ORT's static quantization of the pruned student (after the
optional quantization-aware fine-tune), calibrated with every method asked for and kept with the one closest to
the teacher on proxy images that calibration did not read. Every file named in a row is in ``out``.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fedcompress.distill import export
from fedcompress.distill.quantize import CALIBRATION_METHODS, quantize_onnx
from fedcompress.federation.weights import save_arrays
from fedcompress.models import count_parameters

__all__ = ["FLOAT_ROWS", "INT8_FILE", "choose_int8", "float_rows", "model_row"]

FLOAT_ROWS: tuple[str, ...] = ("teacher", "student_fp32", "student_pruned")
INT8_FILE = "student_int8.onnx"


def float_rows(
    models: dict[str, nn.Module], example: torch.Tensor, check: torch.Tensor, out: Path
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Write ``NAME.pt`` and ``NAME.onnx`` for each of ``FLOAT_ROWS``; return their rows and max abs diffs."""
    rows, diffs = [], {}
    for name in FLOAT_ROWS:
        model = models[name]
        weights, runnable = out / f"{name}.pt", out / f"{name}.onnx"
        save_arrays(weights, {k: v.detach().numpy() for k, v in model.state_dict().items()})
        export.export_onnx(model, example, runnable)
        module = export.OnnxModule(runnable)
        diffs[name] = export.max_abs_diff(module, model, check)
        export.check_close(f"ONNX {runnable.name}", diffs[name], export.FP32_TOLERANCE)
        rows.append(model_row(name, "onnxruntime fp32", model, module, weights, runnable))
    return rows, diffs


def choose_int8(
    source: Path,
    teacher: nn.Module,
    calibration: np.ndarray,
    selection: torch.Tensor,
    methods: tuple[str, ...],
    out: Path,
    scratch: Path,
) -> tuple[Path, dict[str, Any], dict[str, Path]]:
    """Quantize the float ONNX file ``source`` with each calibration method; keep the best as ``out/INT8_FILE``.

    Best: smallest mean squared difference from the teacher's output on ``selection`` (proxy images not in
    ``calibration``). Returns the kept file, the quantization report with every candidate's error and size,
    and each candidate's file (in ``scratch``).
    """
    if not methods or any(m not in CALIBRATION_METHODS for m in methods):
        raise ValueError(f"methods must be a non-empty subset of {list(CALIBRATION_METHODS)}, got {methods!r}")
    with torch.no_grad():
        target = teacher(selection)
    candidates: dict[str, dict[str, Any]] = {}
    for method in methods:
        path = scratch / f"int8-{method}.onnx"
        report = quantize_onnx(source, path, calibration, method=method)
        error = float(torch.mean((export.OnnxModule(path)(selection) - target) ** 2))
        candidates[method] = {"report": report, "path": path, "mse_to_teacher": error, "bytes": path.stat().st_size}
    best = min(candidates, key=lambda m: candidates[m]["mse_to_teacher"])
    kept = out / INT8_FILE
    shutil.copyfile(candidates[best]["path"], kept)
    report = {
        **candidates[best]["report"],
        "selection": f"smallest MSE to the teacher on {len(selection)} proxy images not used for calibration",
        "candidates": {m: {"mse_to_teacher": c["mse_to_teacher"], "bytes": c["bytes"]} for m, c in candidates.items()},
    }
    return kept, report, {m: c["path"] for m, c in candidates.items()}


def model_row(
    name: str,
    runtime: str,
    float_model: nn.Module,
    module: Any,
    weights_path: Path | None,
    runnable_path: Path,
) -> dict[str, Any]:
    """A report row before scoring: sizes, parameter counts and the runnable ``module`` (popped after timing)."""
    return {
        "name": name,
        "runtime": runtime,
        "module": module,
        "params": count_parameters(float_model),
        "nonzero_params": int(sum(int((p != 0).sum()) for p in float_model.parameters())),
        "weights_file": weights_path.name if weights_path else None,
        "weights_bytes": weights_path.stat().st_size if weights_path else None,
        "runnable_file": runnable_path.name,
        "runnable_bytes": runnable_path.stat().st_size,
    }
