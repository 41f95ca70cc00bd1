"""Codec spec strings: ``lowrank:4+topk:0.01+q:4+zstd:3`` <-> :class:`CodecSpec` (a tuple of stages).

Grammar: a preset name (see :data:`PRESETS`), or stages joined by ``+``, each ``id[:arg[:arg...]]`` where
arguments are positional values or ``key=value`` options. Stages come in pipeline order (low-rank, rotation,
sparsification, quantization, entropy coding), at most one of each. ``CodecSpec.canonical()`` prints every
parameter explicitly and parses back to an equal spec.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from fedcompress.codec.base import SLOT_NAMES, Stage, get_stage_class, registered_ids
from fedcompress.codec.lowrank import LowRank
from fedcompress.codec.quantize import Quantize
from fedcompress.codec.quantizer import Quantizer
from fedcompress.codec.randk import RandK
from fedcompress.codec.rotate import Rotate
from fedcompress.codec.sign import Sign
from fedcompress.codec.sparsify import Sparsifier
from fedcompress.codec.topk import TopK
from fedcompress.codec.zstd import Zstd

__all__ = ["PRESETS", "CodecSpec", "data_dependent_stages", "parse_spec"]

NONE = "none"

# Every built-in stage (importing a stage module registers it).
STAGE_CLASSES: tuple[type[Stage], ...] = (LowRank, Rotate, TopK, RandK, Quantize, Sign, Zstd)

#: Named presets and the canonical spec each expands to. Measured on a U-Net denoiser's SGD update (246k
#: parameters, ``fedcompress bench codec``): zstd x1.4 lossless; q8 x3.9 at relative L2 error 0.01; balanced
#: x28 at 0.15; aggressive x300 at 0.43; powersgd x46 at 0.38 (one message, before error feedback); ultra
#: x540 self-describing, x660 with compact framing, at 0.67 (and x415 compact on a 28k-parameter U-Net,
#: where the self-describing table alone is 850 bytes).
PRESETS: Mapping[str, str] = MappingProxyType(
    {
        "none": NONE,
        "zstd": "zstd:3",
        "q8": "q:8:block=256+zstd:3",
        "balanced": "topk:0.1+q:8:block=256+zstd:3",
        "aggressive": "topk:0.01+q:4:block=256+zstd:3",
        "powersgd": "lowrank:4:power+q:8:block=256+zstd:3",
        "ultra": "topk:0.008+sign:scale=mse+zstd:3",
        # Under DP-SGD (dp = "sample") top-k 1% keeps mostly noise; 5% at 4 bits kept the front workload at
        # epsilon 1 within 0.7 dB of the dense private run at 55x (README, "Compression front").
        "private": "topk:0.05+q:4:block=256+zstd:3",
    }
)


@dataclass(frozen=True)
class CodecSpec:
    """An ordered pipeline of codec stages (empty: dense float32, the ``none`` codec)."""

    stages: tuple[Stage, ...] = ()

    def __post_init__(self) -> None:
        for stage in self.stages:
            if not isinstance(stage, Stage):
                raise ValueError(f"CodecSpec stages must be codec stages, got {stage!r}")
        for before, after in zip(self.stages, self.stages[1:], strict=False):
            if after.slot <= before.slot:
                raise ValueError(
                    f"codec stage {after.spec()!r} cannot follow {before.spec()!r}: stages run in the order "
                    f"{', '.join(SLOT_NAMES)} (lowrank, rotate, topk|randk, q|sign, zstd), at most one of each"
                )
        for stage in self.stages:
            stage.check_neighbours(self.stages)

    def canonical(self) -> str:
        """The canonical spec string; ``parse_spec(s.canonical()) == s``."""
        return "+".join(stage.spec() for stage in self.stages) if self.stages else NONE

    def __str__(self) -> str:
        return self.canonical()

    def get_config(self) -> list[dict[str, Any]]:
        """Plain-JSON list of stage configs."""
        return [stage.get_config() for stage in self.stages]

    @classmethod
    def from_config(cls, config: Sequence[Mapping[str, Any]]) -> CodecSpec:
        """Inverse of :meth:`get_config`; ``ValueError`` naming what is wrong."""
        if isinstance(config, (str, bytes)) or not isinstance(config, Sequence):
            raise ValueError(f"a codec config must be a list of stage configs, got {type(config).__name__}")
        stages = []
        for item in config:
            if not isinstance(item, Mapping) or not isinstance(item.get("id"), str):
                raise ValueError(f"each stage config must be an object with a string 'id', got {item!r}")
            stages.append(get_stage_class(item["id"]).from_config(item))
        return cls(tuple(stages))

    def _in_slot(self, slot: int) -> Stage | None:
        return next((stage for stage in self.stages if stage.slot == slot), None)

    @property
    def lowrank(self) -> LowRank | None:
        """The low-rank stage, if any."""
        return self._in_slot(LowRank.slot)  # type: ignore[return-value]

    @property
    def rotation(self) -> Rotate | None:
        """The rotate stage, if any."""
        return self._in_slot(Rotate.slot)  # type: ignore[return-value]

    @property
    def sparsifier(self) -> Sparsifier | None:
        """The ``topk`` or ``randk`` stage, if any."""
        return self._in_slot(Sparsifier.slot)  # type: ignore[return-value]

    @property
    def quantizer(self) -> Quantizer | None:
        """The quantization stage (``q`` or ``sign``), if any."""
        return self._in_slot(Quantizer.slot)  # type: ignore[return-value]

    @property
    def entropy(self) -> Zstd | None:
        """The zstd stage, if any."""
        return self._in_slot(Zstd.slot)  # type: ignore[return-value]


def parse_spec(spec: str | CodecSpec) -> CodecSpec:
    """Parse a spec string or preset name; a :class:`CodecSpec` is returned as is.

    Raises ``ValueError`` naming the stage or parameter that is wrong and what is allowed.
    """
    if isinstance(spec, CodecSpec):
        return spec
    if not isinstance(spec, str):
        raise ValueError(f"codec spec must be a string, got {type(spec).__name__}")
    text = PRESETS.get(spec.strip(), spec.strip())
    if text == NONE:
        return CodecSpec()
    if not text:
        raise ValueError(f"codec spec is empty; use {NONE!r} for no compression, or one of {sorted(PRESETS)}")
    stages = []
    for part in text.split("+"):
        name, *args = [token.strip() for token in part.strip().split(":")]
        if name not in registered_ids():
            raise ValueError(
                f"codec spec {spec!r}: unknown stage {name!r}; stages are {registered_ids()}, "
                f"presets are {sorted(PRESETS)}"
            )
        try:
            stages.append(get_stage_class(name).from_spec_args(args))
        except ValueError as e:
            raise ValueError(f"codec spec {spec!r}: {e}") from e
    try:
        return CodecSpec(tuple(stages))
    except ValueError as e:
        raise ValueError(f"codec spec {spec!r}: {e}") from e


def data_dependent_stages(spec: str | CodecSpec) -> list[str]:
    """Canonical names of the stages that release something data-dependent (unsafe before DP noise)."""
    return [stage.spec() for stage in parse_spec(spec).stages if not stage.data_independent]
