"""The edge report: one row per model variant, ratios against the teacher, the targets, and a text table.

Each row has two sizes. ``weights_bytes`` is the weights-only file (a ``save_arrays`` state for float models,
as the run's ``model.pt``; the packed int8 file for the int8 model); ``runnable_bytes`` is the deployable
artefact (frozen TorchScript, or ONNX). Ratios compare like with like: weights with the teacher's weights
file, a TorchScript artefact and its latency with the teacher's TorchScript, an ONNX one with the teacher's
ONNX. Targets are measured, never assumed; a missed one is reported as missed.
"""

from __future__ import annotations

from typing import Any

__all__ = ["REPORT_VERSION", "ROW_FIELDS", "TARGETS", "add_ratios", "check_targets", "format_edge_table"]

REPORT_VERSION = 1
ROW_FIELDS: tuple[str, ...] = (
    "name",
    "runtime",
    "reference",
    "params",
    "nonzero_params",
    "weights_file",
    "weights_bytes",
    "runnable_file",
    "runnable_bytes",
    "psnr",
    "ssim",
    "latency_ms",
    "latency_p10_ms",
    "latency_p90_ms",
    "param_ratio",
    "size_ratio",
    "runnable_size_ratio",
    "speedup",
)
TARGETS = {"param_ratio": 10.0, "psnr_drop_db": 1.0, "int8_size_ratio": 40.0, "speedup": 3.0}


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def add_ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Fill ``param_ratio``, ``size_ratio``, ``runnable_size_ratio`` and ``speedup`` against each row's reference.

    ``reference`` names the teacher row in the same runtime; params and weights always compare with the
    first row (the teacher's weights file).
    """
    by_name = {row["name"]: row for row in rows}
    teacher = rows[0]
    for row in rows:
        ref = by_name[row["reference"]]
        row["param_ratio"] = _ratio(teacher["params"], row["params"])
        row["size_ratio"] = _ratio(teacher["weights_bytes"], row["weights_bytes"])
        row["runnable_size_ratio"] = _ratio(ref["runnable_bytes"], row["runnable_bytes"])
        row["speedup"] = _ratio(ref["latency_ms"], row["latency_ms"])
    missing = [f for f in ROW_FIELDS if any(f not in row for row in rows)]
    if missing:
        raise ValueError(f"edge rows lack fields {missing}")
    return rows


def _target(measured: float | None, target: float, *, at_most: bool = False, note: str = "") -> dict[str, Any]:
    met = measured is not None and (measured <= target if at_most else measured >= target)
    return {"measured": measured, "target": target, "rule": "<=" if at_most else ">=", "met": met, "note": note}


def check_targets(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The issue's targets, measured on the rows: params, PSNR drop, int8 file size, batch-1 latency."""
    r = {row["name"]: row for row in rows}
    teacher, fp32, int8 = r["teacher_fp32"], r["student_fp32"], r["student_int8"]
    return {
        "student_params_10x": _target(fp32["param_ratio"], TARGETS["param_ratio"]),
        "student_fp32_psnr_within_1db": _target(
            teacher["psnr"] - fp32["psnr"], TARGETS["psnr_drop_db"], at_most=True, note="teacher psnr - student psnr"
        ),
        "student_int8_psnr_within_1db": _target(
            teacher["psnr"] - int8["psnr"], TARGETS["psnr_drop_db"], at_most=True, note="after pruning and int8"
        ),
        "int8_file_40x": _target(
            int8["size_ratio"],
            TARGETS["int8_size_ratio"],
            note=f"{int8['weights_file']} vs the teacher's {teacher['weights_file']} (weights-only files)",
        ),
        "int8_runnable_file_40x": _target(
            int8["runnable_size_ratio"],
            TARGETS["int8_size_ratio"],
            note=f"{int8['runnable_file']} vs {teacher['runnable_file']} (frozen TorchScript, code included)",
        ),
        "int8_latency_3x": _target(int8["speedup"], TARGETS["speedup"], note="TorchScript int8 vs TorchScript fp32"),
        "best_latency_3x": _target(
            max(row["speedup"] or 0.0 for row in rows[1:]),
            TARGETS["speedup"],
            note="fastest student artefact vs the teacher in the same runtime",
        ),
    }


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_edge_table(report: dict[str, Any]) -> str:
    """A plain-text table of the rows, then the targets (met / MISSED) and the privacy note."""
    d = report["distill"]
    lines = [
        f"edge model: {d['model']} width {d['teacher_width']} -> {d['student_width']}, "
        f"{report['prune']['sparsity']:.0%} of conv weights pruned, int8 ({report['quantize']['backend']}); "
        f"test set {report['test_samples']} images; latency batch 1, 1 thread, median of "
        f"{report['latency_runs']} interleaved runs",
        f"{'row':<15} {'runtime':<17} {'params':>7} {'nonzero':>7} {'weights B':>9} {'runnable B':>10} "
        f"{'psnr':>6} {'ssim':>6} {'ms':>6} {'x par':>6} {'x wts':>6} {'x run':>6} {'x spd':>6}",
    ]
    for row in report["rows"]:
        lines.append(
            f"{row['name']:<15} {row['runtime']:<17} {row['params']:>7} {row['nonzero_params']:>7} "
            f"{_fmt(row['weights_bytes'], 'd'):>9} {row['runnable_bytes']:>10} {row['psnr']:>6.2f} "
            f"{row['ssim']:>6.3f} {row['latency_ms']:>6.3f} {_fmt(row['param_ratio'], '.1f'):>6} "
            f"{_fmt(row['size_ratio'], '.1f'):>6} {_fmt(row['runnable_size_ratio'], '.1f'):>6} "
            f"{_fmt(row['speedup'], '.2f'):>6}"
        )
    lines.append(
        "x par, x wts: teacher_fp32's params and weights file over the row's; x run, x spd: the same-runtime "
        "teacher's runnable file and latency over the row's"
    )
    lines.append("targets:")
    for name, t in report["targets"].items():
        measured = _fmt(t["measured"], ".3g")
        lines.append(
            f"  {'met   ' if t['met'] else 'MISSED'} {name}: {measured} {t['rule']} {t['target']:g}  {t['note']}"
        )
    float_ops = ", ".join(f"{g['op']} x{g['count']}" for g in report["quantize"]["float_ops"])
    lines.append(f"int8: {len(report['quantize']['int8_ops'])} ops in int8; left in float: {float_ops or 'none'}")
    lines.append(f"privacy: {d['privacy']}")
    return "\n".join(lines)
