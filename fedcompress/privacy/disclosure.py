"""What a reported epsilon does NOT cover, in the words the README and every result use.

The epsilon bounds what the noised releases reveal (DP-SGD models, noised client updates, or the server's noised
aggregate) and anything computed from them alone: codec payloads and their sizes after DP-SGD or local noise are
post-processing. It says nothing about anything else a client or the server sends or observes; the list below
names each such channel and what the system does about it.
"""

from __future__ import annotations

__all__ = ["NOT_COVERED"]

NOT_COVERED = (
    "The epsilon covers only the noised releases (DP-SGD models, noised client updates, or the server's noised "
    "aggregate) and what is computed from them alone (codec payloads and their sizes after DP-SGD or local "
    "noise). It does NOT cover: num-examples used as FedAvg weights, and the training loss, codec error and "
    "each client's own epsilon and DP steps, which reveal a client's data or its size (sent only with "
    "release='all'; private runs default to release='minimal': uniform weights, none of these sent); with "
    "central noise, the compressed sizes of raw updates and who took part in which round (the trusted server "
    "sees them; result.json withholds them unless release='all'); who took part otherwise (sample level and "
    "local noise claim no amplification by client sampling); timing (message arrival, round duration). "
    "DP noise and DP sampling come from secret OS entropy held by the party that runs the mechanism (ChaCha20 "
    "for numpy noise; for DP-SGD a torch generator seeded with 64 secret bits per round, Gaussian draws as in "
    "Opacus's secure mode); dp-randomness='seeded' voids the guarantee against anyone who knows the run seed."
)
