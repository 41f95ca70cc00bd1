"""``zstd:L`` — Zstandard at level ``L`` over the serialized body (tensor table and data sections).

Decompression is bounded: the frame must declare its content size, that size must equal the body length the
payload header announced (already checked against the limits), and zstd itself refuses to write past it, so a
decompression bomb fails before it allocates more than the limit. Trailing bytes after the frame are refused.
"""

from __future__ import annotations

import zstandard

from fedcompress.codec.base import Stage, check_int, parse_number, register_stage

__all__ = ["Zstd"]

MIN_LEVEL, MAX_LEVEL = -7, 22
MAX_WINDOW_BYTES = 1 << 27


@register_stage
class Zstd(Stage):
    """Zstandard entropy coding of the whole body.

    Parameters
    ----------
    level : int
        Compression level, -7..22 (3 is zstd's default; higher is smaller and slower).
    """

    codec_id = "zstd"
    slot = 4
    params = ("level",)

    def __init__(self, *, level: int = 3) -> None:
        self.level = check_int("zstd", "level", level, MIN_LEVEL, MAX_LEVEL)

    @property
    def data_independent(self) -> bool:
        """False: the compressed length depends on the data."""
        return False

    @classmethod
    def from_spec_args(cls, args: list[str]) -> Zstd:
        """``zstd`` or ``zstd:L``."""
        if len(args) > 1:
            raise ValueError(
                f"stage 'zstd' takes at most one argument, the level ({MIN_LEVEL}..{MAX_LEVEL}); got {args}"
            )
        return cls(level=parse_number("zstd", "level", args[0], int)) if args else cls()

    def spec(self) -> str:
        """``zstd:L``."""
        return f"zstd:{self.level}"

    def encode(self, body: bytes) -> bytes:
        """One zstd frame that records its content size."""
        return zstandard.ZstdCompressor(level=self.level, write_content_size=True).compress(body)

    def decode(self, frame: bytes | memoryview, body_len: int) -> bytes:
        """Decompress exactly one frame into exactly ``body_len`` bytes; ``ValueError`` for anything else."""
        frame = bytes(frame)
        try:
            declared = zstandard.frame_content_size(frame)
        except zstandard.ZstdError as e:
            raise ValueError(f"zstd frame header is invalid: {e}") from e
        if declared != body_len:
            raise ValueError(f"zstd frame declares {declared} content bytes (-1: unknown); the payload says {body_len}")
        decompressor = zstandard.ZstdDecompressor(max_window_size=MAX_WINDOW_BYTES).decompressobj()
        try:
            body = decompressor.decompress(frame)
        except zstandard.ZstdError as e:
            raise ValueError(f"zstd frame is corrupt: {e}") from e
        if not decompressor.eof or decompressor.unused_data or len(body) != body_len:
            raise ValueError(
                f"zstd frame is incomplete or has trailing bytes (got {len(body)} of {body_len} bytes, "
                f"{len(decompressor.unused_data)} trailing)"
            )
        return body
