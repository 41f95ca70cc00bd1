"""Which clients train in a round: seeded, so a resumed run samples exactly as an uninterrupted one.

``fixed``: exactly ``max(min_clients, round(fraction * N))`` clients, uniformly without replacement.
``poisson``: each client joins independently with probability ``fraction`` (what the DP accountants assume
for amplification by sampling); a round may then have fewer than ``min_clients`` and is skipped.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fedcompress.seeding import numpy_rng

__all__ = ["sample_clients"]


def sample_clients(
    partition_ids: Sequence[int],
    *,
    scheme: str,
    fraction: float,
    min_clients: int,
    seed: int,
    server_round: int,
) -> list[int]:
    """Return the sorted partition ids that train in ``server_round``.

    Parameters
    ----------
    partition_ids : Sequence[int]
        Partition ids of the clients that are connected.
    scheme : str
        ``"fixed"`` or ``"poisson"``.
    fraction : float
        Fraction of clients per round (fixed) or the inclusion probability (poisson), in (0, 1].
    min_clients : int
        Lower bound on the fixed sample size.
    seed, server_round : int
        The generator is seeded from (seed, "sample", round) and nothing else.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    ids = np.array(sorted(partition_ids), dtype=np.int64)
    rng = numpy_rng(seed, "sample", server_round)
    if scheme == "poisson":
        chosen = ids[rng.random(ids.size) < fraction]
    elif scheme == "fixed":
        size = min(ids.size, max(min_clients, round(fraction * ids.size)))
        chosen = rng.choice(ids, size=size, replace=False) if size else ids[:0]
    else:
        raise ValueError(f"scheme must be 'fixed' or 'poisson', got {scheme!r}")
    return sorted(int(i) for i in chosen)
