"""What the server receives from the attacked client under each defence: the victim's side of the audit.

A condition is a codec (``"none"`` or a preset/spec of :mod:`fedcompress.codec`) and optionally
sample-level DP (Opacus DP-SGD through :class:`fedcompress.privacy.SampleLevelDP`, noise calibrated for a
target epsilon over the client's local steps). The client trains exactly as in a federation round
(:mod:`fedcompress.training`: shuffled loader, SGD with momentum, ``local_steps`` epochs over a shard of
one batch), and the update ``w_local - w_global`` goes through the codec; the attack sees the DECODED
update.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from typing import Any

import numpy as np
import torch
from torch import nn

from fedcompress.audit.settings import AuditConfig
from fedcompress.codec import decode, encode
from fedcompress.codec.spec import parse_spec
from fedcompress.data import DenoisingSet, test_data
from fedcompress.models import build_model
from fedcompress.seeding import derive_seed, torch_generator
from fedcompress.training import make_loader, make_optimizer, state_delta, train_epochs

__all__ = [
    "Condition",
    "ObservedUpdate",
    "PrivacySettings",
    "attacked_model",
    "conditions_from",
    "observe_update",
    "public_images",
]

_PUBLIC_SEED_SPACE = 2**31 - 1


@dataclasses.dataclass(frozen=True, kw_only=True)
class Condition:
    """One defence: ``codec`` (preset or spec) and, if ``epsilon`` is set, sample-level DP at that target."""

    codec: str = "none"
    epsilon: float | None = None

    def __post_init__(self) -> None:
        parse_spec(self.codec)  # ValueError naming the bad stage
        if self.epsilon is not None and not (math.isfinite(self.epsilon) and self.epsilon > 0):
            raise ValueError(f"Condition.epsilon must be a positive finite number or None, got {self.epsilon!r}")

    @property
    def name(self) -> str:
        """``none``, ``codec=q8``, ``dp=8`` or ``codec=balanced+dp=8``."""
        parts = [] if self.codec == "none" else [f"codec={self.codec}"]
        if self.epsilon is not None:
            parts.append(f"dp={self.epsilon:g}")
        return "+".join(parts) or "none"


@dataclasses.dataclass(frozen=True, kw_only=True)
class PrivacySettings:
    """What sample-level DP needs besides the target epsilon (every epsilon is reported with these)."""

    delta: float = 1e-5
    clip_norm: float = 0.05
    accountant: str = "prv"


@dataclasses.dataclass(frozen=True)
class ObservedUpdate:
    """The decoded update the server holds, its payload size and, under DP, the full privacy record."""

    update: dict[str, np.ndarray]
    payload_bytes: int
    privacy: dict[str, Any] | None


def conditions_from(
    codecs: tuple[str, ...], epsilons: tuple[float, ...], combined: tuple[tuple[str, float], ...]
) -> list[Condition]:
    """No defence, each codec alone, each epsilon alone, then each (codec, epsilon) pair, without repeats."""
    items = [Condition()]
    items += [Condition(codec=c) for c in codecs]
    items += [Condition(epsilon=float(e)) for e in epsilons]
    items += [Condition(codec=c, epsilon=float(e)) for c, e in combined]
    unique: dict[str, Condition] = {}
    for item in items:
        unique.setdefault(item.name, item)
    return list(unique.values())


def observe_update(
    model: nn.Module,
    data: DenoisingSet,
    condition: Condition,
    *,
    local_steps: int,
    lr: float,
    momentum: float,
    privacy: PrivacySettings,
    seed: int,
) -> ObservedUpdate:
    """Train a copy of ``model`` on ``data`` (one batch of all its records); return what the server decodes.

    ``model`` is not changed. Under DP the noise multiplier is calibrated once for ``local_steps`` steps at
    sample rate 1 (the shard is one batch), and the reported epsilon is the engine's own after training.
    """
    client = copy.deepcopy(model)
    generator = torch_generator(seed, "audit-client")  # same batch order in every condition
    loader = make_loader(data, len(data), generator)
    optimizer = make_optimizer(client, lr, momentum)
    record = None
    if condition.epsilon is None:
        train_epochs(client, loader, optimizer, local_steps)
    else:
        record = _train_private(client, loader, optimizer, condition.epsilon, local_steps, privacy, generator)
    delta = {k: v.numpy() for k, v in state_delta(client.state_dict(), model.state_dict()).items()}
    payload = encode(delta, condition.codec, seed=derive_seed(seed, "audit-codec", condition.name))
    return ObservedUpdate(update=decode(payload), payload_bytes=len(payload), privacy=record)


def _train_private(
    client: nn.Module,
    loader: Any,
    optimizer: Any,
    epsilon: float,
    steps: int,
    privacy: PrivacySettings,
    generator: Any,
) -> dict[str, Any]:
    """DP-SGD on ``client`` in place; returns the privacy record of the release."""
    from fedcompress.privacy import SampleLevelDP, calibrate_noise

    sample_rate = 1.0 / len(loader)
    noise = float(calibrate_noise(epsilon, sample_rate, steps, privacy.delta, accountant=privacy.accountant))
    engine = SampleLevelDP(noise_multiplier=noise, clip_norm=privacy.clip_norm, accountant=privacy.accountant)
    private_model, private_optimizer, private_loader = engine.make_private(
        client, optimizer, loader, generator=generator
    )
    train_epochs(private_model, private_loader, private_optimizer, steps)
    return {
        "level": "sample",
        "target_epsilon": epsilon,
        "epsilon": float(engine.epsilon(privacy.delta)),
        "delta": privacy.delta,
        "noise_multiplier": noise,
        "clip_norm": privacy.clip_norm,
        "sample_rate": sample_rate,
        "steps": int(engine.steps),
        "accountant": privacy.accountant,
    }


def attacked_model(config: AuditConfig) -> nn.Module:
    """The global model the server sent: seeded fresh weights, re-drawn or briefly pretrained."""
    with torch.random.fork_rng():
        torch.manual_seed(derive_seed(config.seed, "audit-model"))
        model = build_model(config.model, config.width)
        if config.model_init == "random":
            for module in model.modules():
                weight = getattr(module, "weight", None)
                if hasattr(module, "reset_parameters") and weight is not None and not weight.detach().any():
                    module.reset_parameters()  # type: ignore[operator]
    if config.model_init == "pretrained" and config.pretrain_steps > 0:
        public = public_images(config, config.pretrain_steps * 16, "audit-pretrain")
        loader = make_loader(public, 16, torch_generator(config.seed, "audit-pretrain"))
        train_epochs(model, loader, make_optimizer(model, config.lr, config.momentum), 1)
    return model


def public_images(config: AuditConfig, n: int, stream: str) -> Any:
    """Phantoms the server may hold (drawn from a stream no client uses)."""
    seed = derive_seed(config.seed, stream) % _PUBLIC_SEED_SPACE
    return test_data(
        n,
        image_size=config.image_size,
        seed=seed,
        num_partitions=config.num_partitions,
        non_iid=config.non_iid,
    )
