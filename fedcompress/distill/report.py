"""The edge report: one row per model variant (and the do-nothing baseline), ratios, targets, and a text table.

Rows: ``noisy_input`` (the input returned unchanged: what doing nothing scores), ``teacher``, ``student_fp32``,
``student_pruned`` and ``student_int8``. Every model row runs in onnxruntime (one thread, batch 1) from its
``.onnx`` file. ``weights_bytes`` is the float weights file (``save_arrays``, as a run's ``model.pt``; the int8
student has none: its ``.onnx`` is its only file); ``runnable_bytes`` is the ``.onnx`` file. Ratios are the
teacher's over the row's. Targets are measured, never assumed, and a missed one is reported as missed; the PSNR
targets also need the teacher to beat the noisy input by ``teacher_margin_db``, else the teacher is not worth
distilling and the report says so.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "REPORT_VERSION",
    "ROWS",
    "ROW_FIELDS",
    "TARGETS",
    "add_ratios",
    "check_targets",
    "format_edge_table",
    "verdict",
]

REPORT_VERSION = 2
ROWS: tuple[str, ...] = ("noisy_input", "teacher", "student_fp32", "student_pruned", "student_int8")
ROW_FIELDS: tuple[str, ...] = (
    "name",
    "runtime",
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
    "psnr_vs_teacher_db",
    "psnr_vs_noisy_db",
)
TARGETS = {"param_ratio": 10.0, "psnr_drop_db": 1.0, "int8_size_ratio": 40.0, "speedup": 3.0}


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def add_ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Fill each row's ratios against the ``teacher`` row and its PSNR against the teacher and the noisy input.

    ``param_ratio``: teacher params / row params. ``size_ratio``: the teacher's weights file / the row's
    ``.onnx`` file. ``runnable_size_ratio``: the teacher's ``.onnx`` / the row's. ``speedup``: teacher
    latency / row latency.
    """
    by_name = {row["name"]: row for row in rows}
    teacher, noisy = by_name["teacher"], by_name["noisy_input"]
    for row in rows:
        row["param_ratio"] = _ratio(teacher["params"], row["params"])
        row["size_ratio"] = _ratio(teacher["weights_bytes"], row["runnable_bytes"])
        row["runnable_size_ratio"] = _ratio(teacher["runnable_bytes"], row["runnable_bytes"])
        row["speedup"] = _ratio(teacher["latency_ms"], row["latency_ms"])
        row["psnr_vs_teacher_db"] = row["psnr"] - teacher["psnr"]
        row["psnr_vs_noisy_db"] = row["psnr"] - noisy["psnr"]
    missing = [f for f in ROW_FIELDS if any(f not in row for row in rows)]
    if missing:
        raise ValueError(f"edge rows lack fields {missing}")
    return rows


def _target(measured: float | None, target: float, *, at_most: bool = False, note: str = "") -> dict[str, Any]:
    met = measured is not None and (measured <= target if at_most else measured >= target)
    return {"measured": measured, "target": target, "rule": "<=" if at_most else ">=", "met": met, "note": note}


def check_targets(rows: list[dict[str, Any]], *, teacher_margin_db: float) -> dict[str, dict[str, Any]]:
    """The issue's targets measured on the rows, after the gate that the teacher is worth distilling."""
    r = {row["name"]: row for row in rows}
    teacher, fp32, int8 = r["teacher"], r["student_fp32"], r["student_int8"]
    gate = _target(teacher["psnr_vs_noisy_db"], teacher_margin_db, note="teacher psnr - noisy input psnr (dB)")
    drop = -int8["psnr_vs_teacher_db"]
    quality = _target(drop, TARGETS["psnr_drop_db"], at_most=True, note="teacher psnr - int8 student psnr (dB)")
    if not gate["met"]:
        quality.update(met=False, note=quality["note"] + "; not met: the teacher is not worth distilling")
    students = [r[name] for name in ROWS[2:]]
    fastest = max(students, key=lambda row: row["speedup"] or 0.0)
    return {
        "teacher_beats_noisy": gate,
        "student_params_10x": _target(fp32["param_ratio"], TARGETS["param_ratio"], note="teacher / student params"),
        "student_int8_psnr_within_1db": quality,
        "int8_file_40x": _target(
            int8["size_ratio"],
            TARGETS["int8_size_ratio"],
            note=f"{teacher['weights_file']} {teacher['weights_bytes']} B / {int8['runnable_file']} "
            f"{int8['runnable_bytes']} B (teacher.onnx {teacher['runnable_bytes']} B: "
            f"{_fmt(int8['runnable_size_ratio'], '.1f')}x)",
        ),
        "int8_latency_3x": _target(int8["speedup"], TARGETS["speedup"], note="onnxruntime, teacher / int8 student"),
        "fastest_student_latency_3x": _target(
            fastest["speedup"], TARGETS["speedup"], note=f"onnxruntime, teacher / {fastest['name']}"
        ),
    }


def verdict(targets: dict[str, dict[str, Any]]) -> str:
    """One sentence: not worth distilling, every target met, or which were missed."""
    gate = targets["teacher_beats_noisy"]
    if not gate["met"]:
        return (
            f"teacher not worth distilling: it beats the noisy input by {_fmt(gate['measured'], '.2f')} dB, "
            f"under the {gate['target']:g} dB margin"
        )
    missed = [name for name, t in targets.items() if not t["met"]]
    return "all targets met" if not missed else "missed: " + ", ".join(missed)


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_edge_table(report: dict[str, Any]) -> str:
    """A plain-text table of the rows, the targets (met / MISSED), the verdict and the privacy note."""
    d, q = report["distill"], report["quantize"]
    lines = [
        f"edge model: {d['model']} width {d['teacher_width']} -> {d.get('student_model', d['model'])} width "
        f"{d['student_width']}, {d['epochs']} epochs, "
        f"{report['prune']['sparsity']:.0%} of conv weights pruned, int8 by {q['path']} "
        f"(ORT QDQ, {q['calibration_method']} calibration); test set {report['test_set']} "
        f"({report['test_samples']} images); latency onnxruntime, batch 1 {report['latency_input']}, 1 thread, "
        f"median of {report['latency_runs']} interleaved runs",
        f"{'row':<15} {'runtime':<17} {'params':>7} {'nonzero':>7} {'weights B':>9} {'onnx B':>8} "
        f"{'psnr':>6} {'ssim':>6} {'ms':>6} {'x par':>6} {'x wts':>6} {'x onnx':>6} {'x spd':>6} {'dB-t':>6}",
    ]
    for row in report["rows"]:
        lines.append(
            f"{row['name']:<15} {row['runtime']:<17} {row['params']:>7} {row['nonzero_params']:>7} "
            f"{_fmt(row['weights_bytes'], 'd'):>9} {_fmt(row['runnable_bytes'], 'd'):>8} {row['psnr']:>6.2f} "
            f"{row['ssim']:>6.3f} {_fmt(row['latency_ms'], '.3f'):>6} {_fmt(row['param_ratio'], '.1f'):>6} "
            f"{_fmt(row['size_ratio'], '.1f'):>6} {_fmt(row['runnable_size_ratio'], '.1f'):>6} "
            f"{_fmt(row['speedup'], '.2f'):>6} {row['psnr_vs_teacher_db']:>+6.2f}"
        )
    lines.append(
        "x par, x wts, x onnx, x spd: the teacher's params, weights file (teacher.pt), .onnx file and latency "
        "over the row's (.onnx file); dB-t: psnr minus the teacher's"
    )
    lines.append("targets:")
    for name, t in report["targets"].items():
        measured = _fmt(t["measured"], ".3g")
        lines.append(
            f"  {'met   ' if t['met'] else 'MISSED'} {name}: {measured} {t['rule']} {t['target']:g}  {t['note']}"
        )
    lines.append(f"verdict: {report['verdict']}")
    float_ops = ", ".join(f"{g['op']} x{g['count']}" for g in q["float_ops"])
    int8_ops = ", ".join(f"{op} x{n}" for op, n in q["int8_ops"].items())
    lines.append(f"int8 ops: {int8_ops or 'none'}; left in float: {float_ops or 'none'}")
    lines.append(f"privacy: {d['privacy']}")
    return "\n".join(lines)
