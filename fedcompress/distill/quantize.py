"""Post-training static int8 quantization of a student on CPU, with the layers left in float and why.

PyTorch's FX graph mode (``torch.ao.quantization.quantize_fx``): ``prepare_fx`` inserts observers per the
backend's default qconfig mapping (x86/fbgemm: per-channel symmetric int8 weights, per-tensor affine uint8
activations from a histogram observer), the observers are calibrated on proxy images (no client data), and
``convert_fx`` swaps convolutions for int8 kernels with quantize/dequantize at the boundaries.

``torch.ao.quantization`` is deprecated in torch 2.13 in favour of torchao's pt2e flow, which is not installed
here; the FX API still works, so it is used and its deprecation warnings are silenced in this module only.
Which ops ran in int8 is read from the converted graph by running it once and looking at every node's output
(``is_quantized``), not assumed.
"""

from __future__ import annotations

import copy
import operator
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.fx
from torch import nn

__all__ = ["BACKENDS", "convert_int8", "quantize_int8", "quantized_ops"]

BACKENDS: tuple[str, ...] = ("x86", "fbgemm", "qnnpack")
_API = "torch.ao.quantization FX graph mode (prepare_fx / convert_fx), post-training static"
_FLOAT_REASONS: dict[Any, str] = {
    nn.GroupNorm: "the FX backend config has no quantized GroupNorm pattern (only eager mode maps it)",
    nn.SiLU: "no quantized SiLU kernel in the backend config",
    operator.sub: "subtraction is not in the backend config: the residual x - noise is taken in float",
    operator.add: "this addition's inputs are float",
}
_BOUNDARY_OPS = {torch.quantize_per_tensor, torch.quantize_per_channel, "dequantize", getattr, operator.getitem}


@contextmanager
def _quiet() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"torch\.ao\.quantization is deprecated")
        warnings.filterwarnings("ignore", message=r".*quantized tensor creation functions.*")
        warnings.filterwarnings("ignore", message=r".*reduce_range will be deprecated.*")
        warnings.filterwarnings("ignore", message=r"must run observer before calling calculate_qparams")
        yield


def quantize_int8(
    model: nn.Module,
    calibration: torch.Tensor,
    *,
    backend: str = "x86",
    batch_size: int = 64,
    reduce_range: bool | None = None,
) -> tuple[torch.fx.GraphModule, dict[str, Any]]:
    """An int8 copy of ``model`` calibrated on ``calibration`` images ``[n, C, H, W]``; ``model`` is unchanged.

    Sets ``torch.backends.quantized.engine`` to ``backend`` (process-wide) so the packed weights match the
    kernels that run them. Returns the converted ``GraphModule`` and a report: API, backend, observers,
    number of calibration images, and the int8 and float ops read from the converted graph.

    ``reduce_range`` (default: the backend's choice, True on x86/fbgemm) calibrates activations to 7 bits so
    the AVX2 kernels' 16-bit intermediate sums cannot saturate; ``False`` uses all 8 bits, which is more
    accurate (the width-4 student lost 0.1 dB instead of 0.35) but exact only on CPUs with VNNI.
    """
    converted = convert_int8(model, calibration, backend=backend, batch_size=batch_size, reduce_range=reduce_range)
    ops = quantized_ops(converted, calibration[:1])
    with _quiet():
        qconfig = _mapping(backend, reduce_range).global_qconfig
        observers = {
            "weight_observer": _observer_name(qconfig.weight) if qconfig else None,
            "activation_observer": _observer_name(qconfig.activation) if qconfig else None,
            "reduce_range": _observer_reduce_range(qconfig.activation) if qconfig else None,
        }
    report = {
        "api": _API,
        "backend": backend,
        **observers,
        "calibration_images": len(calibration),
        "int8_ops": [op["name"] for op in ops if op["int8"]],
        "float_ops": _group_float(ops),
    }
    return converted, report


def _group_float(ops: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Float ops grouped by kind: ``{"op", "count", "reason", "layers"}``."""
    groups: dict[str, dict[str, Any]] = {}
    for op in ops:
        if not op["int8"]:
            group = groups.setdefault(op["op"], {"op": op["op"], "count": 0, "reason": op["reason"], "layers": []})
            group["count"] += 1
            group["layers"].append(op["name"])
    return list(groups.values())


def convert_int8(
    model: nn.Module,
    calibration: torch.Tensor,
    *,
    backend: str = "x86",
    batch_size: int = 64,
    reduce_range: bool | None = None,
) -> torch.fx.GraphModule:
    """``prepare_fx``, calibrate on ``calibration``, ``convert_fx``: the int8 copy alone, without the report."""
    if backend not in BACKENDS or backend not in torch.backends.quantized.supported_engines:
        raise ValueError(
            f"backend {backend!r} is not available; choose one of "
            f"{[b for b in BACKENDS if b in torch.backends.quantized.supported_engines]}"
        )
    if calibration.ndim != 4 or len(calibration) == 0:
        raise ValueError(f"calibration must be non-empty images [n, C, H, W], got {tuple(calibration.shape)}")
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    torch.backends.quantized.engine = backend
    float_model = copy.deepcopy(model).eval()
    with _quiet(), torch.no_grad():
        prepared = prepare_fx(float_model, _mapping(backend, reduce_range), example_inputs=(calibration[:1],))
        for i in range(0, len(calibration), batch_size):
            prepared(calibration[i : i + batch_size])
        return convert_fx(prepared)


def _mapping(backend: str, reduce_range: bool | None) -> Any:
    """The backend's default qconfig mapping, with the activation observer's ``reduce_range`` overridden."""
    from torch.ao.quantization import QConfig, get_default_qconfig_mapping

    mapping = get_default_qconfig_mapping(backend)
    if reduce_range is not None and mapping.global_qconfig is not None:
        activation = mapping.global_qconfig.activation.with_args(reduce_range=reduce_range)
        mapping.set_global(QConfig(activation=activation, weight=mapping.global_qconfig.weight))
    return mapping


def quantized_ops(graph_module: torch.fx.GraphModule, example: torch.Tensor) -> list[dict[str, Any]]:
    """Every compute node of a converted graph with whether its output is int8, found by running ``example``.

    Quantize/dequantize boundaries and attribute look-ups are skipped. Each entry: ``name`` (module path or
    node name), ``op`` (module class or function name), ``int8`` and, for float ops, a ``reason``.
    """
    recorder = _Recorder(graph_module)
    with _quiet(), torch.no_grad():
        recorder.run(example)
    return recorder.ops


class _Recorder(torch.fx.Interpreter):
    """Runs a graph and records which compute nodes produced quantized tensors."""

    def __init__(self, module: torch.fx.GraphModule) -> None:
        super().__init__(module)
        self.ops: list[dict[str, Any]] = []

    def run_node(self, n: torch.fx.Node) -> Any:
        out = super().run_node(n)
        if n.op in ("call_module", "call_function", "call_method") and n.target not in _BOUNDARY_OPS:
            key: Any = type(self.module.get_submodule(str(n.target))) if n.op == "call_module" else n.target
            int8 = isinstance(out, torch.Tensor) and out.is_quantized
            entry = {
                "name": str(n.target) if n.op == "call_module" else n.name,
                "op": getattr(key, "__name__", str(key)),
                "int8": int8,
            }
            if not int8:
                entry["reason"] = _FLOAT_REASONS.get(key, "not covered by the backend's quantization config")
            self.ops.append(entry)
        return out


def _observer_reduce_range(factory: Any) -> bool:
    return bool(getattr(factory(), "reduce_range", False))


def _observer_name(factory: Any) -> str:
    observer = factory()
    return f"{type(observer).__name__}({observer.dtype}, {observer.qscheme})"
