"""Client-level DP on a public random subset of coordinates (``dp-keep``): noise and bytes only where it counts.

A noised dense update is nearly incompressible, and random-k after the noise keeps k noisy values of an update
clipped over all d coordinates. With ``dp-keep = F < 1`` every round draws one public mask from the run seed and
the round (shared by all clients, so the noisy sum lives on the mask): every tensor of at most
``DP_KEEP_WHOLE`` values whole (biases, norms, the output head: few values, most of the energy) and a random F of
the rest. The mechanism runs on the masked coordinates only (Chen, Kairouz, Ozgur, ICML 2022):

1. restrict the update to the mask BEFORE clipping (the mask is data-independent, so this releases nothing);
2. clip the k kept values to C and add N(0, (zC)^2) to them only (the client with local noise, or the trusted
   server with central noise: sensitivity C, epsilon unchanged);
3. send only the kept values: the uplink codec is ``randk:F:whole=N`` with the mask's seed (no indices travel),
   then the run codec's quantizer and entropy stages, which are post-processing after the noise.

The server restricts every decoded update to the same mask before it aggregates, so a client cannot write
outside it. Coordinates off the mask keep their value this round (block-coordinate steps; a fresh mask next
round).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from fedcompress.codec.randk import RandK
from fedcompress.config import DP_KEEP_WHOLE, RunConfig
from fedcompress.privacy.randomness import gaussian
from fedcompress.seeding import derive_seed
from fedcompress.tensors import flatten, unflatten

__all__ = ["PublicMask", "uplink_seed"]


@dataclass(frozen=True)
class PublicMask:
    """The public mask of one round over a whole update (tensors flattened in order).

    Parameters
    ----------
    fraction : float
        Kept fraction F in (0, 1) of the tensors larger than ``DP_KEEP_WHOLE`` values (smaller ones are whole).
    seed : int
        The codec seed of the mask: ``randk:F:whole=DP_KEEP_WHOLE`` with this payload seed keeps exactly these
        coordinates.
    """

    fraction: float
    seed: int

    @classmethod
    def of(cls, cfg: RunConfig, server_round: int) -> PublicMask | None:
        """The round's mask under ``dp-keep < 1``; None otherwise."""
        if cfg.dp_keep >= 1.0:
            return None
        return cls(cfg.dp_keep, derive_seed(cfg.seed, "dp-mask", server_round))

    def indices(self, sizes: Sequence[int]) -> np.ndarray:
        """Sorted kept positions of a flat update made of tensors of ``sizes`` values: the codec's mask."""
        return RandK(fraction=self.fraction, whole=DP_KEEP_WHOLE).mask(np.asarray(sizes, dtype=np.int64), self.seed)

    def restrict(self, update: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """A float32 copy of ``update`` with every coordinate off the mask set to zero."""
        flat, layout = flatten(update)
        kept = np.zeros_like(flat)
        index = self.indices(_sizes(update))
        kept[index] = flat[index]
        return unflatten(kept, layout)

    def add_noise(
        self, update: Mapping[str, np.ndarray], std: float, generator: np.random.Generator
    ) -> dict[str, np.ndarray]:
        """``update`` plus N(0, std^2) on the kept coordinates only (summed in float64, float32 result)."""
        flat, layout = flatten(update)
        total = flat.astype(np.float64)
        index = self.indices(_sizes(update))
        total[index] += gaussian(generator, std, (index.size,))
        return unflatten(total, layout)


def _sizes(update: Mapping[str, np.ndarray]) -> list[int]:
    return [int(np.size(value)) for value in update.values()]


def uplink_seed(cfg: RunConfig, server_round: int, partition_id: int) -> int:
    """The seed a client encodes its update with: the round's mask seed under ``dp-keep``, else its own."""
    mask = PublicMask.of(cfg, server_round)
    return mask.seed if mask is not None else derive_seed(cfg.seed, "uplink", server_round, partition_id)
