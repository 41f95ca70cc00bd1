"""One privacy mechanism per mode, as two objects: the client half and the server half.

The mode (``dp``, ``dp-noise``) is read here and nowhere else. Everything that differs between modes (who draws
the noise and from what, what is accounted and when, what the server's aggregation does, what may be published)
is a method of the object built here, the way Flower's DP strategy wrappers and Opacus's ``PrivacyEngine`` own
their part of the round.

====================  =======================  ==========================  ====================================
mode                  client half              server half                 threat model
====================  =======================  ==========================  ====================================
``none``              ClientMechanism          ServerMechanism             none
``sample``            SampleLevelClient        SampleLevelServer           server sees only DP-SGD outputs
``client`` + local    LocalNoiseClient         LocalNoiseServer            untrusted server
``client`` + central  ClientMechanism          CentralNoiseServer          trusted server, untrusted readers
====================  =======================  ==========================  ====================================
"""

from __future__ import annotations

from fedcompress.config import RunConfig
from fedcompress.errors import ConfigError
from fedcompress.privacy.client_level import client_level_noise
from fedcompress.privacy.mechanisms.client import ClientMechanism, LocalNoiseClient, SampleLevelClient
from fedcompress.privacy.mechanisms.server import (
    CentralNoiseServer,
    LocalNoiseServer,
    SampleLevelServer,
    ServerMechanism,
)
from fedcompress.privacy.policy import ClientPolicy
from fedcompress.privacy.randomness import NoiseSource
from fedcompress.privacy.sample_level import sample_level_noise, sample_level_plan

__all__ = [
    "CentralNoiseServer",
    "ClientMechanism",
    "LocalNoiseClient",
    "LocalNoiseServer",
    "SampleLevelClient",
    "SampleLevelServer",
    "ServerMechanism",
    "client_mechanism",
    "server_mechanism",
]


def server_mechanism(cfg: RunConfig) -> ServerMechanism:
    """The server half for ``cfg``: noise calibrated once for the whole horizon (``ConfigError`` if impossible)."""
    try:
        if cfg.dp == "sample":
            plan = sample_level_plan(cfg)
            return SampleLevelServer(
                cfg,
                noise_multiplier=sample_level_noise(cfg),
                sample_rate=plan.sample_rate,
                steps_per_round=plan.steps_per_round,
            )
        if cfg.dp == "client" and cfg.dp_noise == "local":
            return LocalNoiseServer(cfg, noise_multiplier=client_level_noise(cfg))
        if cfg.dp == "client":
            return CentralNoiseServer(cfg, noise_multiplier=client_level_noise(cfg))
    except (ValueError, RuntimeError) as e:
        raise ConfigError(
            f"cannot calibrate noise for target-epsilon={cfg.target_epsilon} at delta={cfg.delta} "
            f"(dp={cfg.dp!r}, dp-noise={cfg.dp_noise!r}): {e}"
        ) from e
    return ServerMechanism(cfg)


def client_mechanism(
    cfg: RunConfig, *, partition_id: int, noise_multiplier: float, policy: ClientPolicy | None = None
) -> ClientMechanism:
    """The client half for ``cfg`` as the server sent it, held to ``policy`` (the defaults when None).

    Raises ``PrivacyPolicyError`` when the policy requires client-side DP and the mode has none.
    """
    policy = policy or ClientPolicy()
    runs_dp = cfg.dp == "sample" or (cfg.dp == "client" and cfg.dp_noise == "local")
    policy.check_mode(client_runs_dp=runs_dp, mode=f"dp={cfg.dp!r}, dp-noise={cfg.dp_noise!r}")
    if not runs_dp:
        return ClientMechanism(cfg, partition_id=partition_id)
    kind = SampleLevelClient if cfg.dp == "sample" else LocalNoiseClient
    return kind(
        cfg,
        partition_id=partition_id,
        noise_multiplier=noise_multiplier,
        policy=policy,
        source=NoiseSource(cfg.dp_randomness, cfg.seed),
    )
