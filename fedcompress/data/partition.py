"""Splitting a pool of records across clients, from i.i.d. to strongly skewed."""

from __future__ import annotations

import math

import numpy as np

from fedcompress.seeding import numpy_rng

__all__ = ["partition_indices"]


def partition_indices(
    n: int, num_partitions: int, non_iid: float, seed: int, *, keys: np.ndarray | None = None
) -> list[np.ndarray]:
    """Split ``range(n)`` into ``num_partitions`` disjoint, non-empty parts of near-equal size.

    With ``keys`` (one number per record, for example mean intensity), records are ordered by the score
    ``non_iid * rank(key) / n + (1 - non_iid) * u`` with ``u ~ U[0, 1)`` and cut into contiguous parts: at
    ``non_iid=0`` the split is uniformly random, at ``non_iid=1`` each client holds one band of key values
    (bright images at one site, dark at another), with a smooth path between. Without ``keys`` the split is
    i.i.d. whatever ``non_iid`` is (sites then differ only by their ``SiteProfile``). Sizes stay equal, so no
    client's share reveals the skew and ``samples-per-client`` means the same everywhere.

    Returns
    -------
    list of numpy.ndarray
        Sorted int64 indices per part; together they cover ``range(n)`` exactly once.
    """
    if not isinstance(num_partitions, int) or num_partitions < 1:
        raise ValueError(f"num_partitions must be a positive int, got {num_partitions!r}")
    if not isinstance(n, int) or n < num_partitions:
        raise ValueError(f"n must be an int >= num_partitions ({num_partitions}) so no part is empty, got {n!r}")
    if not (math.isfinite(non_iid) and 0.0 <= non_iid <= 1.0):
        raise ValueError(f"non_iid must be in [0, 1], got {non_iid!r}")
    rng = numpy_rng(seed, "partition", n, num_partitions)
    score = rng.random(n)
    if keys is not None:
        keys = np.asarray(keys, dtype=np.float64)
        if keys.shape != (n,) or not np.all(np.isfinite(keys)):
            raise ValueError(f"keys must be {n} finite numbers, got shape {keys.shape}")
        ranks = np.empty(n)
        ranks[np.argsort(keys, kind="stable")] = np.arange(n) / n
        score = non_iid * ranks + (1.0 - non_iid) * score
    order = np.argsort(score, kind="stable")
    return [np.sort(part).astype(np.int64) for part in np.array_split(order, num_partitions)]
