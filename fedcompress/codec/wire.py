"""The payload's framing: header, tensor table, and a bounds-checked reader.

Format version 2 (written), all integers little-endian or unsigned LEB128 varints::

    header (never compressed)
      magic       4 bytes   b"FCDC"
      version     u8        2
      form        u8        0 = self-describing, 1 = compact (the receiver supplies the layout)
      seed        u64       drives the random-k mask and the rotation (and, at encode time, rounding and PowerSGD
                            init)
      form 0:
        config_len  varint  <= 4096
        config      JSON    list of stage configs, e.g. [{"id": "q", "bits": 8, "block": 256, "range": null}]
      form 1:
        digest      8 bytes layout digest: BLAKE2b-64 of (config, table) as form 0 would write them
      body_len    varint    body bytes after decompression
      body        zstd frame if the codec has a zstd stage, else the body itself (exactly body_len bytes)
    body
      form 0: n_tensors varint, then the table: per tensor name_len varint, name UTF-8, dtype u8 (1 = float32),
              kind u8 (0 = dense, 1 = low-rank factors), ndim u8, dims varint * ndim
      form 1: no table (the receiver's :class:`~fedcompress.codec.layout.SharedLayout` has the same digest)
      sections    index and values sections (see :mod:`fedcompress.codec.pipeline`)

Version 1 (still read, never written) is version 2's form 0 without the form byte, and knows only the stages
``lowrank``, ``topk``, ``randk``, ``q`` and ``zstd``. Every count and length is checked against the bytes that
remain and against :class:`DecodeLimits` before anything is allocated. Changing the layout means a new version
number; unknown versions are refused by number.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass

from fedcompress.codec.limits import DecodeLimits
from fedcompress.codec.spec import CodecSpec
from fedcompress.codec.varint import MAX_VARINT_BYTES, encode_varint
from fedcompress.errors import CodecError

__all__ = [
    "DIGEST_BYTES",
    "FORMAT_VERSION",
    "FORMS",
    "MAGIC",
    "Header",
    "Reader",
    "TableEntry",
    "config_bytes",
    "read_header",
    "read_table",
    "size_of",
    "write_header",
    "write_table",
]

MAGIC = b"FCDC"
FORMAT_VERSION = 2
READ_VERSIONS = (1, 2)
FORMS = ("self-describing", "compact")
DIGEST_BYTES = 8
V1_STAGES = frozenset({"lowrank", "topk", "randk", "q", "zstd"})
MAX_CONFIG_BYTES = 4096
DTYPE_FLOAT32 = 1
KIND_DENSE, KIND_FACTORS = 0, 1
_MIN_ENTRY_BYTES = 4  # name_len, dtype, kind, ndim: one byte each at least


class Reader:
    """Sequential reads from a byte buffer; running past the end raises ``CodecError`` saying what was cut."""

    def __init__(self, data: bytes | memoryview) -> None:
        self._view = memoryview(data)
        self.pos = 0

    @property
    def remaining(self) -> int:
        """Bytes not read yet."""
        return len(self._view) - self.pos

    def take(self, count: int, what: str) -> memoryview:
        """The next ``count`` bytes."""
        if count > self.remaining:
            raise CodecError(
                f"payload truncated: {what} needs {count} bytes at offset {self.pos}, {self.remaining} left"
            )
        chunk = self._view[self.pos : self.pos + count]
        self.pos += count
        return chunk

    def u8(self, what: str) -> int:
        """One unsigned byte."""
        return self.take(1, what)[0]

    def u64(self, what: str) -> int:
        """One little-endian unsigned 64-bit integer."""
        return int(struct.unpack("<Q", self.take(8, what))[0])

    def varint(self, what: str, maximum: int) -> int:
        """One varint, refused if it is malformed or above ``maximum``."""
        value = 0
        for shift in range(0, 7 * MAX_VARINT_BYTES, 7):
            byte = self.u8(what)
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                if value > maximum:
                    raise CodecError(f"{what} is {value}, above the limit of {maximum}")
                return value
        raise CodecError(f"{what} is a varint longer than {MAX_VARINT_BYTES} bytes")


@dataclass(frozen=True)
class Header:
    """What the header says: the codec (None in compact form), the seed, the layout digest (compact form only)."""

    version: int
    spec: CodecSpec | None
    seed: int
    digest: bytes | None
    body_len: int


def config_bytes(spec: CodecSpec) -> bytes:
    """The stage configs as compact JSON, as the self-describing header carries them."""
    return json.dumps(spec.get_config(), separators=(",", ":")).encode()


def write_header(spec: CodecSpec, seed: int, body_len: int, *, digest: bytes | None = None) -> bytes:
    """Magic, version, form, seed, then the stage configs (self-describing) or the layout digest (compact)."""
    if digest is None:
        config = config_bytes(spec)
        middle = [bytes([0]), struct.pack("<Q", seed), encode_varint(len(config)), config]
    else:
        if len(digest) != DIGEST_BYTES:
            raise ValueError(f"a layout digest has {DIGEST_BYTES} bytes, got {len(digest)}")
        middle = [bytes([1]), struct.pack("<Q", seed), digest]
    return b"".join([MAGIC, bytes([FORMAT_VERSION]), *middle, encode_varint(body_len)])


def read_header(reader: Reader, limits: DecodeLimits) -> Header:
    """Check magic, version and form; parse the stage configs or take the layout digest."""
    magic = bytes(reader.take(len(MAGIC), "magic"))
    if magic != MAGIC:
        raise CodecError(f"not a fedcompress payload: magic bytes are {magic!r}, expected {MAGIC!r}")
    version = reader.u8("format version")
    if version not in READ_VERSIONS:
        raise CodecError(
            f"payload format version {version} is not supported; this decoder reads versions {list(READ_VERSIONS)}"
        )
    form = reader.u8("framing form") if version >= 2 else 0
    if form >= len(FORMS):
        raise CodecError(f"payload framing form {form} is unknown; expected 0 (self-describing) or 1 (compact)")
    seed = reader.u64("seed")
    spec, digest = None, None
    if form == 0:
        spec = _read_config(reader, version)
    else:
        digest = bytes(reader.take(DIGEST_BYTES, "layout digest"))
    body_len = reader.varint("body length", limits.max_decompressed_bytes)
    return Header(version, spec, seed, digest, body_len)


def _read_config(reader: Reader, version: int) -> CodecSpec:
    config_len = reader.varint("stage config length", MAX_CONFIG_BYTES)
    raw_config = bytes(reader.take(config_len, "stage config"))
    try:
        spec = CodecSpec.from_config(json.loads(raw_config.decode("utf-8")))
    except (ValueError, TypeError, RecursionError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise CodecError(f"payload stage config is invalid: {e}") from e
    newer = [stage.codec_id for stage in spec.stages if stage.codec_id not in V1_STAGES]
    if version == 1 and newer:
        raise CodecError(f"payload format version 1 has no stage {newer[0]!r} (it came with version 2)")
    return spec


@dataclass(frozen=True)
class TableEntry:
    """One tensor's row of the table: name, shape, and whether it travels as low-rank factors."""

    name: str
    shape: tuple[int, ...]
    factored: bool


def write_table(entries: list[TableEntry]) -> bytes:
    """The tensor count and table rows."""
    parts = [encode_varint(len(entries))]
    for entry in entries:
        name = entry.name.encode("utf-8")
        parts += [
            encode_varint(len(name)),
            name,
            bytes([DTYPE_FLOAT32, int(entry.factored), len(entry.shape)]),
        ]
        parts += [encode_varint(dim) for dim in entry.shape]
    return b"".join(parts)


def read_table(reader: Reader, limits: DecodeLimits) -> list[TableEntry]:
    """Parse and check the table: counts, names (UTF-8, unique), dtypes, kinds, dimensions, total size."""
    count = reader.varint("tensor count", limits.max_tensors)
    if count * _MIN_ENTRY_BYTES > reader.remaining:
        raise CodecError(f"payload claims {count} tensors but only {reader.remaining} body bytes remain")
    entries: list[TableEntry] = []
    names: set[str] = set()
    elements = 0
    for index in range(count):
        entry = _read_entry(reader, limits, index)
        if entry.name in names:
            raise CodecError(f"tensor name {entry.name!r} appears twice")
        names.add(entry.name)
        elements += size_of(entry.shape)
        if elements > limits.max_elements:
            raise CodecError(f"tensors hold more than max_elements={limits.max_elements} values")
        entries.append(entry)
    return entries


def _read_entry(reader: Reader, limits: DecodeLimits, index: int) -> TableEntry:
    what = f"tensor #{index}"
    name_len = reader.varint(f"{what} name length", limits.max_name_bytes)
    try:
        name = bytes(reader.take(name_len, f"{what} name")).decode("utf-8")
    except UnicodeDecodeError as e:
        raise CodecError(f"{what} name is not valid UTF-8") from e
    dtype, kind, ndim = reader.u8(f"{what} dtype"), reader.u8(f"{what} kind"), reader.u8(f"{what} ndim")
    if dtype != DTYPE_FLOAT32:
        raise CodecError(f"tensor {name!r} has dtype code {dtype}; only {DTYPE_FLOAT32} (float32) exists")
    if kind not in (KIND_DENSE, KIND_FACTORS):
        raise CodecError(f"tensor {name!r} has kind {kind}; expected {KIND_DENSE} (dense) or {KIND_FACTORS} (factors)")
    if ndim > limits.max_ndim:
        raise CodecError(f"tensor {name!r} has {ndim} dimensions, above max_ndim={limits.max_ndim}")
    shape = tuple(reader.varint(f"tensor {name!r} dimension", limits.max_elements) for _ in range(ndim))
    return TableEntry(name, shape, kind == KIND_FACTORS)


def size_of(shape: tuple[int, ...]) -> int:
    """Values in a tensor of this shape (Python ints: no overflow)."""
    size = 1
    for dim in shape:
        size *= dim
    return size
