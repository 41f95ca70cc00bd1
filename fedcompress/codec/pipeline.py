"""The pipeline: run a :class:`CodecSpec`'s stages over every tensor, and back.

Per tensor, in order: ``lowrank`` turns a matrix (or conv kernel) into factors ``P``, ``Q`` when that saves
bytes; otherwise the tensor stays dense and the sparsifier (``topk``/``randk``) keeps some of its entries.
Every float vector that remains (factors, kept values, dense values) is quantized by ``q`` if present, else
sent as float32. The serialized body is then compressed by ``zstd`` if present.

Data section of one tensor::

    factors          values(P, m*r) values(Q, n*r)
    dense, topk      index section (mode byte + gaps or bitmap) values(kept, k)
    dense, randk     values(kept, k)
    dense            values(all, n)

where ``values`` is the quantizer's section or ``4 * count`` bytes of little-endian float32.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedcompress.codec.lowrank import LowRank, matrix_shape
from fedcompress.codec.quantize import Quantize
from fedcompress.codec.sparsify import Sparsifier
from fedcompress.codec.spec import CodecSpec
from fedcompress.codec.stats import Meter
from fedcompress.codec.topk import TopK
from fedcompress.codec.wire import TableEntry

__all__ = ["EncodedTensor", "decode_tensor", "encode_tensor", "expected_data_len"]


@dataclass(frozen=True)
class EncodedTensor:
    """One tensor's table row, data section, the reconstruction the decoder will make, and new ``Q``."""

    entry: TableEntry
    data: bytes
    decoded: np.ndarray
    warm_q: np.ndarray | None


# ---- float vectors: quantized or raw float32 ---------------------------------------------------------


def values_size(quantizer: Quantize | None, count: int) -> int:
    """Bytes of a values section of ``count`` floats."""
    return quantizer.section_size(count) if quantizer else 4 * count


def encode_values(
    values: np.ndarray, quantizer: Quantize | None, rng: np.random.Generator, meter: Meter
) -> tuple[bytes, np.ndarray]:
    """A float32 vector as a values section, and its reconstruction."""
    if quantizer is None:
        return values.astype("<f4", copy=False).tobytes(), values
    section, decoded = quantizer.encode(values, rng)
    diff = decoded - values
    meter.add(
        quantizer.spec(),
        values=values.size,
        bytes=len(section),
        scale_bytes=8 * quantizer.num_blocks(values.size),
    )
    meter.error(quantizer.spec(), float(np.dot(diff, diff)), float(np.dot(values, values)))
    return section, decoded


def decode_values(section: memoryview, quantizer: Quantize | None, count: int) -> np.ndarray:
    """Inverse of :func:`encode_values` (the section length was checked by :func:`expected_data_len`)."""
    if quantizer is None:
        return np.frombuffer(section, dtype="<f4", count=count).astype(np.float32)
    return quantizer.decode(section, count)


# ---- one tensor ---------------------------------------------------------------------------------------


def encode_tensor(
    name: str,
    values: np.ndarray,
    index: int,
    spec: CodecSpec,
    *,
    warm_q: np.ndarray | None,
    seed: int,
    rng: np.random.Generator,
    meter: Meter,
) -> EncodedTensor:
    """Encode one float32 tensor (any shape) through the pipeline's array stages."""
    shape = tuple(values.shape)
    lowrank = spec.lowrank
    if lowrank is not None and lowrank.applies(shape):
        return _encode_factors(name, values, lowrank, spec.quantizer, warm_q, rng, meter)
    if lowrank is not None:
        meter.add(lowrank.spec(), passthrough_tensors=1)
    flat = values.ravel()
    sparsifier = spec.sparsifier
    if sparsifier is None:
        data, decoded = encode_values(flat, spec.quantizer, rng, meter)
        return EncodedTensor(TableEntry(name, shape, False, len(data)), data, decoded.reshape(shape), None)
    indices, index_section = sparsifier.encode(flat, seed=seed, tensor_index=index)
    kept = flat[indices]
    value_section, kept_decoded = encode_values(kept, spec.quantizer, rng, meter)
    kept_sq = float(np.dot(kept, kept))
    meter.add(
        sparsifier.spec(),
        values_in=flat.size,
        kept=kept.size,
        index_bytes=len(index_section),
        bitmap_tensors=int(index_section[:1] == b"\x01"),
    )
    meter.error(sparsifier.spec(), float(np.dot(flat, flat)) - kept_sq, float(np.dot(flat, flat)))
    data = index_section + value_section
    decoded = Sparsifier.decode(indices, kept_decoded, flat.size).reshape(shape)
    return EncodedTensor(TableEntry(name, shape, False, len(data)), data, decoded, None)


def _encode_factors(
    name: str,
    values: np.ndarray,
    lowrank: LowRank,
    quantizer: Quantize | None,
    warm_q: np.ndarray | None,
    rng: np.random.Generator,
    meter: Meter,
) -> EncodedTensor:
    shape = tuple(values.shape)
    rows, cols = matrix_shape(shape)
    matrix = values.reshape(rows, cols)
    p, q = lowrank.encode(matrix, warm_q, rng)
    rank = p.shape[1]
    # P has orthonormal columns and Q = M^T P, so ||M - P Q^T||^2 = ||M||^2 - ||Q||^2.
    total_sq, kept_sq = float(np.dot(values.ravel(), values.ravel())), float(np.dot(q.ravel(), q.ravel()))
    meter.add(lowrank.spec(), factored_tensors=1, values_in=rows * cols, values_out=rank * (rows + cols))
    meter.error(lowrank.spec(), total_sq - kept_sq, total_sq)
    p_section, p_decoded = encode_values(p.ravel(), quantizer, rng, meter)
    q_section, q_decoded = encode_values(q.ravel(), quantizer, rng, meter)
    decoded = LowRank.decode(p_decoded.reshape(rows, rank), q_decoded.reshape(cols, rank)).reshape(shape)
    data = p_section + q_section
    return EncodedTensor(TableEntry(name, shape, True, len(data)), data, decoded, q)


def expected_data_len(entry: TableEntry, spec: CodecSpec) -> tuple[int, int]:
    """Smallest and largest data length a well-formed section of ``entry`` can have."""
    size = int(np.prod(entry.shape, dtype=np.int64)) if entry.shape else 1
    if entry.factored:
        lowrank = spec.lowrank
        if lowrank is None or len(entry.shape) < 2 or lowrank.rank_for(entry.shape) < 1:
            raise ValueError(
                f"tensor {entry.name!r} is sent as factors, but the codec has no low-rank stage for it"
            )
        rows, cols = matrix_shape(entry.shape)
        rank = lowrank.rank_for(entry.shape)
        exact = values_size(spec.quantizer, rows * rank) + values_size(spec.quantizer, cols * rank)
        return exact, exact
    sparsifier = spec.sparsifier
    if sparsifier is None:
        exact = values_size(spec.quantizer, size)
        return exact, exact
    kept = values_size(spec.quantizer, sparsifier.count(size))
    if not isinstance(sparsifier, TopK):
        return kept, kept
    return kept + 1, kept + 1 + max((size + 7) // 8, 5 * sparsifier.count(size))


def decode_tensor(entry: TableEntry, data: memoryview, index: int, spec: CodecSpec, seed: int) -> np.ndarray:
    """Rebuild one float32 tensor from its data section (``ValueError`` if the section is malformed)."""
    size = int(np.prod(entry.shape, dtype=np.int64)) if entry.shape else 1
    quantizer = spec.quantizer
    if entry.factored:
        rows, cols = matrix_shape(entry.shape)
        rank = spec.lowrank.rank_for(entry.shape)  # type: ignore[union-attr]  # checked by expected_data_len
        split = values_size(quantizer, rows * rank)
        p = decode_values(data[:split], quantizer, rows * rank).reshape(rows, rank)
        q = decode_values(data[split:], quantizer, cols * rank).reshape(cols, rank)
        return LowRank.decode(p, q).reshape(entry.shape)
    sparsifier = spec.sparsifier
    if sparsifier is None:
        return decode_values(data, quantizer, size).reshape(entry.shape)
    count = sparsifier.count(size)
    split = len(data) - values_size(quantizer, count)
    indices = sparsifier.decode_indices(data[:split], size, seed=seed, tensor_index=index)
    kept = decode_values(data[split:], quantizer, count)
    return Sparsifier.decode(indices, kept, size).reshape(entry.shape)
