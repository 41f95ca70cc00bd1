"""``rotate:N`` — a randomized Hadamard rotation of the dense stream, in chunks of ``N`` values (DRIVE/EDEN).

The dense stream (every tensor that ``lowrank`` did not factor, flattened and concatenated in table order, as
the sparsifiers see it) is cut into chunks of ``N`` values, ``N`` a power of two; the last, shorter chunk is
padded with zeros to the next power of two. Each chunk ``x`` becomes ``H D x / sqrt(n)`` (see
:mod:`fedcompress.codec.hadamard`), with one sign diagonal ``D`` over the whole padded stream drawn from the
payload's seed. The stages after it (``randk``/``topk``, ``q``/``sign``) work on the rotated stream, whose
chunks are also the quantizers' segments (one scale, or one run of blocks, per chunk); the decoder inverts
the rotation. A stream of ``s`` values becomes ``s`` plus the last chunk's padding (under ``s`` more, and
under one chunk).

The rotation is orthonormal and spreads the energy of any update evenly over its coordinates, so a 1-bit or
low-bit quantizer after it loses about the same fraction of every chunk, whatever the update looks like, and
a random subset of rotated coordinates carries a fair share of every tensor. It depends only on the public
seed and the shapes: data-independent, allowed before DP noise. Without a lossy stage after it, it is
lossless up to float32 rounding (about 1e-7 relative).

Chunks run over tensor boundaries on purpose: a model's many small tensors (biases, norms) would otherwise
each be padded and each cost a quantizer scale, which at sub-bit budgets is most of the payload.
"""

from __future__ import annotations

import math

import numpy as np

from fedcompress.codec.base import Stage, check_int, parse_number, register_stage
from fedcompress.codec.hadamard import flip_signs, fwht, is_power_of_two, random_sign_bits

__all__ = ["Rotate"]

DEFAULT_CHUNK = 4096
MAX_CHUNK = 1 << 20


@register_stage
class Rotate(Stage):
    """Randomized Hadamard rotation of the dense stream in chunks of ``chunk`` values.

    Parameters
    ----------
    chunk : int
        Values per rotation chunk, a power of two in 1..2**20 (default 4096). Larger chunks mix more values
        and need fewer quantizer scales; smaller ones adapt the scale more finely.
    """

    codec_id = "rotate"
    slot = 1
    params = ("chunk",)

    def __init__(self, *, chunk: int = DEFAULT_CHUNK) -> None:
        chunk = check_int("rotate", "chunk", chunk, 1, MAX_CHUNK)
        if not is_power_of_two(chunk):
            raise ValueError(f"stage 'rotate' parameter 'chunk' must be a power of two (1, 2, 4, ..), got {chunk}")
        self.chunk = chunk

    @property
    def data_independent(self) -> bool:
        """True: the rotation depends on the public seed and the sizes only."""
        return True

    @classmethod
    def from_spec_args(cls, args: list[str]) -> Rotate:
        """``rotate`` or ``rotate:N``."""
        if len(args) > 1:
            raise ValueError(f"stage 'rotate' takes at most one argument, the chunk size (a power of two); got {args}")
        return cls(chunk=parse_number("rotate", "chunk", args[0], int)) if args else cls()

    def spec(self) -> str:
        """``rotate:N``."""
        return f"rotate:{self.chunk}"

    def chunk_lengths(self, size: int) -> np.ndarray:
        """Length of each rotated chunk for a stream of ``size`` values (the last one padded)."""
        full, rest = divmod(size, self.chunk)
        lengths = [self.chunk] * full + ([1 << (rest - 1).bit_length()] if rest else [])
        return np.array(lengths, dtype=np.int64)

    def encode(self, values: np.ndarray, *, seed: int) -> np.ndarray:
        """The rotated stream (float32, ``chunk_lengths(values.size).sum()`` values)."""
        lengths = self.chunk_lengths(values.size)
        padded = np.zeros(int(lengths.sum()), dtype=np.float32)
        padded[: values.size] = values
        flip_signs(padded, random_sign_bits(padded.size, seed))
        return _transform(padded, lengths)

    def decode(self, rotated: np.ndarray, size: int, *, seed: int, overwrite: bool = False) -> np.ndarray:
        """Invert :meth:`encode`: the first ``size`` values of ``D H y / sqrt(n)``, chunk by chunk.

        With ``overwrite`` (and a float32 ``rotated``) the work is done in ``rotated`` itself.
        """
        lengths = self.chunk_lengths(size)
        if rotated.size != int(lengths.sum()):
            raise ValueError(f"rotated stream has {rotated.size} values, expected {int(lengths.sum())}")
        mixed = _transform(np.array(rotated, dtype=np.float32, copy=None if overwrite else True), lengths)
        return flip_signs(mixed, random_sign_bits(mixed.size, seed))[:size]


def _transform(stream: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """``H y / sqrt(n)`` on every chunk of a padded float32 stream, in place (each run of equal chunks at once)."""
    start = 0
    runs = np.flatnonzero(np.diff(lengths, prepend=-1, append=-1))  # where the chunk length changes
    for first, stop in zip(runs[:-1].tolist(), runs[1:].tolist(), strict=True):
        length, count = int(lengths[first]), stop - first
        rows = stream[start : start + length * count].reshape(count, length)
        rows *= np.float32(1 / math.sqrt(length))
        fwht(rows, overwrite=True)
        start += length * count
    return stream
