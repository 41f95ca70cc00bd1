"""The attacked client: the REAL client round under a condition, and the update the server decodes from it.

The audit does not re-assemble training. It builds the :class:`~fedcompress.config.RunConfig` a federation would
send this client (:func:`client_config`: one round, a shard of exactly one batch so ``local-epochs`` are the local
steps, the audit's lr, momentum, codec and seed, error feedback off) and runs
:func:`fedcompress.federation.client_round.run_client_round` on the audit's chosen images (``data=``), with the
downlink payload of the attacked global model. Under DP that is ``dp = "sample"``: Opacus DP-SGD on the public
schedule (sample rate 1 for one batch), noise calibrated for the target epsilon over that one round, drawn from
the client's own randomness source. The server's view is ``decode(reply.payload)``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from torch import nn

from fedcompress.audit.conditions import Condition
from fedcompress.audit.settings import AuditConfig
from fedcompress.codec import decode
from fedcompress.config import RunConfig
from fedcompress.data.denoising import DenoisingSet
from fedcompress.federation import downlink
from fedcompress.federation.client_round import run_client_round
from fedcompress.privacy import ClientPolicy, epsilon, sample_level_noise, sample_level_plan

__all__ = [
    "AUDIT_ROUND",
    "ObservedUpdate",
    "client_config",
    "client_policy",
    "global_weights",
    "observe_update",
    "privacy_record",
    "release",
]

#: The round the attacked client is in (the informed server knows it).
AUDIT_ROUND = 1


@dataclasses.dataclass(frozen=True)
class ObservedUpdate:
    """The decoded update the server holds, its payload size and, under DP, the full privacy record."""

    update: dict[str, np.ndarray]
    payload_bytes: int
    privacy: dict[str, Any] | None


def client_config(config: AuditConfig, condition: Condition, *, batch_size: int, local_steps: int) -> RunConfig:
    """The run configuration the attacked client receives (``ConfigError`` if the audit's values do not fit)."""
    private = condition.epsilon is not None
    return RunConfig(
        num_rounds=1,
        num_clients=config.num_partitions,
        min_clients=1,
        local_epochs=local_steps,
        batch_size=batch_size,
        samples_per_client=batch_size,
        lr=config.lr,
        momentum=config.momentum,
        codec=condition.codec,
        error_feedback="off",
        seed=config.seed,
        image_size=config.image_size,
        non_iid=config.non_iid,
        model=config.model,
        width=config.width,
        dp="sample" if private else "none",
        target_epsilon=float(condition.epsilon or 0.0),
        clip_norm=config.clip_norm,
        delta=config.delta,
        accountant=config.accountant,
        dp_randomness=condition.randomness,
    )


def client_policy(cfg: RunConfig, noise_multiplier: float) -> ClientPolicy:
    """The site's floor, set so the audited request passes: a z floor at or under it, the epsilon within budget.

    Seeded noise is accepted only when ``cfg`` asks for it (the negative control and the informed server's
    regeneration); the deployed client keeps the default refusal.
    """
    defaults = ClientPolicy()
    return ClientPolicy(
        min_noise_multiplier=min(defaults.min_noise_multiplier, noise_multiplier or defaults.min_noise_multiplier),
        max_epsilon=max(defaults.max_epsilon, cfg.target_epsilon),
        delta=cfg.delta,
        allow_seeded_noise=cfg.dp_randomness == "seeded",
    )


def global_weights(model: nn.Module) -> dict[str, np.ndarray]:
    """The global model as the named float arrays the downlink carries."""
    return {name: value.detach().numpy().copy() for name, value in model.state_dict().items()}


def observe_update(
    config: AuditConfig, model: nn.Module, data: DenoisingSet, condition: Condition, *, local_steps: int
) -> ObservedUpdate:
    """Run the real client round on ``data`` (one batch of all its records) from ``model``; what the server decodes.

    ``model`` is the global model the server sent; it is not changed. The partition is ``config.partition_id``.
    """
    cfg = client_config(config, condition, batch_size=len(data), local_steps=local_steps)
    payload = release(cfg, model, data, partition_id=config.partition_id)
    return ObservedUpdate(update=decode(payload), payload_bytes=len(payload), privacy=privacy_record(cfg))


def release(cfg: RunConfig, model: nn.Module, data: DenoisingSet, *, partition_id: int) -> bytes:
    """The payload the client with ``cfg`` sends in :data:`AUDIT_ROUND` after training on ``data`` from ``model``."""
    noise = sample_level_noise(cfg) if cfg.dp == "sample" else 0.0
    reply = run_client_round(
        cfg,
        partition_id=partition_id,
        server_round=AUDIT_ROUND,
        downlink_payload=downlink.broadcast(global_weights(model), cfg, AUDIT_ROUND),
        noise_multiplier=noise,
        policy=client_policy(cfg, noise),
        data=data,
    )
    return reply.payload


def privacy_record(cfg: RunConfig) -> dict[str, Any] | None:
    """Epsilon of the client's round with everything it depends on (None without DP)."""
    if cfg.dp != "sample":
        return None
    noise, plan = sample_level_noise(cfg), sample_level_plan(cfg)
    return {
        "level": "sample",
        "target_epsilon": cfg.target_epsilon,
        "epsilon": float(epsilon(noise, plan.sample_rate, plan.steps_per_round, cfg.delta, cfg.accountant)),
        "delta": cfg.delta,
        "noise_multiplier": noise,
        "clip_norm": cfg.clip_norm,
        "sample_rate": plan.sample_rate,
        "steps": plan.steps_per_round,
        "accountant": cfg.accountant,
        "randomness": cfg.dp_randomness,
    }
