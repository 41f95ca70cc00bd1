"""The edge pipeline: teacher -> distilled student -> pruned and fine-tuned -> int8 -> exports -> edge report.

``build_edge_model`` runs every stage on a teacher module; ``distill_run`` rebuilds the teacher from any run
folder (``result.json`` + its weights file) and ``distill_after_run`` takes the server's final weights.
Every exported file is reloaded and checked against the PyTorch model it came from before it is measured.
Files written to ``out_dir``: ``edge.json``, ``edge.txt``, ``student_fp32.pt``/``.ts``,
``student_pruned.pt``/``.ts``, ``student_int8.ts``, ``student_int8.fcq8`` and ``student.onnx``
(the teacher's own exports, made only to measure it, go to a temporary folder).
"""

from __future__ import annotations

import copy
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fedcompress.config import RunConfig
from fedcompress.data import proxy_data, test_data_for
from fedcompress.distill.artefacts import export_rows
from fedcompress.distill.distill import DEFAULT_EPOCHS, distill_model, fit_to_teacher, mse_to_teacher
from fedcompress.distill.latency import measure_latency
from fedcompress.distill.prune import conv_sparsity, make_permanent, prune_model
from fedcompress.distill.quantize import quantize_int8
from fedcompress.distill.report import REPORT_VERSION, add_ratios, check_targets, format_edge_table
from fedcompress.federation.results import read_result
from fedcompress.federation.weights import load_arrays
from fedcompress.files import atomic_write_bytes, atomic_write_json
from fedcompress.models import model_from_state
from fedcompress.seeding import torch_generator
from fedcompress.training import evaluate

__all__ = ["DEFAULT_PRUNE_AMOUNT", "EDGE_FILE", "TABLE_FILE", "build_edge_model", "distill_after_run", "distill_run"]

EDGE_FILE = "edge.json"
TABLE_FILE = "edge.txt"
DEFAULT_PRUNE_AMOUNT = 0.3  # 0.5 cost the width-4 student 0.4-0.6 dB after fine-tuning, 0.3 about 0.1 dB
_WEIGHTS_FILE = "model.pt"  # a run's weights file when result.json does not name one


def distill_run(
    run_dir: str | Path, out_dir: str | Path, *, epochs: int | None = None, latency_repeats: int = 200
) -> dict[str, Any]:
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
    return build_edge_model(teacher, cfg, out_dir, epochs=epochs, latency_repeats=latency_repeats, source=source)


def distill_after_run(weights: Mapping[str, np.ndarray], cfg: RunConfig, out_dir: str | Path) -> dict[str, Any]:
    """Build the edge model from the server's final global ``weights`` (called when ``distill = true``)."""
    teacher = model_from_state(cfg.model, cfg.width, weights)
    return build_edge_model(teacher, cfg, out_dir, source={"run_dir": None, "weights_file": _WEIGHTS_FILE})


def build_edge_model(
    teacher: nn.Module,
    cfg: RunConfig,
    out_dir: str | Path,
    *,
    epochs: int | None = None,
    prune_amount: float = DEFAULT_PRUNE_AMOUNT,
    latency_repeats: int = 200,
    source: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Distill, prune, quantize, export, evaluate and time; write ``edge.json`` and ``edge.txt``; return the report.

    Parameters
    ----------
    teacher : nn.Module
        Family ``cfg.model`` at width ``cfg.width``; not changed.
    cfg : RunConfig
        Student width, proxy and test-set settings, seed (the generator is ``(seed, "distill")``).
    out_dir : str or Path
        Created if missing; the files listed in the module docstring are (over)written.
    epochs : int, optional
        Distillation epochs (default ``DEFAULT_EPOCHS``); the fine-tune after pruning runs a quarter of them.
    prune_amount : float
        Share of all conv weights zeroed by global magnitude pruning.
    latency_repeats : int
        Interleaved timed runs per row.
    source : dict, optional
        Where the teacher came from, copied into the report.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    epochs = DEFAULT_EPOCHS if epochs is None else epochs
    generator = torch_generator(cfg.seed, "distill")
    seconds: dict[str, float] = {}
    t0, cpu0 = time.monotonic(), time.process_time()
    # --- data: proxy inputs (no client's records) and the held-out test set -----------------------------
    proxy = proxy_data(cfg.proxy_samples, image_size=cfg.image_size, seed=cfg.seed, dataset=cfg.dataset)
    test = test_data_for(cfg)
    inputs = torch.from_numpy(np.array(proxy, dtype=np.float32))
    # --- distill, then prune with a fine-tune by distillation ---------------------------------------------
    student, distill_report = distill_model(teacher, cfg, epochs=epochs, generator=generator, proxy=proxy)
    seconds["distill"] = time.monotonic() - t0
    pruned, prune_report = _prune(student, teacher, inputs, prune_amount, max(1, epochs // 4), generator)
    seconds["prune"] = time.monotonic() - t0 - sum(seconds.values())
    # --- int8 ---------------------------------------------------------------------------------------------
    int8, quantize_report = quantize_int8(pruned, inputs)
    seconds["quantize"] = time.monotonic() - t0 - sum(seconds.values())
    # --- export, reload, check ----------------------------------------------------------------------------
    with tempfile.TemporaryDirectory(prefix="fedcompress-edge-") as scratch:
        models = {"teacher": teacher, "student_fp32": student, "student_pruned": pruned, "student_int8": int8}
        rows, checks = export_rows(models, cfg, inputs, out, Path(scratch))
        seconds["export"] = time.monotonic() - t0 - sum(seconds.values())
        # --- evaluate and time every row, then the report ---------------------------------------------
        for row in rows:
            scores = evaluate(row["module"], test)
            row.update(psnr=scores["psnr"], ssim=scores["ssim"])
        example = torch.from_numpy(np.array(test.noisy[:1]))
        latency = measure_latency({r["name"]: r.pop("module") for r in rows}, example, repeats=latency_repeats)
        for row in rows:
            stats = latency[row["name"]]
            row.update(latency_ms=stats["median_ms"], latency_p10_ms=stats["p10_ms"], latency_p90_ms=stats["p90_ms"])
    seconds["evaluate_and_time"] = time.monotonic() - t0 - sum(seconds.values())
    seconds["total"] = time.monotonic() - t0
    seconds["total_cpu"] = time.process_time() - cpu0
    rows = add_ratios(rows)
    report: dict[str, Any] = {
        "version": REPORT_VERSION,
        "source": source or {},
        "config": cfg.to_dict(),
        "test_samples": len(test),
        "distill": distill_report,
        "prune": prune_report,
        "quantize": quantize_report,
        "exports": checks,
        "rows": rows,
        "latency_runs": latency_repeats,
        "seconds": seconds,
    }
    report["targets"] = check_targets(rows)
    atomic_write_json(out / EDGE_FILE, report)
    atomic_write_bytes(out / TABLE_FILE, (format_edge_table(report) + "\n").encode())
    return report


def _prune(
    student: nn.Module,
    teacher: nn.Module,
    inputs: torch.Tensor,
    amount: float,
    epochs: int,
    generator: torch.Generator,
) -> tuple[nn.Module, dict[str, Any]]:
    """A pruned, fine-tuned, permanent copy of ``student`` and what it cost in fit to the teacher."""
    pruned = prune_model(copy.deepcopy(student), amount)
    after_prune = mse_to_teacher(pruned, teacher, inputs)
    fit_to_teacher(pruned, teacher, inputs, epochs=epochs, generator=generator, lr=3e-3)
    make_permanent(pruned)
    sparsity = conv_sparsity(pruned)
    report = {
        "method": "global unstructured L1 magnitude (torch.nn.utils.prune), then prune.remove",
        "amount": amount,
        "finetune_epochs": epochs,
        "sparsity": sparsity["sparsity"],
        "zero_weights": sparsity["zero_weights"],
        "conv_weights": sparsity["conv_weights"],
        "masks_attached": sparsity["masks_attached"],
        "layers": sparsity["layers"],
        "mse_to_teacher_before_prune": mse_to_teacher(student, teacher, inputs),
        "mse_to_teacher_after_prune": after_prune,
        "mse_to_teacher_after_finetune": mse_to_teacher(pruned, teacher, inputs),
    }
    return pruned, report
