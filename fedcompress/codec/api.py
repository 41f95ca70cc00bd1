"""The codec's three entry points: :func:`encode`, :func:`encode_with_stats` and :func:`decode`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from fedcompress.codec.limits import DecodeLimits
from fedcompress.codec.pipeline import EncodedTensor, decode_tensor, encode_tensor, expected_data_len
from fedcompress.codec.spec import CodecSpec, parse_spec
from fedcompress.codec.state import CodecState
from fedcompress.codec.stats import EncodeStats, Meter, relative_error
from fedcompress.codec.wire import Reader, read_header, read_table, write_header, write_table
from fedcompress.errors import CodecError
from fedcompress.seeding import numpy_rng
from fedcompress.tensors import check_finite, to_numpy_update

__all__ = ["decode", "encode", "encode_with_stats"]

_DEFAULT_LIMITS = DecodeLimits()


def encode(
    update: Mapping[str, Any], spec: str | CodecSpec, state: CodecState | None = None, *, seed: int = 0
) -> bytes:
    """Compress an update (ordered ``name -> float tensor``, torch or numpy) into a self-describing payload.

    Parameters
    ----------
    update : Mapping[str, tensor]
        The update; it is not modified. Values are converted to float32.
    spec : str | CodecSpec
        A spec string (``"lowrank:4+topk:0.01+q:4+zstd:3"``) or preset name (``"balanced"``).
    state : CodecState | None
        Error-feedback state of this client, **updated in place**: its residual is added to the update
        first, and the new residual is ``(update + old residual) - decoded(payload)``. None: no feedback.
    seed : int
        Drives stochastic rounding, the random-k mask and PowerSGD's first ``Q``; pass
        ``derive_seed(run_seed, round, client_id)``. Travels in the payload (random-k needs it to decode).

    Raises
    ------
    ValueError
        A bad spec or seed, a tensor holding NaN/Inf (named), or a state that does not match the update.
    """
    return _encode(update, spec, state, seed)[0]


def encode_with_stats(
    update: Mapping[str, Any], spec: str | CodecSpec, state: CodecState | None = None, *, seed: int = 0
) -> tuple[bytes, EncodeStats]:
    """:func:`encode`, and what it cost and lost (:class:`EncodeStats`)."""
    return _encode(update, spec, state, seed)


def decode(
    payload: bytes | bytearray | memoryview, *, limits: DecodeLimits | None = None
) -> dict[str, np.ndarray]:
    """Rebuild an update from a payload alone: float32 arrays with the original names, order and shapes.

    Every count, length and shape is checked against the payload's remaining bytes and ``limits`` before
    anything is allocated. Any malformed, truncated, oversized or non-finite payload raises ``CodecError``.
    """
    limits = _DEFAULT_LIMITS if limits is None else limits
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise CodecError(f"payload must be bytes, got {type(payload).__name__}")
    if len(payload) > limits.max_payload_bytes:
        raise CodecError(
            f"payload of {len(payload)} bytes is above max_payload_bytes={limits.max_payload_bytes}"
        )
    try:
        return _decode(memoryview(payload).cast("B"), limits)
    except CodecError:
        raise
    except Exception as e:  # the safety net: nothing a payload does may escape as another exception type
        raise CodecError(f"malformed payload: {type(e).__name__}: {e}") from e


def _decode(payload: memoryview, limits: DecodeLimits) -> dict[str, np.ndarray]:
    reader = Reader(payload)
    spec, seed, body_len = read_header(reader, limits)
    rest = reader.take(reader.remaining, "body")
    if spec.entropy is not None:
        try:
            body: bytes | memoryview = spec.entropy.decode(rest, body_len)
        except ValueError as e:
            raise CodecError(str(e)) from e
    elif len(rest) != body_len:
        raise CodecError(f"header says the body has {body_len} bytes, but {len(rest)} bytes follow")
    else:
        body = rest
    body_reader = Reader(body)
    entries = read_table(body_reader, limits)
    for entry in entries:
        try:
            low, high = expected_data_len(entry, spec)
        except ValueError as e:
            raise CodecError(str(e)) from e
        if not low <= entry.data_len <= high:
            raise CodecError(f"tensor {entry.name!r} has {entry.data_len} data bytes; {low}..{high} expected")
    out: dict[str, np.ndarray] = {}
    for index, entry in enumerate(entries):
        data = body_reader.take(entry.data_len, f"tensor {entry.name!r} data")
        try:
            values = decode_tensor(entry, data, index, spec, seed)
        except ValueError as e:
            raise CodecError(f"tensor {entry.name!r}: {e}") from e
        if not np.all(np.isfinite(values)):
            raise CodecError(f"tensor {entry.name!r} decodes to NaN or Inf")
        out[entry.name] = values
    return out


def _encode(
    update: Mapping[str, Any], spec: str | CodecSpec, state: CodecState | None, seed: int
) -> tuple[bytes, EncodeStats]:
    codec = parse_spec(spec)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 1 << 64:
        raise ValueError(f"seed must be an integer in 0..2**64-1, got {seed!r}")
    seed = int(seed)
    if state is not None and not isinstance(state, CodecState):
        raise ValueError(f"state must be a CodecState or None, got {type(state).__name__}")
    arrays = to_numpy_update(update)
    check_finite(arrays)
    _check_encodable(arrays)
    corrected = state.corrected(arrays, codec) if state is not None else None
    inputs = (
        arrays if corrected is None else {name: value.astype(np.float32) for name, value in corrected.items()}
    )
    if corrected is not None:
        check_finite(inputs, "update + residual")
    meter, rng = Meter(), numpy_rng(seed, "codec")
    encoded: list[EncodedTensor] = []
    for index, (name, values) in enumerate(inputs.items()):
        warm_q = state.warm_q(name) if state is not None else None
        tensor = encode_tensor(name, values, index, codec, warm_q=warm_q, seed=seed, rng=rng, meter=meter)
        if not np.all(np.isfinite(tensor.decoded)):
            raise ValueError(f"update[{name!r}] holds values too large to encode with {codec.canonical()!r}")
        encoded.append(tensor)
    payload = _assemble(codec, seed, encoded, meter)
    decoded = {tensor.entry.name: tensor.decoded for tensor in encoded}
    if state is not None and corrected is not None:
        state.commit(corrected, decoded, {t.entry.name: t.warm_q for t in encoded if t.warm_q is not None})
    return payload, _stats(codec, inputs, decoded, payload, meter)


def _assemble(codec: CodecSpec, seed: int, encoded: list[EncodedTensor], meter: Meter) -> bytes:
    table = write_table([tensor.entry for tensor in encoded])
    body = b"".join([table, *(tensor.data for tensor in encoded)])
    header = write_header(codec, seed, len(body))
    meter.add("format", header_bytes=len(header), table_bytes=len(table))
    if codec.entropy is None:
        return header + body
    frame = codec.entropy.encode(body)
    meter.add(codec.entropy.spec(), bytes_in=len(body), bytes_out=len(frame))
    return header + frame


def _check_encodable(arrays: Mapping[str, np.ndarray]) -> None:
    """Refuse what the default decoder would refuse, naming the tensor."""
    limits, elements = _DEFAULT_LIMITS, 0
    if len(arrays) > limits.max_tensors:
        raise ValueError(f"update has {len(arrays)} tensors; at most {limits.max_tensors} can be encoded")
    for name, value in arrays.items():
        if len(name.encode("utf-8")) > limits.max_name_bytes:
            raise ValueError(
                f"update[{name[:40]!r}...] has a name longer than {limits.max_name_bytes} UTF-8 bytes"
            )
        if value.ndim > limits.max_ndim:
            raise ValueError(f"update[{name!r}] has {value.ndim} dimensions; at most {limits.max_ndim}")
        elements += value.size
    if elements > limits.max_elements:
        raise ValueError(f"update has {elements} values; at most {limits.max_elements} can be encoded")


def _stats(
    codec: CodecSpec,
    inputs: Mapping[str, np.ndarray],
    decoded: Mapping[str, np.ndarray],
    payload: bytes,
    meter: Meter,
) -> EncodeStats:
    error_sq = reference_sq = 0.0
    for name, value in inputs.items():
        diff = (decoded[name] - value).ravel()
        error_sq += float(np.dot(diff, diff))
        reference_sq += float(np.dot(value.ravel(), value.ravel()))
    dense_bytes = 4 * sum(int(value.size) for value in inputs.values())
    return EncodeStats(
        spec=codec.canonical(),
        dense_bytes=dense_bytes,
        payload_bytes=len(payload),
        ratio=dense_bytes / len(payload),
        rel_l2_error=relative_error(error_sq, reference_sq),
        stages=meter.result(),
    )
