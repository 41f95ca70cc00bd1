"""The client-level mechanisms the DP check audits: the deployed one, and two broken ones that must be flagged.

- :func:`local_noise_mechanism`: what a client with ``dp = "client"``, ``dp-noise = "local"`` runs, built by
  :func:`fedcompress.privacy.mechanisms.client_mechanism` from a :class:`~fedcompress.config.RunConfig`:
  ``LocalNoiseClient.privatise`` (clip to C, N(0, (zC)^2) from its :class:`NoiseSource`: with
  ``randomness = "secret"`` a fresh ChaCha20 generator keyed from OS entropy for every release), then the uplink
  codec with the seed the client round uses, then the server's decode. Release ``i`` is partition 0's release
  in round ``i`` (a client releases once per round), so public per-round values (codec seed) change as deployed.
- The same with ``noise_multiplier`` scaled down while the check is told the real one (too little noise).
- The same with ``randomness = "seeded"``: the noise stream is derived from the public run seed, round and
  partition. Its draws look like fresh Gaussian noise to anyone who does not know the seed (the plain check
  passes it), but :func:`public_noise_adversary`, which tracks the round as the server does, regenerates each
  release's noise the way a seeded deployment would (the seeded mechanism on a zero update) and subtracts it.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping

import numpy as np

from fedcompress.audit.dp_check import DEFAULT_LAYOUT, Adversary, Mechanism
from fedcompress.codec import decode, encode
from fedcompress.config import RunConfig
from fedcompress.privacy import ClientPolicy
from fedcompress.privacy.masking import uplink_seed
from fedcompress.privacy.mechanisms import client_mechanism

__all__ = ["local_noise_mechanism", "public_noise_adversary"]

_PARTITION = 0


def local_noise_mechanism(
    *, clip_norm: float, noise_multiplier: float, codec: str = "none", randomness: str = "secret", seed: int = 0
) -> Mechanism:
    """The deployed client-level release with local noise: ``privatise``, the uplink codec, the server's decode.

    ``randomness`` is the client's ``dp-randomness`` (``"seeded"`` only for the negative control); ``seed`` is the
    public run seed (codec masks and, when seeded, the noise).
    """
    cfg = RunConfig(
        num_rounds=1,
        dp="client",
        dp_noise="local",
        noise_multiplier=noise_multiplier,
        clip_norm=clip_norm,
        codec=codec,
        error_feedback="off",
        dp_randomness=randomness,
        seed=seed,
    )
    policy = ClientPolicy(
        min_noise_multiplier=min(ClientPolicy.min_noise_multiplier, noise_multiplier),
        allow_seeded_noise=randomness == "seeded",
    )
    client = client_mechanism(cfg, partition_id=_PARTITION, noise_multiplier=noise_multiplier, policy=policy)
    rounds = itertools.count(1)

    def release(update: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        server_round = next(rounds)
        noised = client.privatise(dict(update), server_round)
        seed = uplink_seed(cfg, server_round, _PARTITION)  # as run_client_round encodes
        return decode(encode(noised, cfg.uplink_codec, seed=seed))

    return release


def public_noise_adversary(
    *,
    clip_norm: float,
    noise_multiplier: float,
    codec: str = "none",
    seed: int = 0,
    layout: Mapping[str, tuple[int, ...]] | None = None,
) -> Adversary:
    """A server that knows the run config, regenerates the seeded noise and subtracts it from every release.

    Call it once per release, in order (it counts rounds as the server does, from 1). Its estimate of a round's
    noise is the seeded mechanism's release of a zero update in that round (clipping leaves it zero), with the
    claimed C and z and the public seed.
    """
    zeros = {name: np.zeros(shape, dtype=np.float32) for name, shape in (layout or DEFAULT_LAYOUT).items()}
    regenerate = local_noise_mechanism(
        clip_norm=clip_norm, noise_multiplier=noise_multiplier, codec=codec, randomness="seeded", seed=seed
    )

    def subtract(released: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        noise = regenerate(zeros)
        return {name: np.asarray(value, dtype=np.float32) - noise[name] for name, value in released.items()}

    return subtract
