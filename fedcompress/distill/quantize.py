"""int8 with ONNX Runtime's static quantization: QDQ format, per-channel weights, calibrated on proxy images.

``onnxruntime.quantization.quantize_static`` on the exported float student (after ORT's ``quant_pre_process``:
symbolic shape inference and graph clean-up). Convolutions get int8 weights (symmetric, one scale per output
channel) and uint8 activations (one scale and zero point per tensor, from the calibration images), each as a
``QuantizeLinear``/``DequantizeLinear`` pair around a float ``Conv`` that onnxruntime fuses into an int8
``QLinearConv`` when it loads the file. The result is one ``.onnx`` file that onnxruntime runs as it is.
Activations are uint8 (U8S8), not ORT's default int8 (S8S8): onnxruntime 1.32's CPU provider fused only 3 of
the student's 13 convolutions with int8 activations and ran the other 10 in float behind Q/DQ pairs (1.5x
slower than fp32), while U8S8 fuses all 13. ``int8_ops`` therefore reads what onnxruntime actually runs from
its optimized graph, not from the QDQ annotations.

What is quantized: convolutions and ReLU (``QUANTIZED_OPS``). A conv + ReLU pair becomes one ``QLinearConv``
whose output range starts at 0, so the default plain student (``fedcompress.models.plain``) runs as a chain of
int8 kernels with one quantize at the input and one dequantize before the residual subtraction. What stays
float in a U-Net student, and why: GroupNorm (``InstanceNormalization`` + affine) has no int8 kernel in
onnxruntime; SiLU, pooling, resizing and concatenation could be quantized (``Sigmoid``, ``Mul``,
``AveragePool``, ``Resize``, ``Concat`` are in ORT's registry) but on the width-4 U-Net student that cost
0.23 dB more, 1.6x the file and 1.25x the latency (161 more Q/DQ nodes).

Calibration (``CALIBRATION_METHODS``): ORT's MinMax, Entropy (KL divergence, 2048 histogram bins for 128
quantized levels; see ``_entropy_ranges``) and Percentile (99.999th). Calibration
images are the server's proxy images (never client data). ``reduce_range`` (7-bit weights) is on: it avoids
the 16-bit overflow of u8*s8 products on x86 AVX2/AVX512 CPUs without VNNI, and cost nothing measurable here.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnxruntime import __version__ as ORT_VERSION
from onnxruntime import quantization as ortq
from onnxruntime.quantization.calibrate import save_tensors_data

from fedcompress.distill.export import INPUT_NAME, compact
from fedcompress.distill.settings import CALIBRATION_METHODS

__all__ = [
    "CALIBRATION_METHODS",
    "ENTROPY_BINS",
    "FLOAT_NOTE",
    "PERCENTILE",
    "QUANTIZED_OPS",
    "int8_ops",
    "quantize_onnx",
]

QUANTIZED_OPS: tuple[str, ...] = ("Conv", "Relu")
PERCENTILE = 99.999
ENTROPY_BINS = (2048, 128)  # histogram bins, quantized bins of the entropy (KL) calibrator
_ORT_METHODS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}
_QDQ_OPS = {"QuantizeLinear", "DequantizeLinear"}
_FLOAT_REASONS = {
    "InstanceNormalization": "GroupNorm: no int8 kernel in onnxruntime",
    "Mul": "GroupNorm's affine scale",
    "Add": "GroupNorm's affine shift",
    "Sigmoid": "SiLU",
    "Sub": "the residual x - noise",
    "Resize": "bilinear upsampling",
    "AveragePool": "2x2 downsampling",
    "Concat": "skip connections and shape arithmetic",
    "QuickGelu": "SiLU (onnxruntime's fused x * sigmoid(x))",
    "Transpose": "layout changes around onnxruntime's NHWC int8 convolution",
    "Conv": "not fused into an int8 kernel by onnxruntime",
    "Relu": "not fused into the int8 convolution before it",
}
_DEFAULT_REASON = "shape arithmetic for the dynamic axes"
FLOAT_NOTE = (
    "Conv and ReLU are quantized (the plain student runs wholly in int8 but for the residual subtraction); in a "
    "U-Net student GroupNorm has no int8 kernel in onnxruntime, and quantizing the other ops ORT supports (Mul, "
    "Add, Sigmoid, Resize, AveragePool, Concat) cost the width-4 U-Net student 0.23 dB more, 1.6x the file size "
    "and 1.25x the latency"
)


@contextmanager
def _quiet() -> Iterator[None]:
    """ORT's quantizer logs on the root logger and prints its calibration steps; keep that to errors."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)


def quantize_onnx(
    fp32_path: str | Path,
    out_path: str | Path,
    calibration: np.ndarray,
    *,
    method: str = "minmax",
    batch_size: int = 16,
    reduce_range: bool = True,
) -> dict[str, Any]:
    """Write the int8 QDQ copy of the float ONNX model at ``fp32_path`` to ``out_path``; return its report.

    ``calibration`` is ``[n, C, H, W]`` float32 proxy images. The report names the tool, format, types,
    method, number of images, and the int8 and float ops read back from the written graph.
    """
    if method not in CALIBRATION_METHODS:
        raise ValueError(f"method must be one of {list(CALIBRATION_METHODS)}, got {method!r}")
    if calibration.ndim != 4 or len(calibration) == 0:
        raise ValueError(f"calibration must be non-empty images [n, C, H, W], got {tuple(calibration.shape)}")
    images = np.ascontiguousarray(calibration, dtype=np.float32)
    extra = {"CalibPercentile": PERCENTILE} if method == "percentile" else {}
    calibrate = getattr(ortq.CalibrationMethod, _ORT_METHODS[method])
    with tempfile.TemporaryDirectory(prefix="fedcompress-quant-") as scratch, _quiet():
        pre, raw, cache = Path(scratch) / "pre.onnx", Path(scratch) / "int8.onnx", Path(scratch) / "ranges.json"
        ortq.quant_pre_process(str(fp32_path), str(pre))
        reader: _Reader | None = _Reader(images, batch_size)
        if method == "entropy":  # quantize_static would run it with 128 bins: one candidate range, MinMax's
            _entropy_ranges(pre, _Reader(images, batch_size), cache, Path(scratch) / "augmented.onnx")
            reader = None
        ortq.quantize_static(
            str(pre),
            str(raw),
            reader,
            calibration_cache_path=str(cache) if reader is None else None,
            quant_format=ortq.QuantFormat.QDQ,
            op_types_to_quantize=list(QUANTIZED_OPS),
            per_channel=True,
            reduce_range=reduce_range,
            activation_type=ortq.QuantType.QUInt8,
            weight_type=ortq.QuantType.QInt8,
            calibrate_method=calibrate,
            extra_options=extra,
        )
        proto = onnx.load(str(raw))
    compact(proto)
    onnx.checker.check_model(proto, full_check=True)
    Path(out_path).write_bytes(proto.SerializeToString())
    return {**_settings_report(method, len(images), reduce_range), **int8_ops(out_path)}


def _settings_report(method: str, images: int, reduce_range: bool) -> dict[str, Any]:
    return {
        "tool": f"onnxruntime.quantization.quantize_static (onnxruntime {ORT_VERSION})",
        "format": "QDQ",
        "weights": "int8, symmetric, per output channel" + (" (7-bit range: reduce_range)" if reduce_range else ""),
        "activations": "uint8, asymmetric, per tensor",
        "quantized_op_types": list(QUANTIZED_OPS),
        "float_note": FLOAT_NOTE,
        "calibration_method": method,
        "calibration_percentile": PERCENTILE if method == "percentile" else None,
        "calibration_entropy_bins": list(ENTROPY_BINS) if method == "entropy" else None,
        "calibration_images": images,
    }


def int8_ops(path: str | Path) -> dict[str, Any]:
    """What onnxruntime runs for an ONNX file: its int8 kernels, its float ops, and its Q/DQ conversions.

    Read from the graph onnxruntime itself optimizes (all optimizations, CPU provider, as ``onnx_session``):
    ``QLinear*``/``*Integer`` kernels are int8; Q/DQ nodes left at run time are conversions; every other node
    runs in float. Returns ``int8_ops`` and ``conversions`` (``{op type: count}``) and ``float_ops``
    (``[{"op", "count", "reason"}]``).
    """
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="fedcompress-ops-") as scratch:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.optimized_model_filepath = str(Path(scratch) / "optimized.onnx")
        options.log_severity_level = 3  # the note that an ALL-optimized file is hardware-specific
        ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
        ops = Counter(node.op_type for node in onnx.load(options.optimized_model_filepath).graph.node)
    int8 = {op: n for op, n in ops.items() if op.startswith("QLinear") or op.endswith("Integer")}
    conversions = {op: n for op, n in ops.items() if op in _QDQ_OPS}
    floats = sorted(op for op in ops if op not in int8 and op not in conversions)
    return {
        "int8_ops": dict(sorted(int8.items())),
        "conversions": dict(sorted(conversions.items())),
        "float_ops": [{"op": op, "count": ops[op], "reason": _FLOAT_REASONS.get(op, _DEFAULT_REASON)} for op in floats],
    }


def _entropy_ranges(model: Path, reader: _Reader, cache: Path, augmented: Path) -> None:
    """ORT's entropy (KL) calibrator with ``ENTROPY_BINS`` histogram / quantized bins; ranges saved to ``cache``.

    ``quantize_static`` builds this calibrator with 128 bins for 128 quantized levels, which leaves the KL search
    a single candidate (the full range, as MinMax). 2048 bins for 128 levels is the usual setting (TensorRT's).
    """
    bins, levels = ENTROPY_BINS
    calibrator = ortq.create_calibrator(
        model,
        list(QUANTIZED_OPS),
        augmented_model_path=str(augmented),
        calibrate_method=ortq.CalibrationMethod.Entropy,
        extra_options={"num_bins": bins, "num_quantized_bins": levels},
    )
    calibrator.collect_data(reader)
    save_tensors_data(calibrator.compute_data(), cache)


class _Reader(ortq.CalibrationDataReader):
    """ORT's calibration reader over an array of images, in batches."""

    def __init__(self, images: np.ndarray, batch_size: int) -> None:
        self.batches = [images[i : i + batch_size] for i in range(0, len(images), batch_size)]
        self.position = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.position >= len(self.batches):
            return None
        self.position += 1
        return {INPUT_NAME: self.batches[self.position - 1]}

    def rewind(self) -> None:
        self.position = 0
