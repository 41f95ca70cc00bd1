"""Export a student to TorchScript and ONNX, reload what was written, and check it against PyTorch.

TorchScript: ``torch.jit.trace`` on one batch-1 example, then ``torch.jit.freeze`` (weights become constants
and submodules are inlined, which roughly halves a small model's file), saved and loaded back. ONNX: the
TorchScript-based exporter (``dynamo=False``; the dynamo exporter needs ``onnxscript``, which is not
installed), a dynamic batch axis, checked with ``onnx.checker`` and run with onnxruntime on one CPU thread.
``torch.jit`` and the TorchScript-based ONNX exporter are deprecated in torch 2.13 (in favour of
``torch.export``) but work; their warnings are silenced here. Exports are made for the image size of their
example (the batch size stays free). Every export returns the largest absolute difference between the
reloaded model and the source model on the given inputs; ``check_close`` turns a difference over tolerance
into an error.
"""

from __future__ import annotations

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
    "FP32_TOLERANCE",
    "ONNX_OPSET",
    "OnnxModule",
    "check_close",
    "export_onnx",
    "export_torchscript",
    "max_abs_diff",
    "onnx_session",
]


@contextmanager
def _quiet() -> Iterator[None]:
    """Silence the deprecation notices of ``torch.jit`` and of the TorchScript-based ONNX exporter."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.(jit|onnx)")
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=r".*legacy TorchScript-based ONNX")
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=r"The feature will be removed")
        # GroupNorm's training-only batch-size check reads a shape as a bool while tracing; harmless in eval
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning, message=r"Converting a tensor")
        yield


FP32_TOLERANCE = 1e-4  # max abs difference allowed between a float32 export and PyTorch (image range [0, 1])
ONNX_OPSET = 17


@torch.no_grad()
def max_abs_diff(a: Any, b: Any, inputs: torch.Tensor) -> float:
    """Largest absolute difference between two callables' outputs on ``inputs``."""
    return float((torch.as_tensor(a(inputs)) - torch.as_tensor(b(inputs))).abs().max())


def check_close(what: str, diff: float, tolerance: float) -> None:
    """Raise ``FedCompressError`` when an export differs from its source by more than ``tolerance``."""
    if not diff <= tolerance:
        raise FedCompressError(f"{what} differs from the PyTorch model by {diff:.3g} (tolerance {tolerance:.3g})")


def export_torchscript(
    model: nn.Module, example: torch.Tensor, path: str | Path, inputs: torch.Tensor
) -> tuple[torch.jit.ScriptModule, float]:
    """Trace, freeze and save ``model`` to ``path``; return the RELOADED module and its max diff on ``inputs``.

    ``example`` is the tracing input (batch 1); ``model`` may be float or an int8 ``GraphModule``.
    """
    model.eval()
    with _quiet(), torch.no_grad():
        traced = torch.jit.trace(model, example, check_trace=False)  # checked after reload
        frozen = torch.jit.freeze(traced)
        torch.jit.save(frozen, str(path))
        loaded = torch.jit.load(str(path), map_location="cpu")
    loaded.eval()
    return loaded, max_abs_diff(loaded, model, inputs)


def export_onnx(model: nn.Module, example: torch.Tensor, path: str | Path, inputs: torch.Tensor) -> float:
    """Export float ``model`` to ONNX at ``path``, check the graph, and return onnxruntime's max diff on ``inputs``."""
    import onnx

    model.eval()
    with _quiet(), torch.no_grad():
        torch.onnx.export(
            model,
            (example,),
            str(path),
            dynamo=False,
            opset_version=ONNX_OPSET,
            input_names=["noisy"],
            output_names=["denoised"],
            dynamic_axes={"noisy": {0: "batch"}, "denoised": {0: "batch"}},
        )
    onnx.checker.check_model(onnx.load(str(path)))
    return max_abs_diff(OnnxModule(path), model, inputs)


def onnx_session(path: str | Path) -> Any:
    """An onnxruntime CPU session on one thread (the latency setting), all graph optimizations on."""
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run the session on ``x`` (float32, any batch) and return a tensor."""
        feed = {self.input_name: np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)}
        return torch.from_numpy(self.session.run(None, feed)[0])
