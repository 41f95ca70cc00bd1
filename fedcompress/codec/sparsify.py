"""What the two sparsifiers (``topk``, ``randk``) share: the kept count, the scatter back, the spec syntax.

A sparsifier works on the dense stream: every tensor that ``lowrank`` did not factor, flattened and
concatenated in table order (``n`` values). It keeps ``k = round(fraction * n)`` of them (at least one when
``n > 0``), chosen over the whole stream (one global top-k, one random mask). Factors made by ``lowrank`` are
not sparsified: every entry of a basis matters. Dropped entries decode as zeros; error feedback carries them
on.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import ClassVar

import numpy as np

from fedcompress.codec.base import Stage, check_fraction, format_float, parse_number

__all__ = ["Sparsifier"]


class Sparsifier(Stage):
    """Base of ``topk`` and ``randk``: keep a fraction of the dense stream's entries.

    Parameters
    ----------
    fraction : float
        Fraction of entries kept, in (0, 1].
    """

    slot = 2
    params: ClassVar[tuple[str, ...]] = ("fraction",)

    def __init__(self, *, fraction: float) -> None:
        self.fraction = check_fraction(self.codec_id, "fraction", fraction)

    @classmethod
    def from_spec_args(cls, args: list[str]) -> Sparsifier:
        """``<id>:F`` with F in (0, 1]."""
        if len(args) != 1:
            raise ValueError(
                f"stage {cls.codec_id!r} takes exactly one argument, the kept fraction, e.g. "
                f"'{cls.codec_id}:0.01'; got {args}"
            )
        return cls(fraction=parse_number(cls.codec_id, "fraction", args[0], float))

    def spec(self) -> str:
        """``<id>:F``."""
        return f"{self.codec_id}:{format_float(self.fraction)}"

    def count(self, size: int) -> int:
        """Entries kept of ``size``: ``round(fraction * size)``, at least 1 when ``size > 0``."""
        if size <= 0:
            return 0
        return min(size, max(1, round(self.fraction * size)))

    @abstractmethod
    def encode(self, values: np.ndarray, *, seed: int, segments: np.ndarray | None = None) -> tuple[np.ndarray, bytes]:
        """Choose the kept entries of a flat vector: sorted int64 indices, and the index section to send.

        ``segments``: the sizes of the stream's tensors (or rotated chunks), in order (None: one segment).
        """

    @abstractmethod
    def decode_indices(
        self, section: bytes | memoryview, size: int, *, seed: int, segments: np.ndarray | None = None
    ) -> np.ndarray:
        """Sorted indices of the kept entries, from the index section (``ValueError`` if it is malformed)."""

    @staticmethod
    def decode(indices: np.ndarray, kept: np.ndarray, size: int) -> np.ndarray:
        """Scatter the kept values back into a dense float32 vector of ``size`` entries (zeros elsewhere)."""
        dense = np.zeros(size, dtype=np.float32)
        dense[indices] = kept
        return dense
