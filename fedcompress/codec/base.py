"""The shape every codec stage shares, and the registry that maps a stage id to its class.

Modelled on numcodecs: a stage is a small class with a ``codec_id``, ``encode``/``decode``, and
``get_config``/``from_config`` whose config is plain JSON. Its public attributes are exactly its constructor
arguments, so ``cls.from_config(stage.get_config()) == stage``. Stages run in a fixed order (their ``slot``):
low-rank, then rotation, then sparsification, then quantization, then entropy coding.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar

__all__ = [
    "SLOT_NAMES",
    "Stage",
    "check_fraction",
    "check_int",
    "format_float",
    "get_stage_class",
    "parse_number",
    "register_stage",
    "registered_ids",
]

# Pipeline position of each kind of stage; a spec lists at most one stage per slot, in this order.
SLOT_NAMES = ("low-rank", "rotation", "sparsification", "quantization", "entropy coding")

_REGISTRY: dict[str, type[Stage]] = {}


class Stage(ABC):
    """One step of a codec pipeline.

    Subclasses set ``codec_id``, ``slot`` and ``params`` (the constructor arguments, in spec order) and
    implement ``encode``/``decode`` with the signatures natural to their slot.
    """

    codec_id: ClassVar[str]
    slot: ClassVar[int]
    params: ClassVar[tuple[str, ...]]

    @property
    @abstractmethod
    def data_independent(self) -> bool:
        """True when the stage's output releases nothing data-dependent (safe before DP noise)."""

    @classmethod
    @abstractmethod
    def from_spec_args(cls, args: list[str]) -> Stage:
        """Build the stage from the ``:``-separated arguments that follow its id in a spec string."""

    @abstractmethod
    def spec(self) -> str:
        """The canonical spec string of this stage (parses back to an equal stage)."""

    def check_neighbours(self, stages: tuple[Stage, ...]) -> None:
        """Raise ``ValueError`` if this stage cannot run in a pipeline of ``stages`` (by default it can)."""
        del stages  # most stages combine with any others

    def get_config(self) -> dict[str, Any]:
        """Plain-JSON config: ``{"id": codec_id, <constructor arguments>}``."""
        return {"id": self.codec_id, **{name: getattr(self, name) for name in self.params}}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Stage:
        """Rebuild a stage from ``get_config()`` output; unknown or missing keys raise ``ValueError``."""
        if config.get("id") != cls.codec_id:
            raise ValueError(f"config id {config.get('id')!r} does not match stage {cls.codec_id!r}")
        kwargs = {key: value for key, value in config.items() if key != "id"}
        unknown = sorted(set(kwargs) - set(cls.params))
        missing = sorted(set(cls.params) - set(kwargs))
        if unknown or missing:
            raise ValueError(
                f"stage {cls.codec_id!r} config: unknown keys {unknown}, missing keys {missing}; "
                f"expected exactly {list(cls.params)}"
            )
        return cls(**kwargs)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Stage):
            return NotImplemented
        return self.get_config() == other.get_config()

    def __hash__(self) -> int:
        return hash(self.spec())

    def __repr__(self) -> str:
        args = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.params)
        return f"{type(self).__name__}({args})"


def register_stage(cls: type[Stage]) -> type[Stage]:
    """Class decorator: make a stage findable by its ``codec_id``."""
    if cls.codec_id in _REGISTRY:
        raise ValueError(f"codec stage id {cls.codec_id!r} is already registered")
    _REGISTRY[cls.codec_id] = cls
    return cls


def get_stage_class(codec_id: str) -> type[Stage]:
    """The stage class registered as ``codec_id``; ``ValueError`` listing the known ids otherwise."""
    try:
        return _REGISTRY[codec_id]
    except KeyError:
        raise ValueError(f"unknown codec stage {codec_id!r}; known stages: {registered_ids()}") from None


def registered_ids() -> list[str]:
    """Sorted ids of every registered stage."""
    return sorted(_REGISTRY)


# ---- argument checking shared by the stages ------------------------------------------------------------


def check_int(stage: str, name: str, value: object, low: int, high: int) -> int:
    """Return ``value`` if it is an int in ``[low, high]``, else raise ``ValueError`` naming it."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"stage {stage!r} parameter {name!r} must be an integer in {low}..{high}, got {value!r}")
    return value


def check_fraction(stage: str, name: str, value: object) -> float:
    """Return ``value`` as a float if it is a finite number in ``(0, 1]``, else raise ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"stage {stage!r} parameter {name!r} must be a number in (0, 1], got {value!r}")
    value = float(value)
    if not (math.isfinite(value) and 0.0 < value <= 1.0):
        raise ValueError(f"stage {stage!r} parameter {name!r} must be a number in (0, 1], got {value!r}")
    return value


def parse_number(stage: str, name: str, text: str, kind: type) -> Any:
    """Parse one spec argument as ``int`` or ``float``; ``ValueError`` naming the stage and parameter."""
    try:
        return kind(text)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise ValueError(f"stage {stage!r} parameter {name!r} must be {what}, got {text!r}") from None


def format_float(value: float) -> str:
    """Shortest text that parses back to exactly ``value`` (float ``repr`` without a trailing ``.0``)."""
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text
