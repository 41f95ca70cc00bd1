"""The edge pipeline: teacher -> distilled student -> pruned and fine-tuned -> ONNX -> int8 ONNX -> edge report.

``build_edge_model`` runs every stage on a teacher module; ``distill_run`` rebuilds the teacher from any run
folder (``result.json`` + its weights file) and ``distill_after_run`` takes the server's final weights.
Every exported file is reloaded in onnxruntime and checked against the PyTorch model it came from before it
is measured. Files written to ``out_dir`` (every file a row names is there): ``edge.json``, ``edge.txt``,
``teacher.pt``/``.onnx``, ``student_fp32.pt``/``.onnx``, ``student_pruned.pt``/``.onnx`` and
``student_int8.onnx``.
"""

from __future__ import annotations

import copy
import logging
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fedcompress.config import RunConfig
from fedcompress.data import DenoisingSet, proxy_data, test_data_for
from fedcompress.distill import export
from fedcompress.distill.artefacts import choose_int8, float_rows, model_row
from fedcompress.distill.distill import distill_model, fit_to_teacher, mse_to_teacher
from fedcompress.distill.latency import measure_latency
from fedcompress.distill.progress import LOGGER_NAME, format_seconds
from fedcompress.distill.prune import conv_sparsity, make_permanent, prune_model
from fedcompress.distill.qat import FakeQuant
from fedcompress.distill.quantize import CALIBRATION_METHODS
from fedcompress.distill.report import REPORT_VERSION, add_ratios, check_targets, format_edge_table, verdict
from fedcompress.distill.settings import DistillSettings
from fedcompress.federation.results import read_result
from fedcompress.federation.weights import load_arrays
from fedcompress.files import atomic_write_bytes, atomic_write_json
from fedcompress.models import model_from_state
from fedcompress.seeding import torch_generator
from fedcompress.training import evaluate

__all__ = ["EDGE_FILE", "TABLE_FILE", "build_edge_model", "distill_after_run", "distill_run"]

EDGE_FILE = "edge.json"
TABLE_FILE = "edge.txt"
_WEIGHTS_FILE = "model.pt"  # a run's weights file when result.json does not name one
log = logging.getLogger(LOGGER_NAME)


def distill_run(run_dir: str | Path, out_dir: str | Path, *, settings: DistillSettings | None = None) -> dict[str, Any]:
    """Build the edge model of a finished run: its ``result.json`` config and weights are the teacher.

    Raises ``FileNotFoundError`` for a missing folder, ``result.json`` or weights file, and ``ValueError``
    (``ConfigError`` for settings) when the result or the weights do not describe a model this code builds.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run folder not found: {run_dir}")
    result = read_result(run_dir)
    if not isinstance(result.get("config"), dict):
        raise ValueError(f"{run_dir / 'result.json'} has no 'config' mapping: is it a fedcompress result?")
    cfg = RunConfig.from_mapping(result["config"])
    name = result.get("weights") or _WEIGHTS_FILE
    if not isinstance(name, str) or Path(name).name != name:
        raise ValueError(f"result.json names weights file {name!r}; expected a file name inside the run folder")
    weights_path = run_dir / name
    arrays = load_arrays(weights_path)
    try:
        teacher = model_from_state(cfg.model, cfg.width, arrays)
    except ValueError as e:
        raise ValueError(f"{weights_path} is not a {cfg.model} model at width {cfg.width}: {e}") from e
    source = {
        "run_dir": str(run_dir.resolve()),
        "weights_file": name,
        "status": result.get("status"),
        "final_psnr": (result.get("final") or {}).get("psnr"),
        "epsilon": (result.get("final") or {}).get("epsilon"),
    }
    return build_edge_model(teacher, cfg, out_dir, settings=settings, source=source)


def distill_after_run(
    weights: Mapping[str, np.ndarray], cfg: RunConfig, out_dir: str | Path, settings: DistillSettings | None = None
) -> dict[str, Any]:
    """Build the edge model from the server's final global ``weights`` (called when ``distill = true``)."""
    teacher = model_from_state(cfg.model, cfg.width, weights)
    return build_edge_model(teacher, cfg, out_dir, settings=settings, source={"run_dir": None})


def build_edge_model(
    teacher: nn.Module,
    cfg: RunConfig,
    out_dir: str | Path,
    *,
    settings: DistillSettings | None = None,
    source: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Distill, prune, export, quantize, evaluate and time; write ``edge.json`` and ``edge.txt``; return the report.

    ``teacher`` is family ``cfg.model`` at width ``cfg.width`` and is not changed. ``cfg`` supplies the
    student width, proxy and test-set settings and the seed (the generator is ``(seed, "distill")``);
    ``settings`` (default ``DistillSettings()``) may override the student width and proxy-set size and sets
    everything else. ``out_dir`` is created if missing; the files in the module docstring are (over)written.
    ``source`` (where the teacher came from) is copied into the report.
    """
    settings = settings or DistillSettings()
    cfg = cfg.replace(proxy_samples=settings.proxy_samples or cfg.proxy_samples)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    generator = torch_generator(cfg.seed, "distill")
    clock = _Clock()
    # --- data: proxy inputs (no client's records) and the held-out test set -------------------------------
    proxy = proxy_data(cfg.proxy_samples, image_size=cfg.image_size, seed=cfg.seed, dataset=cfg.dataset)
    inputs = torch.from_numpy(np.array(proxy, dtype=np.float32))
    test = test_data_for(cfg)
    # --- distill, then prune with a fine-tune by distillation ---------------------------------------------
    student, distill_report = distill_model(
        teacher,
        cfg,
        student_model=settings.student_model,
        student_width=settings.width_for(cfg.model, cfg.student_width),
        epochs=settings.epochs,
        generator=generator,
        proxy=proxy,
    )
    clock.lap("distill")
    pruned, prune_report = _prune(student, teacher, inputs, settings, generator)
    clock.lap("prune")
    with tempfile.TemporaryDirectory(prefix="fedcompress-edge-") as tmp:
        scratch = Path(tmp)
        # --- ONNX export of the float models, then int8 -------------------------------------------------
        models = {"teacher": teacher, "student_fp32": student, "student_pruned": pruned}
        rows, diffs = float_rows(models, inputs[:2], inputs[:32], out)
        clock.lap("export")
        int8_row, quantize_report = _int8(pruned, teacher, inputs, settings, generator, out, scratch)
        rows.append(int8_row)
        clock.lap("quantize")
        # --- score and time every row -------------------------------------------------------------------
        rows.insert(0, _noisy_row())
        _score(rows, test, quantize_report, scratch)
        latency_input = _time(rows, test, settings.latency_repeats)
        clock.lap("evaluate_and_time")
    report: dict[str, Any] = {
        "version": REPORT_VERSION,
        "source": source or {},
        "config": cfg.to_dict(),
        "settings": settings.to_dict(),
        "test_set": cfg.dataset,
        "test_samples": len(test),
        "distill": distill_report,
        "prune": prune_report,
        "quantize": quantize_report,
        "exports": _exports(diffs, quantize_report.pop("int8_vs_source_max_abs_diff")),
        "rows": add_ratios(rows),
        "latency_runs": settings.latency_repeats,
        "latency_input": latency_input,
        "files": sorted(row[key] for row in rows for key in ("weights_file", "runnable_file") if row[key]),
        "seconds": clock.seconds(),
    }
    report["targets"] = check_targets(report["rows"], teacher_margin_db=settings.teacher_margin_db)
    report["verdict"] = verdict(report["targets"])
    atomic_write_json(out / EDGE_FILE, report)
    atomic_write_bytes(out / TABLE_FILE, (format_edge_table(report) + "\n").encode())
    return report


def _exports(diffs: dict[str, float], int8_diff: float) -> dict[str, Any]:
    """How the ONNX files were made and how closely each matches its PyTorch model."""
    return {
        "exporter": f"{export.EXPORTER} (torch {torch.__version__})",
        "onnx_opset": export.ONNX_OPSET,
        "dynamic_axes": "batch, height, width",
        "tolerance": export.FP32_TOLERANCE,
        "max_abs_diff": diffs,
        "int8_vs_pruned_max_abs_diff": int8_diff,
    }


class _Clock:
    """Wall and CPU seconds per stage, each logged as it ends."""

    def __init__(self) -> None:
        self.start, self.cpu_start = time.monotonic(), time.process_time()
        self.stages: dict[str, float] = {}

    def lap(self, stage: str) -> None:
        self.stages[stage] = time.monotonic() - self.start - sum(self.stages.values())
        log.info("%s done in %s", stage, format_seconds(self.stages[stage]))

    def seconds(self) -> dict[str, float]:
        total = {"total": time.monotonic() - self.start, "total_cpu": time.process_time() - self.cpu_start}
        return {**self.stages, **total}


def _prune(
    student: nn.Module,
    teacher: nn.Module,
    inputs: torch.Tensor,
    settings: DistillSettings,
    generator: torch.Generator,
) -> tuple[nn.Module, dict[str, Any]]:
    """A pruned, fine-tuned, permanent copy of ``student`` and what it cost in fit to the teacher."""
    pruned = prune_model(copy.deepcopy(student), settings.prune_amount)
    after_prune = mse_to_teacher(pruned, teacher, inputs)
    epochs = settings.finetune
    fit_to_teacher(pruned, teacher, inputs, epochs=epochs, generator=generator, lr=3e-3, label="prune fine-tune")
    make_permanent(pruned)
    sparsity = conv_sparsity(pruned)
    report = {
        "method": "global unstructured L1 magnitude (torch.nn.utils.prune), then prune.remove",
        "amount": settings.prune_amount,
        "finetune_epochs": epochs,
        **{k: sparsity[k] for k in ("sparsity", "zero_weights", "conv_weights", "masks_attached", "layers")},
        "mse_to_teacher_before_prune": mse_to_teacher(student, teacher, inputs),
        "mse_to_teacher_after_prune": after_prune,
        "mse_to_teacher_after_finetune": mse_to_teacher(pruned, teacher, inputs),
        "note": "unstructured zeros make neither a dense ONNX file nor its kernels smaller or faster",
    }
    return pruned, report


def _int8(
    pruned: nn.Module,
    teacher: nn.Module,
    inputs: torch.Tensor,
    settings: DistillSettings,
    generator: torch.Generator,
    out: Path,
    scratch: Path,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The int8 row: optional QAT fine-tune, export, ORT static quantization with the chosen calibration."""
    n_cal = min(settings.calibration_samples, len(inputs))
    calibration, selection = inputs[:n_cal], inputs[n_cal:] if n_cal < len(inputs) else inputs
    source = pruned
    if settings.qat_epochs:
        source = copy.deepcopy(pruned)
        fake = FakeQuant(source, calibration)
        epochs = settings.qat_epochs
        fit_to_teacher(source, teacher, inputs, epochs=epochs, generator=generator, lr=1e-3, label="qat")
        fake.remove()
        export.export_onnx(source, inputs[:2], scratch / "student_qat.onnx")
    source_path = scratch / "student_qat.onnx" if settings.qat_epochs else out / "student_pruned.onnx"
    methods = CALIBRATION_METHODS if settings.calibration == "auto" else (settings.calibration,)
    kept, report, candidates = choose_int8(source_path, teacher, calibration.numpy(), selection, methods, out, scratch)
    module = export.OnnxModule(kept)
    report["path"] = (
        f"quantization-aware fine-tune ({settings.qat_epochs} epochs) + ORT static quantization"
        if settings.qat_epochs
        else "post-training static quantization (ORT)"
    )
    report["candidate_files"] = candidates
    report["int8_vs_source_max_abs_diff"] = export.max_abs_diff(module, pruned, inputs[:32])
    return model_row("student_int8", "onnxruntime int8 QDQ", pruned, module, None, kept), report


def _noisy_row() -> dict[str, Any]:
    """The do-nothing baseline: the noisy input returned as it is."""
    return {
        "name": "noisy_input",
        "runtime": "none (do nothing)",
        "module": nn.Identity(),
        "params": 0,
        "nonzero_params": 0,
        "weights_file": None,
        "weights_bytes": None,
        "runnable_file": None,
        "runnable_bytes": None,
    }


def _score(rows: list[dict[str, Any]], test: DenoisingSet, quantize_report: dict[str, Any], scratch: Path) -> None:
    """PSNR/SSIM of every row on ``test``; each calibration candidate's too (reported, not used to choose)."""
    for row in rows:
        scores = evaluate(row["module"], test)
        row.update(psnr=scores["psnr"], ssim=scores["ssim"])
    for method, path in quantize_report.pop("candidate_files").items():
        quantize_report["candidates"][method]["test_psnr"] = evaluate(export.OnnxModule(path), test)["psnr"]


def _time(rows: list[dict[str, Any]], test: DenoisingSet, repeats: int) -> str:
    """Batch-1 latency of every onnxruntime row, interleaved; the noisy row has none. Returns the input shape."""
    example = np.ascontiguousarray(test.noisy[:1], dtype=np.float32)
    timed = {row["name"]: row["module"].run for row in rows if row["runnable_file"]}
    latency = measure_latency(timed, example, repeats=repeats)
    for row in rows:
        row.pop("module")
        stats = latency.get(row["name"], {})
        row.update(
            latency_ms=stats.get("median_ms"), latency_p10_ms=stats.get("p10_ms"), latency_p90_ms=stats.get("p90_ms")
        )
    return "x".join(str(d) for d in example.shape)
