"""Bounds a decoder enforces before it allocates anything (servers facing untrusted clients: tighten them)."""

from __future__ import annotations

from dataclasses import dataclass, fields

__all__ = ["DecodeLimits"]


@dataclass(frozen=True)
class DecodeLimits:
    """What :func:`fedcompress.codec.decode` accepts; anything larger is refused with ``CodecError``.

    The defaults admit a float32 model of up to 2**28 (268 million) parameters. A server that knows its model
    should pass tighter limits, e.g. ``max_elements`` = the model's parameter count.

    Parameters
    ----------
    max_payload_bytes : int
        Largest payload, as received (default 2 GiB).
    max_tensors : int
        Most tensors in one update (default 65536).
    max_name_bytes : int
        Longest tensor name, in UTF-8 bytes (default 1024).
    max_elements : int
        Most values over all tensors together (default 2**28).
    max_decompressed_bytes : int
        Largest body after zstd decompression (default 2 GiB).
    max_ndim : int
        Most dimensions of one tensor (default 8).
    """

    max_payload_bytes: int = 1 << 31
    max_tensors: int = 1 << 16
    max_name_bytes: int = 1024
    max_elements: int = 1 << 28
    max_decompressed_bytes: int = 1 << 31
    max_ndim: int = 8

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"DecodeLimits.{field.name} must be a positive integer, got {value!r}")
