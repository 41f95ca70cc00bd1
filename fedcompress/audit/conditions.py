"""The defences the audit compares, and the global model the server sent.

A condition is a codec (``"none"`` or a preset/spec of :mod:`fedcompress.codec`), optionally sample-level DP at a
target epsilon (the client's ``dp = "sample"``), the client's DP randomness (``"secret"``, as deployed, or
``"seeded"`` from the public run seed: a negative control) and the adversary: the honest-but-curious server,
or an INFORMED server that knows the run configuration (seed, round, partition) and tries to regenerate the DP
noise from those public values and subtract it before attacking (:mod:`fedcompress.audit.informed`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
from torch import nn

from fedcompress.audit.settings import AuditConfig
from fedcompress.codec.spec import parse_spec
from fedcompress.data import test_data
from fedcompress.models import build_model
from fedcompress.privacy.randomness import RANDOMNESS
from fedcompress.seeding import derive_seed, torch_generator
from fedcompress.training import make_loader, make_optimizer, train_epochs

__all__ = ["ADVERSARIES", "Condition", "attacked_model", "conditions_from", "public_images"]

#: Who attacks: the server as it is, or one that first subtracts DP noise regenerated from public values.
ADVERSARIES: tuple[str, ...] = ("honest-but-curious", "informed")
_PUBLIC_SEED_SPACE = 2**31 - 1


@dataclasses.dataclass(frozen=True, kw_only=True)
class Condition:
    """One defence and adversary.

    Parameters
    ----------
    codec : str
        The client's uplink codec (preset or spec), default ``"none"``.
    epsilon : float | None
        Target epsilon of the client's sample-level DP over its round; None: no DP.
    randomness : str
        The client's ``dp-randomness``: ``"secret"`` (deployed) or ``"seeded"`` (negative control: noise
        derived from the public seed). Needs ``epsilon``.
    informed : bool
        The server regenerates the noise from public values and subtracts it before attacking. Needs ``epsilon``.
    """

    codec: str = "none"
    epsilon: float | None = None
    randomness: str = "secret"
    informed: bool = False

    def __post_init__(self) -> None:
        parse_spec(self.codec)  # ValueError naming the bad stage
        if self.epsilon is not None and not (math.isfinite(self.epsilon) and self.epsilon > 0):
            raise ValueError(f"Condition.epsilon must be a positive finite number or None, got {self.epsilon!r}")
        if self.randomness not in RANDOMNESS:
            raise ValueError(f"Condition.randomness must be one of {RANDOMNESS}, got {self.randomness!r}")
        if self.epsilon is None and (self.informed or self.randomness != "secret"):
            raise ValueError("Condition.informed and Condition.randomness='seeded' need DP (an epsilon)")

    @property
    def name(self) -> str:
        """``none``, ``codec=q8``, ``dp=8``, ``codec=balanced+dp=8``, ``dp=8+seeded-noise+informed-server``."""
        parts = [] if self.codec == "none" else [f"codec={self.codec}"]
        if self.epsilon is not None:
            parts.append(f"dp={self.epsilon:g}")
        if self.randomness != "secret":
            parts.append(f"{self.randomness}-noise")
        if self.informed:
            parts.append("informed-server")
        return "+".join(parts) or "none"

    @property
    def adversary(self) -> str:
        """One of :data:`ADVERSARIES`."""
        return ADVERSARIES[1] if self.informed else ADVERSARIES[0]

    @property
    def control(self) -> bool:
        """A negative control: the client's noise is NOT secret, so no guarantee holds against the server."""
        return self.randomness != "secret"

    def describe(self) -> dict[str, Any]:
        """The row fields that say what was attacked: name, codec, randomness, adversary, control."""
        return {
            "condition": self.name,
            "codec": self.codec,
            "randomness": None if self.epsilon is None else self.randomness,
            "adversary": self.adversary,
            "control": self.control,
        }


def conditions_from(
    codecs: tuple[str, ...],
    epsilons: tuple[float, ...],
    combined: tuple[tuple[str, float], ...],
    informed: tuple[float, ...] = (),
) -> list[Condition]:
    """No defence, each codec, each epsilon, each (codec, epsilon) pair, then the informed server, without repeats.

    Each epsilon in ``informed`` gives two conditions: the informed server against the deployed client (secret
    noise) and against the negative control whose client used ``dp-randomness = "seeded"``.
    """
    items = [Condition()]
    items += [Condition(codec=c) for c in codecs]
    items += [Condition(epsilon=float(e)) for e in epsilons]
    items += [Condition(codec=c, epsilon=float(e)) for c, e in combined]
    for e in informed:
        items.append(Condition(epsilon=float(e), informed=True))
        items.append(Condition(epsilon=float(e), randomness="seeded", informed=True))
    unique: dict[str, Condition] = {}
    for item in items:
        unique.setdefault(item.name, item)
    return list(unique.values())


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
