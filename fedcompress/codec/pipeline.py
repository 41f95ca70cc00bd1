"""The pipeline: run a :class:`CodecSpec`'s array stages over a whole update, and back.

``lowrank`` turns every matrix or conv kernel where it saves bytes into factors ``P``, ``Q``. The other
tensors ("dense") are flattened, in table order, into one dense stream, which ``rotate`` turns into rotated
chunks (padding the last) and the sparsifier (``topk``/``randk``) thins as a whole (one global top-k, one
random mask). All floats that remain form one float stream: every factored tensor's ``P`` then ``Q``, then the
dense stream's kept values. The quantizer (``q``/``sign``) encodes that stream in one vectorised pass, its
blocks or scales restarting at every segment (each ``P``, each ``Q``, then each dense tensor's kept values, or
each rotated chunk's) so a tensor never shares a scale with another unless a rotation mixed them; without a
quantizer the stream is sent as float32.

Body layout after the tensor table (compact framing: no table; see :mod:`fedcompress.codec.wire`)::

    index_len   varint   bytes of the top-k index section (0 without topk)
    index       bytes    mode byte + varint gaps or bitmap, over the (rotated) dense stream
    values_len  varint   bytes of the values section; must be exactly what the table and indices imply
    values      bytes    quantizer section, or float32 little-endian
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping

import numpy as np

from fedcompress.codec.layout import table_for
from fedcompress.codec.limits import DecodeLimits
from fedcompress.codec.lowrank import LowRank, matrix_shape
from fedcompress.codec.quantizer import Quantizer
from fedcompress.codec.sparsify import Sparsifier
from fedcompress.codec.spec import CodecSpec
from fedcompress.codec.stats import Meter
from fedcompress.codec.topk import TopK
from fedcompress.codec.varint import encode_varint
from fedcompress.codec.wire import Reader, TableEntry, read_table, write_table
from fedcompress.errors import CodecError
from fedcompress.tensors import Layout

__all__ = ["decode_body", "encode_body"]


class _Plan:
    """What the table implies: where each tensor sits in the flat update, the factors, the dense stream."""

    def __init__(self, entries: list[TableEntry], spec: CodecSpec, seed: int) -> None:
        self.entries, self.rotation, self.seed = entries, spec.rotation, seed
        sizes = [math.prod(entry.shape) for entry in entries]
        self.offsets = [0, *itertools.accumulate(sizes)]
        self.factors: dict[int, tuple[int, int, int]] = {}  # tensor index -> (rows, cols, rank)
        for index, entry in enumerate(entries):
            if entry.factored:
                if spec.lowrank is None or len(entry.shape) < 2 or spec.lowrank.rank_for(entry.shape) < 1:
                    raise ValueError(f"tensor {entry.name!r} is sent as factors, but the codec cannot make them")
                self.factors[index] = (*matrix_shape(entry.shape), spec.lowrank.rank_for(entry.shape))
        self.dense = [index for index, entry in enumerate(entries) if not entry.factored]
        self.dense_sizes = np.array([sizes[index] for index in self.dense], dtype=np.int64)
        self.dense_total = int(self.dense_sizes.sum())
        # Segments of the stream the sparsifier and quantizer see: dense tensors, or rotated chunks.
        rotation = self.rotation
        self.stream_sizes = self.dense_sizes if rotation is None else rotation.chunk_lengths(self.dense_total)
        self.stream_total = int(self.stream_sizes.sum())
        self.factor_segments = np.array(
            [n * r for rows, cols, r in self.factors.values() for n in (rows, cols)], dtype=np.int64
        )

    @property
    def size(self) -> int:
        """Values in the whole update."""
        return self.offsets[-1]

    def span(self, index: int) -> slice:
        """Where tensor ``index`` sits in the flat update."""
        return slice(self.offsets[index], self.offsets[index + 1])

    def dense_stream(self, flat: np.ndarray) -> np.ndarray:
        """The dense tensors' values in table order (``flat`` itself if nothing is factored), rotated if asked."""
        dense = flat
        if self.factors:
            dense = np.concatenate([flat[self.span(index)] for index in self.dense]) if self.dense else flat[:0]
        return dense if self.rotation is None else self.rotation.encode(dense, seed=self.seed)

    def segments(self, indices: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Values per segment of the float stream (factors, then the dense stream's kept values), and totals."""
        totals = np.concatenate([self.factor_segments, self.stream_sizes])
        if indices is None:
            return totals, totals
        bounds = np.concatenate([[0], np.cumsum(self.stream_sizes)])
        kept = np.diff(np.searchsorted(indices, bounds)).astype(np.int64)
        return np.concatenate([self.factor_segments, kept]), totals

    def rebuild(self, stream: np.ndarray, indices: np.ndarray | None) -> np.ndarray:
        """The flat float32 update that the decoded float stream stands for."""
        offset, factored = 0, []
        for index, (rows, cols, rank) in self.factors.items():
            p = stream[offset : offset + rows * rank].reshape(rows, rank)
            q = stream[offset + rows * rank : offset + (rows + cols) * rank].reshape(cols, rank)
            factored.append((index, LowRank.decode(p, q)))
            offset += (rows + cols) * rank
        dense = stream[offset:]
        if indices is not None:
            dense = Sparsifier.decode(indices, dense, self.stream_total)
        if self.rotation is not None:
            dense = self.rotation.decode(dense, self.dense_total, seed=self.seed, overwrite=True)  # ours to reuse
        if not self.factors:
            return dense
        flat = np.empty(self.size, dtype=np.float32)
        for index, matrix in factored:
            flat[self.span(index)] = matrix.ravel()
        start = 0
        for index, size in zip(self.dense, self.dense_sizes.tolist(), strict=True):
            flat[self.span(index)] = dense[start : start + size]
            start += size
        return flat


# ---- the float stream: quantized or raw float32 --------------------------------------------------------


def _encode_values(
    values: np.ndarray,
    segments: tuple[np.ndarray, np.ndarray],
    quantizer: Quantizer | None,
    rng: np.random.Generator,
    meter: Meter,
) -> tuple[bytes, np.ndarray]:
    if quantizer is None:
        return values.astype("<f4", copy=False).tobytes(), values
    kept, totals = segments
    section, decoded = quantizer.encode(values, rng, kept, totals=totals)
    diff = decoded - values
    meter.add(quantizer.spec(), values=values.size, bytes=len(section), scale_bytes=quantizer.scale_bytes(kept))
    meter.error(quantizer.spec(), float(np.dot(diff, diff)), float(np.dot(values, values)))
    return section, decoded


def _decode_values(
    section: memoryview, segments: tuple[np.ndarray, np.ndarray], quantizer: Quantizer | None
) -> np.ndarray:
    kept, totals = segments
    if quantizer is not None:
        return quantizer.decode(section, kept, totals=totals)
    if len(section) != 4 * int(kept.sum()):
        raise ValueError(f"float32 values section has {len(section)} bytes, expected {4 * int(kept.sum())}")
    return np.frombuffer(section, dtype="<f4").astype(np.float32)


# ---- encode -----------------------------------------------------------------------------------------


def encode_body(
    flat: np.ndarray,
    layout: Layout,
    spec: CodecSpec,
    *,
    warm_qs: Mapping[str, np.ndarray],
    seed: int,
    rng: np.random.Generator,
    meter: Meter,
    table: bool = True,
) -> tuple[bytes, np.ndarray, dict[str, np.ndarray]]:
    """Serialize a flat float32 update (``flatten`` output) through the array stages.

    Returns the body (with the tensor table first unless ``table`` is False: compact framing), the flat float32
    reconstruction the decoder will make, and the new PowerSGD ``Q`` matrices by tensor name (warm starts for
    the next round).
    """
    lowrank, sparsifier = spec.lowrank, spec.sparsifier
    entries = table_for(layout, spec)
    plan = _Plan(entries, spec, seed)
    factors: list[np.ndarray] = []
    new_qs: dict[str, np.ndarray] = {}
    if lowrank is not None:
        for index, (rows, cols, _) in plan.factors.items():
            name, matrix = entries[index].name, flat[plan.span(index)].reshape(rows, cols)
            p, q = lowrank.encode(matrix, warm_qs.get(name), rng)
            _measure_lowrank(meter, lowrank, matrix, q)
            factors += [p.ravel(), q.ravel()]
            new_qs[name] = q
    dense = plan.dense_stream(flat)
    if spec.rotation is not None:
        meter.add(spec.rotation.spec(), values_in=plan.dense_total, values_out=plan.stream_total)
    indices, index_section, kept = None, b"", dense
    if sparsifier is not None:
        indices, index_section = sparsifier.encode(dense, seed=seed, segments=plan.stream_sizes)
        kept = dense[indices]
        _measure_sparsifier(meter, sparsifier, dense, kept, index_section)
    stream = np.concatenate([*factors, kept]) if factors else kept
    values_section, decoded_stream = _encode_values(stream, plan.segments(indices), spec.quantizer, rng, meter)
    head = write_table(entries) if table else b""
    meter.add("format", table_bytes=len(head))
    parts = [head, encode_varint(len(index_section)), index_section, encode_varint(len(values_section))]
    body = b"".join([*parts, values_section])
    return body, plan.rebuild(decoded_stream, indices), new_qs


def _measure_lowrank(meter: Meter, lowrank: LowRank, value: np.ndarray, q: np.ndarray) -> None:
    # P has orthonormal columns and Q = M^T P, so ||M - P Q^T||^2 = ||M||^2 - ||Q||^2.
    total_sq, kept_sq = float(np.dot(value.ravel(), value.ravel())), float(np.dot(q.ravel(), q.ravel()))
    rows, (cols, rank) = value.shape[0], q.shape
    meter.add(lowrank.spec(), factored_tensors=1, values_in=value.size, values_out=rank * (rows + cols))
    meter.error(lowrank.spec(), total_sq - kept_sq, total_sq)


def _measure_sparsifier(
    meter: Meter, sparsifier: Sparsifier, dense: np.ndarray, kept: np.ndarray, index_section: bytes
) -> None:
    total_sq = float(np.dot(dense, dense))
    meter.add(sparsifier.spec(), values_in=dense.size, kept=kept.size, index_bytes=len(index_section))
    meter.error(sparsifier.spec(), total_sq - float(np.dot(kept, kept)), total_sq)


# ---- decode -----------------------------------------------------------------------------------------


def decode_body(
    body: bytes | memoryview,
    spec: CodecSpec,
    seed: int,
    limits: DecodeLimits,
    *,
    entries: list[TableEntry] | None = None,
) -> tuple[np.ndarray, list[TableEntry]]:
    """Parse a body into the flat float32 update and its table; ``CodecError``/``ValueError`` if malformed.

    ``entries`` is the table when the receiver supplies it (compact framing: the body has none). Every length
    is checked against what the table (and, for top-k, the indices) implies before the values are decoded.
    """
    reader = Reader(body)
    plan = _Plan(read_table(reader, limits) if entries is None else entries, spec, seed)
    total = plan.stream_total
    index_len = reader.varint("index section length", reader.remaining)
    low, high = _index_bounds(spec.sparsifier, total)
    if not low <= index_len <= high:
        raise CodecError(f"index section has {index_len} bytes; {low}..{high} expected for {total} dense values")
    index_section = reader.take(index_len, "index section")
    values_len = reader.varint("values section length", reader.remaining)
    if values_len != reader.remaining:
        raise CodecError(f"values section says {values_len} bytes, but {reader.remaining} bytes remain")
    indices = None
    if spec.sparsifier is not None:
        indices = spec.sparsifier.decode_indices(index_section, total, seed=seed, segments=plan.stream_sizes)
    segments = plan.segments(indices)
    expected = spec.quantizer.section_size(segments[0]) if spec.quantizer else 4 * int(segments[0].sum())
    if values_len != expected:
        raise CodecError(f"values section has {values_len} bytes; the table implies {expected}")
    stream = _decode_values(reader.take(values_len, "values section"), segments, spec.quantizer)
    return plan.rebuild(stream, indices), plan.entries


def _index_bounds(sparsifier: Sparsifier | None, total: int) -> tuple[int, int]:
    """Smallest and largest index section a well-formed payload can have."""
    if not isinstance(sparsifier, TopK):
        return 0, 0
    return 1, 1 + max((total + 7) // 8, 5 * sparsifier.count(total))
