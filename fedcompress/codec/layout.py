"""Compact framing: a layout both ends already share, so a payload carries an 8-byte digest instead of a table.

A self-describing payload names every tensor, its shape and the codec's stage configs in every message: about
10 bytes per tensor plus the configs, which at 300x on a small model is most of the budget. In a federation
both ends know all of it already (the server built the model and the run config names the codec), so a client
may send ``encode(..., framing="compact")``: the header then holds :func:`layout_digest` of what it would have
written, and the receiver decodes with ``decode(payload, layout=SharedLayout.of(model, codec))``. A missing
layout, or one with another digest (other names, order, shapes or codec), is a ``CodecError``; so is a
self-describing payload that does not match a layout given to ``decode``.

The digest is a check against mix-ups (another model, another codec, a stale client), not a signature: it is
computed from public data. The layout itself comes from the receiver, so a hostile sender can describe
nothing: the decoder allocates what the receiver's own layout says, still held to its :class:`DecodeLimits`.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedcompress.codec.limits import DecodeLimits
from fedcompress.codec.spec import CodecSpec, parse_spec
from fedcompress.codec.varint import encode_varint
from fedcompress.codec.wire import DIGEST_BYTES, TableEntry, config_bytes, size_of, write_table
from fedcompress.errors import CodecError
from fedcompress.tensors import Layout

__all__ = ["SharedLayout", "check_entries", "layout_digest", "table_for"]


@dataclass(frozen=True)
class SharedLayout:
    """The tensors (names in order, shapes; float32) and the codec that both ends of a link share.

    Parameters
    ----------
    tensors : sequence of (str, shape)
        Every tensor's name and shape, in the order the updates hold them.
    codec : str | CodecSpec
        The codec spec or preset the sender encodes with (normalised to a :class:`CodecSpec`).
    """

    tensors: tuple[tuple[str, tuple[int, ...]], ...]
    codec: CodecSpec

    def __post_init__(self) -> None:
        tensors = tuple((name, tuple(shape)) for name, shape in self.tensors)
        for name, shape in tensors:
            if not isinstance(name, str):
                raise ValueError(f"SharedLayout tensor names must be strings, got {name!r}")
            if not all(isinstance(dim, (int, np.integer)) and not isinstance(dim, bool) and dim >= 0 for dim in shape):
                raise ValueError(f"SharedLayout tensor {name!r} has shape {shape!r}; dims must be integers >= 0")
        if len({name for name, _ in tensors}) != len(tensors):
            raise ValueError("SharedLayout tensor names must be unique")
        object.__setattr__(self, "tensors", tuple((name, tuple(int(d) for d in shape)) for name, shape in tensors))
        object.__setattr__(self, "codec", parse_spec(self.codec))

    @classmethod
    def of(cls, update: Mapping[str, Any], codec: str | CodecSpec) -> SharedLayout:
        """The layout of a model or update (``name -> tensor``, torch or numpy), with the codec."""
        return cls(tuple((str(name), tuple(np.shape(value))) for name, value in update.items()), codec)  # type: ignore[arg-type]

    @functools.cached_property
    def entries(self) -> list[TableEntry]:
        """The table a self-describing payload would carry."""
        return table_for(list(self.tensors), self.codec)

    @functools.cached_property
    def digest(self) -> bytes:
        """The 8-byte layout digest a compact payload of this layout carries."""
        return layout_digest(self.codec, self.entries)


def table_for(layout: Layout, spec: CodecSpec) -> list[TableEntry]:
    """The table rows an encoder writes for these tensors: factored where the low-rank stage applies."""
    lowrank = spec.lowrank
    return [TableEntry(name, shape, lowrank is not None and lowrank.applies(shape)) for name, shape in layout]


def layout_digest(spec: CodecSpec, entries: list[TableEntry]) -> bytes:
    """BLAKE2b-64 of the stage configs and the table, exactly as a self-describing payload writes them."""
    digest = hashlib.blake2b(digest_size=DIGEST_BYTES, person=b"fcdc-layout")
    for part in (config_bytes(spec), write_table(entries)):
        digest.update(encode_varint(len(part)))
        digest.update(part)
    return digest.digest()


def check_entries(entries: list[TableEntry], limits: DecodeLimits) -> None:
    """Hold a table the receiver supplied (compact form) to the limits a transmitted one would meet."""
    if len(entries) > limits.max_tensors:
        raise CodecError(f"the layout has {len(entries)} tensors, above max_tensors={limits.max_tensors}")
    for entry in entries:
        if len(entry.name.encode("utf-8")) > limits.max_name_bytes or len(entry.shape) > limits.max_ndim:
            raise CodecError(f"the layout's tensor {entry.name!r} is over max_name_bytes or max_ndim")
    if sum(size_of(entry.shape) for entry in entries) > limits.max_elements:
        raise CodecError(f"the layout holds more than max_elements={limits.max_elements} values")
