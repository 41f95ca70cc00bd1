"""The codec's three entry points: :func:`encode`, :func:`encode_with_stats` and :func:`decode`."""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from fedcompress.codec.layout import SharedLayout, check_entries, layout_digest, table_for
from fedcompress.codec.limits import DecodeLimits
from fedcompress.codec.pipeline import decode_body, encode_body
from fedcompress.codec.spec import CodecSpec, parse_spec
from fedcompress.codec.state import CodecState
from fedcompress.codec.stats import EncodeStats, Meter, relative_error
from fedcompress.codec.wire import FORMS, Header, Reader, TableEntry, read_header, write_header
from fedcompress.errors import CodecError
from fedcompress.seeding import numpy_rng
from fedcompress.tensors import Layout, check_finite, flatten, to_numpy_update

__all__ = ["decode", "encode", "encode_with_stats"]

_DEFAULT_LIMITS = DecodeLimits()
_LOG = logging.getLogger(__name__)


def encode(
    update: Mapping[str, Any],
    spec: str | CodecSpec,
    state: CodecState | None = None,
    *,
    seed: int = 0,
    framing: str = "self-describing",
) -> bytes:
    """Compress an update (ordered ``name -> float tensor``, torch or numpy) into a payload.

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
        ``derive_seed(run_seed, round, client_id)``. Travels in the payload (random-k and rotate need it).
    framing : str
        ``"self-describing"`` (default): the payload names its tensors, shapes and stage configs and decodes
        alone. ``"compact"``: it carries an 8-byte digest of them instead, and the receiver must pass the
        same layout to ``decode(..., layout=SharedLayout.of(model, spec))`` (see
        :mod:`fedcompress.codec.layout`).

    Raises
    ------
    ValueError
        A bad spec, seed or framing, a tensor holding NaN/Inf (named), or a state that does not match the update.
    """
    with np.errstate(over="ignore", invalid="ignore"):  # values too large are refused by name below
        return _encode(update, spec, state, seed, framing)[0]


def encode_with_stats(
    update: Mapping[str, Any],
    spec: str | CodecSpec,
    state: CodecState | None = None,
    *,
    seed: int = 0,
    framing: str = "self-describing",
) -> tuple[bytes, EncodeStats]:
    """:func:`encode`, and what it cost and lost (:class:`EncodeStats`)."""
    with np.errstate(over="ignore", invalid="ignore"):
        return _encode(update, spec, state, seed, framing)


def decode(
    payload: bytes | bytearray | memoryview,
    *,
    limits: DecodeLimits | None = None,
    layout: SharedLayout | None = None,
) -> dict[str, np.ndarray]:
    """Rebuild an update from a payload: float32 arrays with the original names, order and shapes.

    Every count, length and shape is checked against the payload's remaining bytes and ``limits`` before
    anything is allocated. Any malformed, truncated, oversized or non-finite payload raises ``CodecError``.

    ``layout`` is the tensors and codec this receiver expects (:class:`SharedLayout`). A compact payload
    needs it and must carry its digest; a self-describing payload given a layout must describe exactly it.
    Either mismatch, or a compact payload without a layout, raises ``CodecError``.
    """
    limits = _DEFAULT_LIMITS if limits is None else limits
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise CodecError(f"payload must be bytes, got {type(payload).__name__}")
    if layout is not None and not isinstance(layout, SharedLayout):
        raise ValueError(f"layout must be a SharedLayout or None, got {type(layout).__name__}")
    if len(payload) > limits.max_payload_bytes:
        raise CodecError(f"payload of {len(payload)} bytes is above max_payload_bytes={limits.max_payload_bytes}")
    try:
        with np.errstate(all="ignore"):  # overflow in hostile data ends in the NaN/Inf check, not a warning
            return _decode(memoryview(payload).cast("B"), limits, layout)
    except CodecError:
        raise
    except Exception as e:  # the safety net: nothing a payload does may escape as another exception type
        raise CodecError(f"malformed payload: {type(e).__name__}: {e}") from e


def _decode(payload: memoryview, limits: DecodeLimits, layout: SharedLayout | None) -> dict[str, np.ndarray]:
    reader = Reader(payload)
    header = read_header(reader, limits)
    spec, entries = _codec_and_table(header, limits, layout)
    rest = reader.take(reader.remaining, "body")
    try:
        if spec.entropy is not None:
            body: bytes | memoryview = spec.entropy.decode(rest, header.body_len)
        elif len(rest) != header.body_len:
            raise CodecError(f"header says the body has {header.body_len} bytes, but {len(rest)} bytes follow")
        else:
            body = rest
        flat, entries = decode_body(body, spec, header.seed, limits, entries=entries)
    except ValueError as e:
        raise CodecError(str(e)) from e
    if layout is not None and header.digest is None and layout_digest(spec, entries) != layout.digest:
        raise CodecError(f"payload's tensors or codec ({spec.canonical()!r}) differ from the layout given to decode")
    tensors = [(entry.name, entry.shape) for entry in entries]
    bad = _first_non_finite(flat, tensors)
    if bad is not None:
        raise CodecError(f"tensor {bad!r} decodes to NaN or Inf")
    return _split(flat, tensors)


def _split(flat: np.ndarray, tensors: Layout) -> dict[str, np.ndarray]:
    """Tensors as writeable views of the decoder's own flat float32 array (disjoint; nothing else holds it)."""
    out, offset = {}, 0
    for name, shape in tensors:
        size = math.prod(shape)
        out[name] = flat[offset : offset + size].reshape(shape)
        offset += size
    return out


def _codec_and_table(
    header: Header, limits: DecodeLimits, layout: SharedLayout | None
) -> tuple[CodecSpec, list[TableEntry] | None]:
    """The codec and (compact framing) the table, from the header or from the receiver's layout."""
    if header.spec is not None:
        return header.spec, None
    digest = header.digest or b""
    if layout is None:
        raise CodecError(
            f"payload uses compact framing (layout digest {digest.hex()}): decode it with "
            "layout=SharedLayout.of(model, codec) of the tensors and codec both ends share"
        )
    if digest != layout.digest:
        raise CodecError(
            f"payload's layout digest {digest.hex()} is not the given layout's {layout.digest.hex()} "
            f"(other tensor names, order, shapes or codec than {layout.codec.canonical()!r})"
        )
    check_entries(layout.entries, limits)
    return layout.codec, layout.entries


def _encode(
    update: Mapping[str, Any], spec: str | CodecSpec, state: CodecState | None, seed: int, framing: str
) -> tuple[bytes, EncodeStats]:
    codec = parse_spec(spec)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 1 << 64:
        raise ValueError(f"seed must be an integer in 0..2**64-1, got {seed!r}")
    if framing not in FORMS:
        raise ValueError(f"framing must be one of {list(FORMS)}, got {framing!r}")
    seed = int(seed)
    if state is not None and not isinstance(state, CodecState):
        raise ValueError(f"state must be a CodecState or None, got {type(state).__name__}")
    arrays = to_numpy_update(update)
    check_finite(arrays)
    _check_encodable(arrays)
    flat, layout = flatten(arrays)
    corrected = state.corrected(flat, layout, codec) if state is not None else None
    if state is not None and codec.quantizer is not None and not codec.quantizer.contracts():
        _warn_no_contraction(codec.quantizer.spec())
    if corrected is not None:
        flat = corrected.astype(np.float32)
    meter = Meter()
    warm_qs = state.qs_view() if state is not None else {}
    compact = framing == "compact"
    body, decoded, new_qs = encode_body(
        flat, layout, codec, warm_qs=warm_qs, seed=seed, rng=numpy_rng(seed, "codec"), meter=meter, table=not compact
    )
    bad = _first_non_finite(decoded, layout)
    if bad is not None:
        raise ValueError(f"update[{bad!r}] holds values too large to encode with {codec.canonical()!r}")
    digest = layout_digest(codec, table_for(layout, codec)) if compact else None
    payload = _assemble(codec, seed, body, meter, digest)
    reference = flat if corrected is None else corrected
    residual = reference - decoded  # what this message dropped: carried to the next round with a state
    if state is not None:
        state.commit(residual, layout, new_qs)
    return payload, _stats(codec, reference, residual, payload, meter)


@functools.lru_cache(maxsize=64)
def _warn_no_contraction(stage: str) -> None:
    """Log once per stage that error feedback may diverge with it."""
    if stage.startswith("sign"):
        hint = "sign:scale=unbiased trades a larger error for no bias; use sign:scale=mse, see fedcompress.codec.sign"
    else:
        hint = "it rounds too coarsely for its blocks; use more bits or a smaller block, see fedcompress.codec.quantize"
    _LOG.warning("codec stage %s is not a contraction: error feedback may diverge (%s)", stage, hint)


def _first_non_finite(flat: np.ndarray, layout: Layout) -> str | None:
    """Name of the first tensor holding NaN or Inf, or None (one vectorised pass when all is well)."""
    if np.isfinite(flat).all():
        return None
    offset = 0
    for name, shape in layout:
        size = math.prod(shape)
        if not np.isfinite(flat[offset : offset + size]).all():
            return name
        offset += size
    return None


def _assemble(codec: CodecSpec, seed: int, body: bytes, meter: Meter, digest: bytes | None) -> bytes:
    header = write_header(codec, seed, len(body), digest=digest)
    meter.add("format", header_bytes=len(header))
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
            raise ValueError(f"update[{name[:40]!r}...] has a name longer than {limits.max_name_bytes} UTF-8 bytes")
        if value.ndim > limits.max_ndim:
            raise ValueError(f"update[{name!r}] has {value.ndim} dimensions; at most {limits.max_ndim}")
        elements += value.size
    if elements > limits.max_elements:
        raise ValueError(f"update has {elements} values; at most {limits.max_elements} can be encoded")


def _relative_l2(error: np.ndarray, reference: np.ndarray) -> float:
    # float64 sums: a float32 dot of tiny values (1e-31) underflows to 0 and would report an infinite error
    error64, reference64 = np.asarray(error, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    return relative_error(float(np.dot(error64, error64)), float(np.dot(reference64, reference64)))


def _stats(codec: CodecSpec, reference: np.ndarray, error: np.ndarray, payload: bytes, meter: Meter) -> EncodeStats:
    dense_bytes = 4 * int(reference.size)
    return EncodeStats(
        spec=codec.canonical(),
        dense_bytes=dense_bytes,
        payload_bytes=len(payload),
        ratio=dense_bytes / len(payload),
        rel_l2_error=_relative_l2(error, reference),
        stages=meter.result(),
    )
