"""Settings of a leakage audit: model and client attacked, defences compared, the attack and the DP check.

Keys are kebab-case in TOML files (``defence-targets``...), like the run configuration; a file holds them at
top level or in an ``[audit]`` table. ``AuditConfig.quick()`` shrinks a configuration to a smoke run.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedcompress.codec import parse_spec
from fedcompress.config import RunConfig
from fedcompress.errors import ConfigError

if TYPE_CHECKING:
    from fedcompress.audit.inversion import InversionConfig

__all__ = ["MODEL_INITS", "AuditConfig", "load_audit_config"]

MODEL_INITS: tuple[str, ...] = ("random", "pretrained")
Target = tuple[int, int]  # (batch size, local steps)


@dataclasses.dataclass(frozen=True, kw_only=True)
class AuditConfig:
    """Every setting of :func:`fedcompress.audit.run_audit`.

    Parameters
    ----------
    model, width : str, int
        The attacked global model. This and the client's settings (``image_size``, ``num_partitions``,
        ``non_iid``, ``lr``, ``momentum``, ``delta``, ``clip_norm``, ``accountant``) default to
        :class:`fedcompress.config.RunConfig`'s defaults: the federation that would run.
    model_init : str
        ``"random"`` (fresh weights; the zero-initialised output layer is re-drawn, else the first step's
        gradient reaches no other layer) or ``"pretrained"`` (``pretrain_steps`` SGD steps on public
        phantoms).
    targets : tuple of (batch size, local steps)
        Client updates attacked without defence (default batch 1, 4, 8 with one step; batch 1 with 4 steps).
    defence_targets : tuple of (batch size, local steps)
        Client updates attacked under every condition (default batch 1, one step).
    codecs, epsilons, combined :
        Conditions: each codec alone, sample-level DP at each target epsilon alone, each (codec, epsilon).
    informed_epsilons : tuple of float
        At each, the informed server (it regenerates the DP noise from public values and subtracts it) attacks
        the deployed client (secret noise) and a negative control whose client used seeded noise (default 8).
    delta, clip_norm, accountant :
        Sample-level DP parameters (per-sample clip norm C; the shard is one batch, so sample rate 1).
    iterations, restarts, attack_lr, tv_weight, tv_final, noise_weight :
        The attack (see :class:`fedcompress.audit.inversion.InversionConfig`).
    dp_check_noise_multiplier, dp_check_clip_norm, dp_check_codecs, confidence :
        The empirical check of the deployed client-level mechanism, once per codec and once against the informed
        server, plus two negative controls (noise x 0.1; seeded noise against the informed server).
    dp_check_trials, dp_check_selection_trials : int
        Held-out releases per input that each bound is computed on (default 12,000: a perfect test certifies
        epsilon up to 8.09 at 95%), and releases per input that choose the threshold (default 1,000).
    workers : int
        Processes that run attacks in parallel (default 2; 1 runs them in this process).
    threads : int
        Torch CPU threads per process during the audit (default 1: the attack's convolutions are tiny, and on a busy
        machine more threads were up to 10x slower; 0 leaves torch's setting).
    """

    model: str = RunConfig.model
    width: int = RunConfig.width
    model_init: str = "random"
    pretrain_steps: int = 20
    image_size: int = RunConfig.image_size
    num_partitions: int = RunConfig.num_clients
    partition_id: int = 0
    non_iid: float = RunConfig.non_iid
    lr: float = RunConfig.lr
    momentum: float = RunConfig.momentum
    targets: tuple[Target, ...] = ((1, 1), (4, 1), (8, 1), (1, 4))
    defence_targets: tuple[Target, ...] = ((1, 1),)
    codecs: tuple[str, ...] = ("zstd", "q8", "balanced", "aggressive")
    epsilons: tuple[float, ...] = (1.0, 8.0)
    combined: tuple[tuple[str, float], ...] = (("balanced", 8.0),)
    informed_epsilons: tuple[float, ...] = (8.0,)
    delta: float = RunConfig.delta
    clip_norm: float = RunConfig.clip_norm
    accountant: str = RunConfig.accountant
    iterations: int = 300
    restarts: int = 4
    attack_lr: float = 0.2
    tv_weight: float = 0.1
    tv_final: float = 0.05
    noise_weight: float = 0.01
    dp_check_noise_multiplier: float = 1.0
    dp_check_clip_norm: float = 0.05
    dp_check_codecs: tuple[str, ...] = ("none", "balanced")
    dp_check_trials: int = 12_000
    dp_check_selection_trials: int = 1_000
    confidence: float = 0.95
    seed: int = 0
    workers: int = 2
    threads: int = 1

    def __post_init__(self) -> None:
        if self.model_init not in MODEL_INITS:
            raise ConfigError(f"audit model-init must be one of {MODEL_INITS}, got {self.model_init!r}")
        if self.accountant not in ("prv", "rdp"):
            raise ConfigError(f"audit accountant must be 'prv' or 'rdp', got {self.accountant!r}")
        for name in ("width", "pretrain_steps", "image_size", "num_partitions", "iterations", "restarts", "workers"):
            _check_int(name, getattr(self, name), low=0 if name == "pretrain_steps" else 1)
        for name in ("dp_check_trials", "dp_check_selection_trials", "seed", "threads"):
            _check_int(name, getattr(self, name), low=10 if name.startswith("dp_check") else 0)
        if not 0 <= self.partition_id < self.num_partitions:
            raise ConfigError(f"audit partition-id must be in [0, {self.num_partitions}), got {self.partition_id}")
        for name in ("lr", "clip_norm", "attack_lr", "dp_check_clip_norm"):
            _check_float(name, getattr(self, name), positive=True)
        for name in ("tv_weight", "tv_final", "noise_weight", "dp_check_noise_multiplier", "non_iid"):
            _check_float(name, getattr(self, name), positive=False)
        for name, value, high in (
            ("momentum", self.momentum, 1.0),
            ("delta", self.delta, 1.0),
            ("confidence", self.confidence, 1.0),
            ("non_iid", self.non_iid, 1.0001),
        ):
            if not 0 <= value < high:
                raise ConfigError(f"audit {_key(name)} must be in [0, {high:g}), got {value!r}")
        for name in ("targets", "defence_targets"):
            for target in getattr(self, name):
                if len(target) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in target):
                    raise ConfigError(f"audit {_key(name)} holds {target!r}; each must be [batch-size, local-steps]")
        for codec in (*self.codecs, *self.dp_check_codecs, *(c for c, _ in self.combined)):
            try:
                parse_spec(codec)
            except ValueError as e:
                raise ConfigError(f"audit codec {codec!r}: {e}") from e
        for eps in (*self.epsilons, *(e for _, e in self.combined)):
            _check_float("epsilons", eps, positive=True)
        for eps in self.informed_epsilons:
            _check_float("informed_epsilons", eps, positive=True)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> AuditConfig:
        """Build from kebab-case (or snake_case) keys; unknown keys raise ``ConfigError`` naming them."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in values.items():
            name = key.replace("-", "_")
            if name not in fields:
                raise ConfigError(f"unknown audit setting {key!r}; known: {sorted(_key(n) for n in fields)}")
            try:
                kwargs[name] = _coerce(name, value)
            except (TypeError, ValueError) as e:
                raise ConfigError(f"audit setting {key!r} = {value!r} has the wrong shape: {e}") from e
        return cls(**kwargs)

    def inversion_config(self) -> InversionConfig:
        """The attack's settings (:class:`fedcompress.audit.inversion.InversionConfig`; imports torch)."""
        from fedcompress.audit.inversion import InversionConfig

        return InversionConfig(
            iterations=self.iterations,
            restarts=self.restarts,
            lr=self.attack_lr,
            tv_weight=self.tv_weight,
            tv_final=self.tv_final,
            noise_weight=self.noise_weight,
            seed=self.seed,
        )

    def quick(self) -> AuditConfig:
        """A smoke-test size: batch 1, one step, ``balanced``, DP at epsilon 8 (and the informed server), 150 x 4.

        The DP check runs without codec on 4,000 held-out releases per input (a perfect test certifies up to 6.99,
        still past the controls' claimed 4.39).

        Four restarts, not fewer: the winner is the best of several starts (2 gave 11.9 dB at seed 0, 4 gave 17.7).
        """
        return dataclasses.replace(
            self,
            targets=((1, 1),),
            defence_targets=((1, 1),),
            codecs=("balanced",),
            epsilons=(8.0,),
            combined=(),
            informed_epsilons=(8.0,),
            iterations=150,
            restarts=4,
            dp_check_codecs=("none",),
            dp_check_trials=4_000,
        )

    def to_dict(self) -> dict[str, Any]:
        """Kebab-case keys and plain-JSON values (tuples as lists)."""
        return {_key(k): _plain(v) for k, v in dataclasses.asdict(self).items()}


def load_audit_config(path: str | Path) -> AuditConfig:
    """Read an :class:`AuditConfig` from a TOML file (top-level keys, or an ``[audit]`` table)."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"cannot read audit config file {str(path)!r}: {e}") from e
    return AuditConfig.from_mapping(data.get("audit", data))


def _key(name: str) -> str:
    return name.replace("_", "-")


def _plain(value: Any) -> Any:
    return [_plain(v) for v in value] if isinstance(value, (tuple, list)) else value


def _coerce(name: str, value: Any) -> Any:
    """TOML arrays to the tuples the dataclass holds (nested for targets and combined)."""
    if name in ("targets", "defence_targets"):
        return tuple(tuple(item) for item in _sequence(name, value))
    if name == "combined":
        return tuple((str(c), float(e)) for c, e in _sequence(name, value))
    if name in ("codecs", "dp_check_codecs"):
        return tuple(str(v) for v in _sequence(name, value))
    if name in ("epsilons", "informed_epsilons"):
        return tuple(float(v) for v in _sequence(name, value))
    return value


def _sequence(name: str, value: Any) -> list[Any]:
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise ConfigError(f"audit {_key(name)} must be a list, got {value!r}")
    return list(value)


def _check_int(name: str, value: Any, *, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"audit {_key(name)} must be an int >= {low}, got {value!r}")


def _check_float(name: str, value: Any, *, positive: bool) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (positive and value == 0):
        raise ConfigError(f"audit {_key(name)} must be a finite number {'>' if positive else '>='} 0, got {value!r}")
