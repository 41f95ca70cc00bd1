"""What the two quantizers (``q``, ``sign``) share: their slot and the shape of their section.

A quantizer encodes the float stream (low-rank factors, then the dense stream's kept values) in one
vectorised pass. The stream is cut into *segments* that never share a scale: each factor, then each dense
tensor's kept values, or, after ``rotate``, each rotated chunk's kept values. ``segments`` are those kept
counts; ``totals`` the same segments before sparsification (equal to ``segments`` without a sparsifier),
which an unbiased estimator needs to scale for what was dropped.
"""

from __future__ import annotations

from abc import abstractmethod

import numpy as np

from fedcompress.codec.base import Stage

__all__ = ["Quantizer"]


class Quantizer(Stage):
    """Base of ``q`` and ``sign``: floats in, a section of exactly :meth:`section_size` bytes out."""

    slot = 3

    @abstractmethod
    def contracts(self) -> bool:
        """True when the quantizer is a contraction (``E||q(x) - x||^2 < ||x||^2``), as error feedback needs."""

    @abstractmethod
    def section_size(self, segments: np.ndarray) -> int:
        """Exact bytes of the section for values split into ``segments`` (kept counts)."""

    @abstractmethod
    def scale_bytes(self, segments: np.ndarray) -> int:
        """Bytes of the section spent on scales (the rest is codes)."""

    @abstractmethod
    def encode(
        self, values: np.ndarray, rng: np.random.Generator, segments: np.ndarray, *, totals: np.ndarray | None = None
    ) -> tuple[bytes, np.ndarray]:
        """The section for a float32 vector, and the float32 reconstruction the decoder will make."""

    @abstractmethod
    def decode(
        self, section: bytes | memoryview, segments: np.ndarray, *, totals: np.ndarray | None = None
    ) -> np.ndarray:
        """Rebuild the float32 values from a section of exactly ``section_size(segments)`` bytes."""
