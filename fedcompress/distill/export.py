"""Export a model to ONNX with PyTorch's maintained exporter, reload it in onnxruntime, check it against PyTorch.

``torch.onnx.export(..., dynamo=True)`` (``torch.export`` + onnxscript) at opset ``ONNX_OPSET``, with the batch,
height and width axes dynamic (``batch``, ``height``, ``width``; images of at least 4 pixels a side, the U-Net's
floor). Opset 18 keeps GroupNorm as ``InstanceNormalization`` plus an affine ``Mul``/``Add``, which onnxruntime
runs as kernels; at opset 21 the exporter emits ``GroupNormalization``, which onnxruntime 1.32 expands into
about 35 nodes per layer (0.32 -> 1.2 ms for the width-4 student at 32x32 in a measurement here).

``compact`` drops what the deployed file does not need: the exporter's per-node debug metadata (stack traces
with local paths, FX node text), doc strings, intermediate shape annotations, producer strings, and long
tensor names (renamed to short hexadecimal ids; the graph's input ``noisy`` and output ``denoised`` keep their
names). It changes no computation: the file is checked with ``onnx.checker`` and against PyTorch afterwards.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fedcompress.errors import FedCompressError

__all__ = [
    "EXPORTER",
    "FP32_TOLERANCE",
    "INPUT_NAME",
    "MIN_SIDE",
    "ONNX_OPSET",
    "OUTPUT_NAME",
    "OnnxModule",
    "check_close",
    "compact",
    "export_onnx",
    "max_abs_diff",
    "onnx_session",
]

ONNX_OPSET = 18
EXPORTER = "torch.onnx.export(dynamo=True): torch.export + onnxscript"
FP32_TOLERANCE = 1e-4  # max abs difference allowed between a float32 export and PyTorch (image range [0, 1])
INPUT_NAME, OUTPUT_NAME = "noisy", "denoised"
MIN_SIDE = 4  # the U-Net pools twice: 4 pixels a side is its smallest input


@contextmanager
def _quiet() -> Iterator[None]:
    """Silence the exporter's notices (torchvision ops it skips, ``torch.export`` future warnings)."""
    loggers = [
        logging.getLogger(name) for name in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript", "onnx_ir")
    ]
    levels = [logger.level for logger in loggers]
    try:
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning)
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


@torch.no_grad()
def max_abs_diff(a: Any, b: Any, inputs: torch.Tensor) -> float:
    """Largest absolute difference between two callables' outputs on ``inputs``."""
    return float((torch.as_tensor(a(inputs)) - torch.as_tensor(b(inputs))).abs().max())


def check_close(what: str, diff: float, tolerance: float) -> None:
    """Raise ``FedCompressError`` when an export differs from its source by more than ``tolerance``."""
    if not diff <= tolerance:
        raise FedCompressError(f"{what} differs from the PyTorch model by {diff:.3g} (tolerance {tolerance:.3g})")


def export_onnx(model: nn.Module, example: torch.Tensor, path: str | Path, *, opset: int = ONNX_OPSET) -> int:
    """Export float ``model`` to one self-contained ONNX file at ``path``; return its size in bytes.

    ``example`` (``[n, C, H, W]``, n >= 2 so the batch axis is not specialised to 1) only traces the graph:
    batch, height and width stay free. The file is compacted (see the module docstring) and checked with
    ``onnx.checker``; compare it with the model with ``max_abs_diff(OnnxModule(path), model, inputs)``.
    """
    import onnx

    if example.ndim != 4 or len(example) < 2:
        raise ValueError(f"example must be images [n>=2, C, H, W], got {tuple(example.shape)}")
    model.eval()
    dims = torch.export.Dim
    shapes = {0: dims("batch"), 2: dims("height", min=MIN_SIDE), 3: dims("width", min=MIN_SIDE)}
    with _quiet(), torch.no_grad():
        program = torch.onnx.export(
            model,
            (example,),
            dynamo=True,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes=({**shapes},),
            verbose=False,
        )
    if program is None:
        raise FedCompressError("torch.onnx.export returned no program")
    proto = compact(program.model_proto)
    onnx.checker.check_model(proto, full_check=True)
    data = proto.SerializeToString()
    Path(path).write_bytes(data)
    return len(data)


def compact(proto: Any) -> Any:
    """Strip debug metadata, doc strings, shape annotations and long names from an ONNX model; IN PLACE.

    Returns ``proto``. The graph's inputs and outputs keep their names; every other tensor gets a short id.
    """
    graph = proto.graph
    keep = {v.name for v in [*graph.input, *graph.output]}
    names: dict[str, str] = {}

    def short(name: str) -> str:
        if not name or name in keep:
            return name
        return names.setdefault(name, format(len(names), "x"))

    for node in graph.node:
        node.name, node.doc_string = "", ""
        del node.metadata_props[:]
        node.input[:] = [short(n) for n in node.input]
        node.output[:] = [short(n) for n in node.output]
    for tensor in graph.initializer:
        tensor.name, tensor.doc_string = short(tensor.name), ""
        del tensor.metadata_props[:]
    for value in [*graph.input, *graph.output]:
        value.doc_string = ""
        del value.metadata_props[:]
    del graph.value_info[:]
    del graph.metadata_props[:]
    del proto.metadata_props[:]
    graph.name, graph.doc_string, proto.doc_string = "edge", "", ""
    proto.producer_name, proto.producer_version = "fedcompress", ""
    return proto


def onnx_session(path: str | Path) -> Any:
    """An onnxruntime CPU session on one thread (the latency setting), default (all) graph optimizations."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


class OnnxModule(nn.Module):
    """An onnxruntime session behind ``nn.Module``'s call, so ``training.evaluate`` can score it."""

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        self.session = onnx_session(path)
        self.input_name = self.session.get_inputs()[0].name

    def run(self, x: np.ndarray) -> np.ndarray:
        """The session's output on float32 ``x`` (what the latency measurement times)."""
        return self.session.run(None, {self.input_name: x})[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run the session on ``x`` (float32, any batch and image size) and return a tensor."""
        return torch.from_numpy(self.run(np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)))
