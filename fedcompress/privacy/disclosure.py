"""What a reported epsilon does NOT cover, in words the lead puts in the README and in every result.

The epsilon bounds what the noised releases (DP-SGD models, or noised client updates / aggregates) reveal. It
says nothing about anything else a client or the server sends or observes:

- ``num-examples``, used as FedAvg weights: a client's dataset size is private under add/remove adjacency.
  DP-SGD's sample rate q = 1 / ceil(N / B) and its step count derive from N too, so reporting a client's
  ``dp-steps`` or its own epsilon reveals N up to a batch.
- Training loss and any metric computed on private data (evaluation on client data, early stopping on it).
- Who took part in which round, and when: participation and timing (message arrival, round duration).
- Anything sent before the noise that the configuration allows (none: unsafe orders are refused).

``release = "minimal"`` withholds ``num-examples`` (the server then weights updates uniformly) and the private
metrics; ``release = "all"`` sends them, uncovered by the epsilon.

``secure_mode`` is off: torchcsprng is not available, so DP-SGD noise comes from torch's ordinary PRNG and
client-level noise from numpy's PCG64, both seeded from (run seed, round, client id). That is fine for
research and simulation; a production deployment needs a cryptographically secure noise source.
"""

from __future__ import annotations

__all__ = ["NOT_COVERED", "SECURE_MODE_NOTE"]

SECURE_MODE_NOTE = (
    "secure_mode is off (torchcsprng is not available): DP noise comes from torch's and numpy's ordinary "
    "seeded PRNGs, fine for research, not for a production deployment."
)

NOT_COVERED = (
    "The epsilon covers only the noised releases (DP-SGD models, or noised client updates / aggregates). "
    "It does NOT cover: num-examples used as FedAvg weights (dataset size is private; with DP-SGD a client's "
    "dp-steps and its own epsilon also reveal its size up to a batch); training loss and any metric computed "
    "on private data; who took part in which round; timing (message arrival, round duration). "
    "release='minimal' withholds num-examples (the server then weights updates uniformly) and the private "
    "metrics; release='all' sends them. " + SECURE_MODE_NOTE
)
