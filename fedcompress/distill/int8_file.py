"""A compact, self-describing file for an int8 student: every tensor of its converted state, zstd-packed.

TorchScript and ``torch.save`` spend a fixed cost per tensor and per module (code, pickles, 64-byte zip
alignment) that dwarfs a 7k-parameter model's weights. This file holds exactly the converted model's state
(int8 weights with their per-channel scales and zero points, float biases and GroupNorm parameters, the
activations' scales and zero points) and what is needed to rebuild it: family, width, channels, image size,
backend. Nothing is unpickled.

Layout: ``MAGIC`` (4 bytes), version (1 byte), then one zstd frame of: header length (uint32 LE), a JSON
header listing every tensor (name, kind, dtype, shape, axis), and the tensors' little-endian bytes in order.
Reading checks the frame's declared size, every length and the state's keys before it builds anything.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.fx
import zstandard

from fedcompress.files import atomic_write_bytes
from fedcompress.models import build_model

__all__ = ["MAGIC", "VERSION", "load_int8", "save_int8"]

MAGIC = b"FCQ8"
VERSION = 1
_MAX_BYTES = 64 * 2**20  # refuse to inflate a frame that claims more than this
_DTYPES = {
    "int8": np.int8,
    "uint8": np.uint8,
    "int32": np.int32,
    "int64": np.int64,
    "float32": np.float32,
    "float64": np.float64,
}


def save_int8(path: str | Path, model: torch.nn.Module, meta: dict[str, Any]) -> int:
    """Write ``model``'s state with ``meta`` (model, width, in_channels, image_size, backend); return bytes."""
    missing = {"model", "width", "in_channels", "image_size", "backend"} - set(meta)
    if missing:
        raise ValueError(f"meta lacks {sorted(missing)}")
    entries, blobs = [], []
    for name, value in model.state_dict().items():
        entry, arrays = _encode(name, value)
        entries.append(entry)
        blobs += [a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes() for a in arrays]
    header = json.dumps({**meta, "tensors": entries}, separators=(",", ":")).encode()
    body = struct.pack("<I", len(header)) + header + b"".join(blobs)
    data = MAGIC + bytes([VERSION]) + zstandard.ZstdCompressor(level=19).compress(body)
    atomic_write_bytes(path, data)
    return len(data)


def load_int8(path: str | Path) -> tuple[torch.fx.GraphModule, dict[str, Any]]:
    """Rebuild the int8 model saved by ``save_int8``; return it and the header's metadata."""
    from fedcompress.distill.quantize import convert_int8

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"int8 model file not found: {path}")
    header, body, offset = _read_frame(path)
    state: dict[str, torch.Tensor] = {}
    for entry in header.pop("tensors"):
        state[entry["name"]], offset = _decode(entry, body, offset, path)
    if offset != len(body):
        raise ValueError(f"{path}: {len(body) - offset} trailing bytes after the last tensor")
    shape = (1, header["in_channels"], header["image_size"], header["image_size"])
    calibration = torch.rand(shape, generator=torch.Generator().manual_seed(0))
    float_model = build_model(header["model"], width=header["width"], in_channels=header["in_channels"])
    model = convert_int8(float_model, calibration, backend=header["backend"])
    expected = set(model.state_dict())
    if expected != set(state):
        raise ValueError(
            f"{path}: tensors do not fit {header['model']} width {header['width']}: "
            f"missing {sorted(expected - set(state))[:5]}, extra {sorted(set(state) - expected)[:5]}"
        )
    model.load_state_dict(state, strict=True)
    return model, header


def _encode(name: str, value: torch.Tensor) -> tuple[dict[str, Any], list[np.ndarray]]:
    entry: dict[str, Any] = {"name": name, "shape": list(value.shape)}
    if not value.is_quantized:
        array = value.detach().cpu().numpy()
        return {**entry, "kind": "plain", "dtype": str(array.dtype)}, [array]
    dtype = {torch.qint8: "int8", torch.quint8: "uint8"}[value.dtype]
    ints = value.int_repr().numpy()
    if value.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
        scales = value.q_per_channel_scales().numpy().astype(np.float64)
        zeros = value.q_per_channel_zero_points().numpy().astype(np.int64)
        entry |= {"kind": "q_channel", "dtype": dtype, "axis": int(value.q_per_channel_axis())}
        return entry, [ints, scales, zeros]
    params = [np.array([value.q_scale()], np.float64), np.array([value.q_zero_point()], np.int64)]
    return {**entry, "kind": "q_tensor", "dtype": dtype}, [ints, *params]


def _take(body: bytes, offset: int, dtype: Any, count: int, path: Path) -> tuple[np.ndarray, int]:
    end = offset + count * np.dtype(dtype).itemsize
    if count < 0 or end > len(body):
        raise ValueError(f"{path}: truncated tensor data (need {end} bytes, have {len(body)})")
    return np.frombuffer(body, dtype=np.dtype(dtype).newbyteorder("<"), count=count, offset=offset).copy(), end


def _decode(entry: dict[str, Any], body: bytes, offset: int, path: Path) -> tuple[torch.Tensor, int]:
    try:
        kind, dtype, shape = entry["kind"], _DTYPES[entry["dtype"]], [int(s) for s in entry["shape"]]
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path}: bad tensor entry {entry!r}: {e}") from e
    values, offset = _take(body, offset, dtype, int(np.prod(shape)), path)
    tensor = torch.from_numpy(values.reshape(shape))
    if kind == "plain":
        return tensor, offset
    if kind == "q_channel":
        axis = int(entry["axis"])
        scales, offset = _take(body, offset, np.float64, shape[axis], path)
        zeros, offset = _take(body, offset, np.int64, shape[axis], path)
        qt = torch._make_per_channel_quantized_tensor(tensor, torch.from_numpy(scales), torch.from_numpy(zeros), axis)
        return qt, offset
    if kind == "q_tensor":
        scale, offset = _take(body, offset, np.float64, 1, path)
        zero, offset = _take(body, offset, np.int64, 1, path)
        return torch._make_per_tensor_quantized_tensor(tensor, float(scale[0]), int(zero[0])), offset
    raise ValueError(f"{path}: unknown tensor kind {kind!r} for {entry.get('name')!r}")


def _read_frame(path: Path) -> tuple[dict[str, Any], bytes, int]:
    data = path.read_bytes()
    if data[:4] != MAGIC:
        raise ValueError(f"{path} is not a fedcompress int8 model (magic {data[:4]!r}, expected {MAGIC!r})")
    if len(data) < 5 or data[4] != VERSION:
        raise ValueError(f"{path}: int8 file version {data[4:5].hex() or 'missing'} is not supported ({VERSION})")
    frame = data[5:]
    try:
        size = zstandard.frame_content_size(frame)
        if not 0 <= size <= _MAX_BYTES:
            raise ValueError(f"declared size {size} is outside [0, {_MAX_BYTES}]")
        body = zstandard.ZstdDecompressor().decompress(frame, max_output_size=_MAX_BYTES)
        (length,) = struct.unpack_from("<I", body)
        header = json.loads(body[4 : 4 + length])
    except (zstandard.ZstdError, struct.error, ValueError) as e:
        raise ValueError(f"{path}: corrupt int8 model file: {e}") from e
    if not isinstance(header, dict) or not isinstance(header.get("tensors"), list):
        raise ValueError(f"{path}: header has no tensor list")
    return header, body, 4 + length
