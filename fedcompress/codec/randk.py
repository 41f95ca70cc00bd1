"""``randk:F`` — keep a random fraction ``F`` of entries, a mask made from the payload's seed (no indices).

The mask over the dense stream of ``n`` values is the positions of the ``k`` smallest of ``n`` raw 32-bit
keys from a PCG64 generator seeded with ``derive_seed(seed, "randk")``: raw bit-generator output is stable
across numpy versions (unlike ``Generator.choice``), so encoder and decoder agree. Kept values are not
rescaled (error feedback carries the rest), and the mask depends only on the seed and the model's shapes, so
the stage is data-independent. Give every client the same seed and they share one mask, as secure aggregation
needs.

``randk:F:whole=N`` keeps every tensor of at most N values whole (biases, norms, a small output head: few values
that can carry most of an update's energy) and a random F of the rest, drawn the same way over the rest's
positions. Sizes are public, so the mask stays data-independent.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from fedcompress.codec.base import check_int, format_float, parse_number, register_stage
from fedcompress.codec.sparsify import Sparsifier
from fedcompress.seeding import derive_seed

__all__ = ["RandK", "random_mask"]

_MAX_WHOLE = 1 << 30


def random_mask(size: int, keep: int, seed: int) -> np.ndarray:
    """Sorted int64 indices of ``keep`` of ``size`` entries, a pure function of the arguments.

    The entries with the ``keep`` smallest 32-bit keys (ties: lowest index first), keys being the raw PCG64
    output read as little-endian uint32 pairs. About 9 bytes of scratch memory per entry.
    """
    if keep >= size:
        return np.arange(size, dtype=np.int64)
    raw = np.random.PCG64(derive_seed(seed, "randk")).random_raw((size + 1) // 2)
    keys = np.asarray(raw, dtype="<u8").view("<u4")[:size]
    # Only keys below a bound that the keep-th smallest is all but sure to be under need sorting out: the
    # same set as partitioning all keys, several times faster when keep << size. Otherwise: all keys.
    bound = (keep + 8 * math.sqrt(keep) + 64) / size * 2.0**32
    candidates = np.flatnonzero(keys < np.uint32(bound)) if bound < 2.0**32 else None
    if candidates is None or candidates.size < keep:
        candidates = np.arange(size, dtype=np.int64)
    chosen = keys[candidates]
    threshold = np.partition(chosen, keep - 1)[keep - 1]
    mask = chosen < threshold
    missing = keep - int(np.count_nonzero(mask))
    if missing:
        mask[np.flatnonzero(chosen == threshold)[:missing]] = True
    return candidates[mask].astype(np.int64)


@register_stage
class RandK(Sparsifier):
    """Keep ``round(fraction * n)`` entries of a seeded random mask (releases nothing about the data).

    Parameters
    ----------
    fraction : float
        Fraction of entries kept, in (0, 1] (of the tensors larger than ``whole``).
    whole : int, default 0
        Tensors (stream segments) of at most this many values are kept whole; 0: none.
    """

    codec_id = "randk"
    params: ClassVar[tuple[str, ...]] = ("fraction", "whole")

    def __init__(self, *, fraction: float, whole: int = 0) -> None:
        super().__init__(fraction=fraction)
        self.whole = check_int(self.codec_id, "whole", whole, 0, _MAX_WHOLE)

    @classmethod
    def from_spec_args(cls, args: list[str]) -> RandK:
        """``randk:F`` or ``randk:F:whole=N``."""
        if len(args) == 2 and args[1].startswith("whole="):
            whole = parse_number(cls.codec_id, "whole", args[1].removeprefix("whole="), int)
            return cls(fraction=parse_number(cls.codec_id, "fraction", args[0], float), whole=whole)
        if len(args) != 1:
            raise ValueError(
                f"stage 'randk' takes the kept fraction and optionally whole=N, e.g. 'randk:0.02:whole=64'; got {args}"
            )
        return cls(fraction=parse_number(cls.codec_id, "fraction", args[0], float))

    def spec(self) -> str:
        """``randk:F`` or ``randk:F:whole=N``."""
        return f"randk:{format_float(self.fraction)}" + (f":whole={self.whole}" if self.whole else "")

    def get_config(self) -> dict[str, Any]:
        """``whole`` appears only when set, so payloads without it stay byte for byte what they were."""
        config = super().get_config()
        if not self.whole:
            del config["whole"]
        return config

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> RandK:
        """Rebuild from :meth:`get_config` output (a missing ``whole`` is 0)."""
        stage = super().from_config({"whole": 0, **config})
        assert isinstance(stage, RandK)
        return stage

    def check_neighbours(self, stages: tuple[Any, ...]) -> None:
        """``whole`` names tensors: refused after ``rotate``, whose stream is chunks of mixed tensors."""
        if self.whole and any(stage.codec_id == "rotate" for stage in stages):
            raise ValueError("randk's whole=N keeps small tensors whole, but after 'rotate' there are only chunks")

    @property
    def data_independent(self) -> bool:
        """True: the mask depends on the public seed and the tensor sizes only."""
        return True

    def mask(self, segments: np.ndarray, seed: int) -> np.ndarray:
        """Sorted kept positions of a stream made of ``segments`` (sizes, in order): small ones whole."""
        sizes = np.asarray(segments, dtype=np.int64)
        size = int(sizes.sum())
        if not self.whole:
            return random_mask(size, self.count(size), seed)
        ends = np.cumsum(sizes)
        starts = ends - sizes
        small = sizes <= self.whole
        whole = [np.arange(a, b, dtype=np.int64) for a, b, keep in zip(starts, ends, small, strict=True) if keep]
        rest = np.concatenate(
            [np.arange(a, b, dtype=np.int64) for a, b, keep in zip(starts, ends, small, strict=True) if not keep]
            or [np.zeros(0, dtype=np.int64)]
        )
        chosen = rest[random_mask(rest.size, self.count(rest.size), seed)] if rest.size else rest
        return np.sort(np.concatenate([*whole, chosen]))

    def encode(self, values: np.ndarray, *, seed: int, segments: np.ndarray | None = None) -> tuple[np.ndarray, bytes]:
        """The seeded mask; the index section is empty."""
        return self.mask(_segments(segments, values.size), seed), b""

    def decode_indices(
        self, section: bytes | memoryview, size: int, *, seed: int, segments: np.ndarray | None = None
    ) -> np.ndarray:
        """Regenerate the mask from the seed; the section must be empty."""
        if len(section) != 0:
            raise ValueError(f"random-k sends no indices, but the payload holds {len(section)} index bytes")
        return self.mask(_segments(segments, size), seed)


def _segments(segments: np.ndarray | None, size: int) -> np.ndarray:
    if segments is None:
        return np.array([size], dtype=np.int64)
    if int(np.sum(segments)) != size:
        raise ValueError(f"segments sum to {int(np.sum(segments))}, the stream has {size} values")
    return np.asarray(segments, dtype=np.int64)
