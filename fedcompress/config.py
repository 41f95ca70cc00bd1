"""One configuration schema for every entry point: `flwr run`, the CLI, sweeps and tests.

Settings are flat kebab-case keys (Flower's run-config style). ``RunConfig.from_mapping`` merges defaults with
overrides, checks every key, type and range once, and raises ``ConfigError`` naming the key, the value and what
is allowed. The defaults here are the ones in ``pyproject.toml``'s ``[tool.flwr.app.config]`` (a test checks).
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fedcompress.errors import ConfigError

__all__ = [
    "DP_KEEP_WHOLE",
    "RunConfig",
    "load_config_file",
    "parse_overrides",
    "toml_document",
    "toml_value",
    "upgrade_settings",
]

# ``dp-keep`` keeps every tensor of at most this many values whole (biases, norms, the output head): about 2% of
# the default U-Net's values that carried 95% of a measured update's energy (head bias and weight alone).
DP_KEEP_WHOLE = 64

_CHOICES: dict[str, tuple[str, ...]] = {
    "client_sampling": ("fixed", "poisson"),
    "model": ("unet", "dncnn", "plain"),
    "dp": ("none", "sample", "client"),
    "dp_noise": ("local", "central"),
    "accountant": ("prv", "rdp"),
    "dp_randomness": ("secret", "seeded"),
    "release": ("auto", "all", "minimal"),
    "aggregation": ("mean", "trimmed-mean", "median", "norm-clip"),
    "guard": ("reject", "clip", "off"),
    "codec_framing": ("self-describing", "compact"),
    "server_optimizer": ("sgd", "adam"),
    "device": ("auto", "cpu", "cuda"),
    "error_feedback": ("residual", "ef21", "off"),
}
# Values that older config files used for a setting that has since become a choice.
_LEGACY: dict[str, dict[object, str]] = {
    "error_feedback": {True: "residual", False: "off", "true": "residual", "false": "off"},
}
# (low, high, low_inclusive) for numbers; high is always inclusive.
_RANGES: dict[str, tuple[float, float, bool]] = {
    "num_rounds": (1, 100_000, True),
    "num_clients": (1, 100_000, True),
    "fraction_train": (0.0, 1.0, False),
    "min_clients": (1, 100_000, True),
    "local_epochs": (1, 1000, True),
    "batch_size": (1, 100_000, True),
    "lr": (0.0, 100.0, False),
    "momentum": (0.0, 0.999, True),
    "server_lr": (0.0, 100.0, False),
    "server_momentum": (0.0, 0.999, True),
    "seed": (0, 2**31 - 1, True),
    "image_size": (8, 512, True),
    "samples_per_client": (1, 1_000_000, True),
    "test_samples": (1, 1_000_000, True),
    "proxy_samples": (1, 1_000_000, True),
    "non_iid": (0.0, 1.0, True),
    "width": (1, 512, True),
    "target_epsilon": (0.0, 1e6, True),
    "noise_multiplier": (0.0, 1e6, True),
    "clip_norm": (0.0, 1e6, False),
    "delta": (0.0, 0.1, False),
    "max_epsilon": (0.0, 1e6, True),
    "round_timeout": (1.0, 86_400.0, True),
    "student_width": (1, 512, True),
    "trim_fraction": (0.0, 0.45, True),
    "guard_norm": (0.0, 1e12, True),
    "guard_median_factor": (1.0, 1e6, False),
    "attack_clients": (0, 100_000, True),
    "dp_keep": (0.0, 1.0, False),
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunConfig:
    """Every setting of a federated run. Field ``num_rounds`` is key ``num-rounds``, and so on.

    Numbers that mean "not set" use 0 or "" because Flower's run config holds only int/float/bool/str:
    ``target-epsilon = 0`` means "use ``noise-multiplier``", ``max-epsilon = 0`` means "no budget",
    ``out-dir = ""`` means "a fresh folder under ./runs".
    """

    num_rounds: int = 8
    num_clients: int = 8
    fraction_train: float = 1.0
    client_sampling: str = "fixed"
    min_clients: int = 2
    local_epochs: int = 2
    batch_size: int = 16
    lr: float = 0.1
    momentum: float = 0.9
    server_lr: float = 1.0
    server_momentum: float = 0.0
    server_optimizer: str = "sgd"
    codec: str = "balanced"
    downlink_codec: str = "none"
    codec_framing: str = "self-describing"
    error_feedback: str = "residual"
    seed: int = 0
    dataset: str = "phantoms"
    image_size: int = 32
    samples_per_client: int = 64
    test_samples: int = 128
    proxy_samples: int = 256
    non_iid: float = 0.5
    model: str = "unet"
    width: int = 16
    device: str = "auto"
    dp: str = "none"
    dp_noise: str = "local"
    pre_noise: str = ""
    dp_keep: float = 1.0
    target_epsilon: float = 0.0
    noise_multiplier: float = 0.0
    clip_norm: float = 0.05
    delta: float = 1e-5
    accountant: str = "prv"
    max_epsilon: float = 0.0
    dp_randomness: str = "secret"
    release: str = "auto"
    aggregation: str = "mean"
    trim_fraction: float = 0.2
    guard: str = "reject"
    guard_norm: float = 0.0
    guard_median_factor: float = 4.0
    attack: str = ""
    attack_clients: int = 0
    round_timeout: float = 300.0
    distill: bool = False
    student_width: int = 4
    out_dir: str = ""
    resume: bool = False

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            _check_field(field, getattr(self, field.name))
        self._check_relations()

    # ------------------------------------------------------------------ construction
    @classmethod
    def keys(cls) -> tuple[str, ...]:
        """All setting keys in kebab-case, in declaration order."""
        return tuple(_key(f.name) for f in dataclasses.fields(cls))

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None = None) -> RunConfig:
        """Build from kebab-case (or snake_case) keys; unknown keys and bad values raise ``ConfigError``."""
        known = {f.name: f for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in (values or {}).items():
            name = str(key).replace("-", "_")
            if name not in known:
                from fedcompress.config_doc import closest_setting  # lazy: it imports this module

                near = closest_setting(str(key))
                hint = f"did you mean {near!r}? " if near else ""
                raise ConfigError(f"unknown setting {key!r}; {hint}`fedcompress settings` lists every setting")
            kwargs[name] = _coerce(name, known[name].type, value)
        return cls(**kwargs)

    def replace(self, **changes: Any) -> RunConfig:
        """A copy with some fields changed (snake_case names), validated again."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Kebab-case mapping of every setting (Flower run-config shape, JSON-safe)."""
        return {_key(f.name): getattr(self, f.name) for f in dataclasses.fields(self)}

    # ------------------------------------------------------------------ derived
    @property
    def private(self) -> bool:
        """Whether any differential privacy is applied."""
        return self.dp != "none"

    @property
    def minimal_release(self) -> bool:
        """Whether clients withhold what the epsilon does not cover (``release``; "auto" = minimal when private)."""
        return self.release == "minimal" or (self.release == "auto" and self.private)

    @property
    def uplink_codec(self) -> str:
        """The codec clients encode with: ``codec``, or the ``dp-keep`` mask, then the codec's q and zstd stages.

        See :mod:`fedcompress.privacy.masking`: the mask (``randk`` with the round's public seed) is the only
        sparsifier, and the codec's quantizer and entropy stages run after the noise.
        """
        if self.dp_keep >= 1.0:
            return self.codec
        from fedcompress.codec import parse_spec  # lazy, as in _check_relations

        spec = parse_spec(self.codec)
        tail = [stage.spec() for stage in (spec.quantizer, spec.entropy) if stage is not None]
        return "+".join([f"randk:{self.dp_keep:g}:whole={DP_KEEP_WHOLE}", *tail])

    @property
    def delta_population(self) -> tuple[int, str]:
        """N for the delta policy, and what it counts: records per client (sample level) or clients."""
        if self.dp == "sample":
            return self.samples_per_client, "records per client (samples-per-client)"
        return self.num_clients, "clients (num-clients)"

    def _check_relations(self) -> None:
        from fedcompress.codec import parse_spec  # lazy: the codec pulls in numpy/zstd, config stays light

        for key, spec in (
            ("codec", self.codec),
            ("downlink-codec", self.downlink_codec),
            ("pre-noise", self.pre_noise),
        ):
            if spec or key != "pre-noise":
                try:
                    parse_spec(spec)
                except ValueError as e:
                    raise ConfigError(f"setting {key!r} = {spec!r} is not a valid codec spec: {e}") from e
        if self.distill and self.student_width >= self.width:
            raise ConfigError(
                f"student-width={self.student_width} must be smaller than width={self.width} (the edge model is "
                "a narrower student of the same family)"
            )
        if self.min_clients > self.num_clients:
            raise ConfigError(
                f"min-clients={self.min_clients} is larger than num-clients={self.num_clients}; allowed: 1..num-clients"
            )
        if self.private and self.target_epsilon == 0.0 and self.noise_multiplier == 0.0:
            raise ConfigError(f"dp={self.dp!r} needs target-epsilon > 0 or noise-multiplier > 0 (both are 0)")
        if self.private and self.target_epsilon > 0.0 and self.noise_multiplier > 0.0:
            raise ConfigError(
                f"give either target-epsilon ({self.target_epsilon}) or noise-multiplier "
                f"({self.noise_multiplier}), not both"
            )
        if self.pre_noise and not (self.dp == "client" and self.dp_noise == "local"):
            raise ConfigError(
                f"pre-noise={self.pre_noise!r} only applies with dp='client' and dp-noise='local' "
                f"(got dp={self.dp!r}, dp-noise={self.dp_noise!r})"
            )
        self._check_dp_keep()
        if self.private and self.delta >= 1.0 / self.delta_population[0]:
            n, what = self.delta_population
            raise ConfigError(
                f"delta={self.delta:g} is at least 1/n for n={n} {what}: a mechanism that publishes one record "
                f"in the clear satisfies such a delta. Use delta < {1.0 / n:g} (at most 1/(10 n) = {0.1 / n:g})"
            )
        self._check_robustness()
        if self.dp == "client" and self.dp_noise == "central" and self.client_sampling != "poisson":
            raise ConfigError(
                "dp='client' with dp-noise='central' needs client-sampling='poisson' so the accountant's "
                f"amplification by sampling is true (got client-sampling={self.client_sampling!r})"
            )

    def _check_dp_keep(self) -> None:
        from fedcompress.codec import parse_spec  # lazy, as above

        if self.dp_keep >= 1.0:
            return
        if self.dp == "none":
            raise ConfigError(
                f"dp-keep={self.dp_keep:g} applies to private runs (dp='sample' or 'client'); without DP use a "
                "codec such as 'randk:F' instead"
            )
        spec = parse_spec(self.codec)
        extra = [s.spec() for s in (spec.lowrank, spec.rotation, spec.sparsifier) if s is not None]
        if extra:
            raise ConfigError(
                f"dp-keep={self.dp_keep:g} makes the public mask the only sparsifier, but codec={self.codec!r} has "
                f"{extra[0]!r}; use quantizer and entropy stages only, e.g. codec='q:8:block=256+zstd:3'"
            )
        if self.pre_noise:
            raise ConfigError(f"dp-keep={self.dp_keep:g} replaces pre-noise={self.pre_noise!r}: set one of them")
        if self.error_feedback == "ef21":
            raise ConfigError(
                f"dp-keep={self.dp_keep:g} sends only the round's masked coordinates, which EF21's dense estimate "
                "does not fit; use error-feedback 'residual' or 'off'"
            )

    def _check_robustness(self) -> None:
        from fedcompress.federation.attacks import parse_attack  # lazy: keeps config import-light

        if self.dp == "client" and self.dp_noise == "central" and self.aggregation != "mean":
            raise ConfigError(
                f"aggregation={self.aggregation!r} does not compose with central client-level DP, whose server "
                "clips every update to clip-norm, sums and adds noise over a fixed denominator; use 'mean'"
            )
        try:
            parse_attack(self.attack)
        except ValueError as e:
            raise ConfigError(f"setting 'attack' = {self.attack!r} is not valid: {e}") from e
        if bool(self.attack) != (self.attack_clients > 0):
            raise ConfigError(
                f"attack={self.attack!r} and attack-clients={self.attack_clients} go together: set both or neither"
            )
        if self.attack_clients > self.num_clients:
            raise ConfigError(f"attack-clients={self.attack_clients} is more than num-clients={self.num_clients}")


def _key(name: str) -> str:
    return name.replace("_", "-")


def upgrade_settings(values: Mapping[str, Any]) -> dict[str, Any]:
    """Settings as an older fedcompress wrote them (a record, a checkpoint), in today's spelling.

    Only values a setting once had and has since renamed change (``error-feedback = true`` -> ``"residual"``), so
    ids, comparisons and type checks treat old and new records alike.
    """
    out = dict(values)
    for key, value in values.items():
        legacy = _LEGACY.get(str(key).replace("-", "_"), {})
        old = value.lower() if isinstance(value, str) else value
        if isinstance(old, bool | str) and old in legacy:
            out[key] = legacy[old]
    return out


def _coerce(name: str, annotation: Any, value: Any) -> Any:
    """Turn strings from the CLI or TOML into the field's type; refuse anything ambiguous."""
    kind = {"int": int, "float": float, "bool": bool, "str": str}[str(annotation)]
    key = _key(name)
    value = upgrade_settings({name: value})[name]
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise ConfigError(f"setting {key!r} must be true or false, got {value!r}")
    if kind is str:
        if not isinstance(value, str):
            raise ConfigError(f"setting {key!r} must be a string, got {value!r}")
        return value
    if isinstance(value, bool):
        raise ConfigError(f"setting {key!r} must be a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"setting {key!r} must be a number, got {value!r}") from None
    if kind is int:
        if not math.isfinite(number) or number != int(number):
            raise ConfigError(f"setting {key!r} must be a whole number, got {value!r}")
        return int(number)
    return number


def _check_field(field: dataclasses.Field[Any], value: Any) -> None:
    key = _key(field.name)
    if field.name in _CHOICES and value not in _CHOICES[field.name]:
        raise ConfigError(f"setting {key!r} = {value!r} is not allowed; choose one of {_CHOICES[field.name]}")
    if field.name in _RANGES:
        low, high, low_inclusive = _RANGES[field.name]
        ok = isinstance(value, int | float) and math.isfinite(value)
        ok = ok and (value >= low if low_inclusive else value > low) and value <= high
        if not ok:
            bracket = "[" if low_inclusive else "("
            raise ConfigError(f"setting {key!r} = {value!r} is out of range; allowed {bracket}{low}, {high}]")


def parse_overrides(items: list[str] | None) -> dict[str, str]:
    """Parse CLI ``key=value`` items into a mapping (values stay strings; ``RunConfig`` coerces them)."""
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value, got {item!r}")
        out[key.strip()] = value.strip().strip("'\"")
    return out


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read settings from a TOML file: top-level keys, or a ``[tool.flwr.app.config]`` table (a pyproject)."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"cannot read config file {str(path)!r}: {e}") from e
    table = data.get("tool", {}).get("flwr", {}).get("app", {}).get("config")
    return dict(table if table is not None else data)


def toml_value(value: Any) -> str:
    """A setting as TOML: bool, int, finite float, str (escaped basic string) or a list of these."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"settings written as TOML must be finite, got {value!r}")
        return repr(value)
    if isinstance(value, str):
        escaped = "".join(ch if ch >= " " and ch not in '"\\\x7f' else f"\\u{ord(ch):04x}" for ch in value)
        return f'"{escaped}"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise ValueError(f"settings written as TOML are bool, int, float, str or lists of them, got {value!r}")


def toml_document(settings: Mapping[str, Any]) -> str:
    """Settings as a flat TOML document (``flwr run --run-config FILE``, ``fedcompress audit --config FILE``)."""
    return "".join(f"{key} = {toml_value(value)}\n" for key, value in settings.items())
