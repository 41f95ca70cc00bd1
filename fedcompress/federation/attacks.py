"""Research knob: clients that lie, built into the real client round so a sweep can measure each defence.

``attack-clients = K`` picks K partitions from the run seed (:func:`attackers`); each of them, every round,
sends instead of its honest update:

- ``scale:S``: the update times S (a boosting / model-replacement attack);
- ``sign-flip``: minus the update;
- ``noise:SIGMA``: N(0, SIGMA^2) on every coordinate instead of the update;
- ``lie-weight``: the honest update, with a claimed ``num-examples`` of 1e30 (FedAvg trusts the claim).

The attack runs after any DP noise and before the codec, as a malicious client would; ``result.json`` records
which partitions attacked.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from fedcompress.config import RunConfig
from fedcompress.seeding import numpy_rng

__all__ = ["ATTACKS", "Attack", "attack_of", "attackers", "parse_attack"]

ATTACKS: tuple[str, ...] = ("scale", "sign-flip", "noise", "lie-weight")
LIE = 1e30


@dataclasses.dataclass(frozen=True)
class Attack:
    """One attack: its kind and its parameter (S or SIGMA; 0 for those without one)."""

    kind: str
    value: float = 0.0

    def update(self, delta: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
        """The update this attacker sends instead of ``delta`` (not modified)."""
        if self.kind == "lie-weight":
            return delta
        if self.kind == "noise":
            return {k: rng.normal(0.0, self.value, v.shape).astype(np.float32) for k, v in delta.items()}
        factor = self.value if self.kind == "scale" else -1.0
        return {k: (v * factor).astype(np.float32) for k, v in delta.items()}

    def report(self, metrics: dict[str, float | int]) -> dict[str, float | int]:
        """The metrics this attacker sends instead of ``metrics`` (not modified)."""
        return {**metrics, "num-examples": LIE} if self.kind == "lie-weight" else metrics


def parse_attack(spec: str) -> Attack | None:
    """``""`` (no attack), ``scale:S``, ``sign-flip``, ``noise:SIGMA`` or ``lie-weight`` (``ValueError`` else)."""
    if not spec:
        return None
    kind, _, arg = spec.partition(":")
    if kind not in ATTACKS:
        raise ValueError(f"unknown attack {kind!r}; choose one of {ATTACKS}")
    if kind in ("scale", "noise"):
        try:
            value = float(arg)
        except ValueError:
            raise ValueError(f"{kind} needs a number, as in '{kind}:10', got {spec!r}") from None
        if not (np.isfinite(value) and (value > 0 or kind == "scale")):
            raise ValueError(f"{kind} needs a finite {'number' if kind == 'scale' else 'positive number'}, got {arg!r}")
        return Attack(kind, value)
    if arg:
        raise ValueError(f"{kind} takes no argument, got {spec!r}")
    return Attack(kind)


def attackers(cfg: RunConfig) -> list[int]:
    """The partitions that attack in this run, chosen from the run seed (public: it is an experiment)."""
    if cfg.attack_clients == 0:
        return []
    chosen = numpy_rng(cfg.seed, "attackers").choice(cfg.num_clients, size=cfg.attack_clients, replace=False)
    return sorted(int(p) for p in chosen)


def attack_of(cfg: RunConfig, partition_id: int) -> Attack | None:
    """The attack ``partition_id`` runs in this run, or None for an honest client."""
    attack = parse_attack(cfg.attack)
    return attack if attack is not None and partition_id in attackers(cfg) else None
