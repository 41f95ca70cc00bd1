"""Which clients train in a round, from a generator the privacy mechanism chooses.

Without an amplified epsilon it is seeded by (run seed, round), so a resumed run samples exactly as an
uninterrupted one; with central client-level DP it is secret (who took part must not be known).

``fixed``: exactly ``max(min_clients, round(fraction * N))`` clients, uniformly without replacement.
``poisson``: each client joins independently with probability ``fraction`` (what the DP accountants assume
for amplification by sampling); a round may then have fewer than ``min_clients`` and is skipped.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["sample_clients"]


def sample_clients(
    partition_ids: Sequence[int],
    *,
    scheme: str,
    fraction: float,
    min_clients: int,
    generator: np.random.Generator,
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
    generator : numpy.random.Generator
        The round's randomness (``ServerMechanism.sampling_generator``).
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    ids = np.array(sorted(partition_ids), dtype=np.int64)
    rng = generator
    if scheme == "poisson":
        chosen = ids[rng.random(ids.size) < fraction]
    elif scheme == "fixed":
        size = min(ids.size, max(min_clients, round(fraction * ids.size)))
        chosen = rng.choice(ids, size=size, replace=False) if size else ids[:0]
    else:
        raise ValueError(f"scheme must be 'fixed' or 'poisson', got {scheme!r}")
    return sorted(int(i) for i in chosen)
