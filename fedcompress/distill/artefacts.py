"""The edge model's files: write every artefact, reload it, check it, and describe it as a report row.

Float models get a weights file (``save_arrays``, the format of a run's ``model.pt``) and a frozen
TorchScript file; the int8 model gets a frozen TorchScript file and the packed ``.fcq8`` weights file; the
pruned student and the teacher also get ONNX files. Every file is loaded back and compared with its source
on proxy images (``export.FP32_TOLERANCE``; the packed int8 file must reproduce the int8 model exactly).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from fedcompress.config import RunConfig
from fedcompress.distill import export
from fedcompress.distill.int8_file import load_int8, save_int8
from fedcompress.federation.weights import save_arrays
from fedcompress.models import count_parameters

__all__ = ["export_rows"]


def export_rows(
    models: dict[str, nn.Module],
    cfg: RunConfig,
    inputs: torch.Tensor,
    out: Path,
    scratch: Path,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Write and reload every artefact and check each against its source; return the rows and the checks.

    ``models`` holds ``teacher``, ``student_fp32``, ``student_pruned`` and ``student_int8``. Teacher files go
    to ``scratch``, the student's to ``out``. Each row carries the reloaded ``module`` (for scoring and
    timing) besides its sizes; ``checks`` holds every max abs difference and the tolerance.
    """
    check = inputs[:32]
    example = inputs[:1]
    tol = export.FP32_TOLERANCE
    checks: dict[str, Any] = {
        "tolerance": tol,
        "onnx_opset": export.ONNX_OPSET,
        "onnx_exporter": "TorchScript-based (dynamo=False): onnxscript is not installed",
    }
    rows: list[dict[str, Any]] = []
    float_rows = [
        ("teacher_fp32", "teacher", scratch),
        ("student_fp32", "student_fp32", out),
        ("student_pruned", "student_pruned", out),
    ]
    for row_name, key, folder in float_rows:
        model = models[key]
        weights_path = folder / ("model.pt" if key == "teacher" else f"{key}.pt")
        save_arrays(weights_path, {k: v.detach().numpy() for k, v in model.state_dict().items()})
        ts_path = folder / f"{key}.ts"
        loaded, diff = export.export_torchscript(model, example, ts_path, check)
        export.check_close(f"TorchScript {ts_path.name}", diff, tol)
        checks[f"{key}_torchscript_max_abs_diff"] = diff
        rows.append(_row(row_name, "TorchScript fp32", "teacher_fp32", model, loaded, weights_path, ts_path))
    rows += _int8_rows(models["student_int8"], models["student_pruned"], cfg, example, check, out, checks)
    for row_name, key, folder in (("teacher_onnx", "teacher", scratch), ("student_onnx", "student_pruned", out)):
        path = folder / ("student.onnx" if key != "teacher" else "teacher.onnx")
        diff = export.export_onnx(models[key], example, path, check)
        export.check_close(f"ONNX {path.name}", diff, tol)
        checks[f"{row_name}_max_abs_diff"] = diff
        rows.append(
            _row(row_name, "onnxruntime fp32", "teacher_onnx", models[key], export.OnnxModule(path), None, path)
        )
    return rows, checks


def _int8_rows(
    int8: nn.Module,
    pruned: nn.Module,
    cfg: RunConfig,
    example: torch.Tensor,
    check: torch.Tensor,
    out: Path,
    checks: dict[str, Any],
) -> list[dict[str, Any]]:
    ts_path, packed_path = out / "student_int8.ts", out / "student_int8.fcq8"
    loaded, diff = export.export_torchscript(int8, example, ts_path, check)
    export.check_close(f"TorchScript {ts_path.name}", diff, export.FP32_TOLERANCE)
    meta = {
        "model": cfg.model,
        "width": cfg.student_width,
        "in_channels": int(example.shape[1]),
        "image_size": int(example.shape[-1]),
        "backend": torch.backends.quantized.engine,
    }
    save_int8(packed_path, int8, meta)
    unpacked, _ = load_int8(packed_path)
    packed_diff = export.max_abs_diff(unpacked, int8, check)
    export.check_close(f"packed int8 {packed_path.name}", packed_diff, 0.0)
    checks.update(
        student_int8_torchscript_max_abs_diff=diff,
        student_int8_packed_max_abs_diff=packed_diff,
        int8_vs_fp32_max_abs_diff=export.max_abs_diff(int8, pruned, check),
    )
    return [_row("student_int8", "TorchScript int8", "teacher_fp32", pruned, loaded, packed_path, ts_path)]


def _row(
    name: str,
    runtime: str,
    reference: str,
    float_model: nn.Module,
    runnable: Any,
    weights_path: Path | None,
    runnable_path: Path,
) -> dict[str, Any]:
    return {
        "name": name,
        "runtime": runtime,
        "reference": reference,
        "module": runnable,
        "params": count_parameters(float_model),
        "nonzero_params": int(sum(int((p != 0).sum()) for p in float_model.parameters())),
        "weights_file": weights_path.name if weights_path else None,
        "weights_bytes": weights_path.stat().st_size if weights_path else None,
        "runnable_file": runnable_path.name,
        "runnable_bytes": runnable_path.stat().st_size,
    }
