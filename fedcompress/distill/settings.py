"""Settings of the edge pipeline, set like every other command's: ``fedcompress distill ... --set key=value``.

The run's own settings (family, widths, image size, seed, data) come from its ``result.json``; these say how
its edge model is built. Keys are kebab-case, values are checked once here, and a bad one fails with a message
naming the key, the value and what is allowed (``ConfigError``, also a ``ValueError``). This module imports
neither torch nor onnxruntime, so ``--help`` lists the settings without loading them.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from fedcompress.config import parse_overrides
from fedcompress.errors import ConfigError

__all__ = [
    "CALIBRATION_CHOICES",
    "CALIBRATION_METHODS",
    "DEFAULT_EPOCHS",
    "DEFAULT_PROXY_SAMPLES",
    "DEFAULT_PRUNE_AMOUNT",
    "EDGE_WIDTHS",
    "STUDENT_MODELS",
    "DistillSettings",
    "settings_help",
]

DEFAULT_EPOCHS = 200  # on 256 proxies: 100 epochs left the width-4 student 1.4 dB under the teacher, 200 0.9 dB
#: Width of a student of another family than the teacher's (the run's ``student-width`` is for its own family).
#: plain 12 (depth 6, 5.5k parameters, 20x fewer than the width-16 U-Net): int8 0.71 dB under the teacher, a 9.6 KB
#: file; depth 7 made the file 11.5 KB and the int8 latency 2.8x the teacher's (README, "Edge model").
EDGE_WIDTHS = {"plain": 12}
STUDENT_MODELS: tuple[str, ...] = ("plain", "unet", "dncnn")  # fedcompress.models' families
DEFAULT_PROXY_SAMPLES = 1024  # 200 epochs on 1024 proxies: 0.39 dB (fp32), 0.65 dB after pruning and int8 (README)
DEFAULT_PRUNE_AMOUNT = 0.3  # 0.5 cost the width-4 student 0.4-0.6 dB after fine-tuning, 0.3 about 0.05 dB
CALIBRATION_METHODS: tuple[str, ...] = ("minmax", "entropy", "percentile")  # ORT's static calibrators
CALIBRATION_CHOICES: tuple[str, ...] = ("auto", *CALIBRATION_METHODS)


@dataclasses.dataclass(frozen=True, kw_only=True)
class DistillSettings:
    """How a run's edge model is built (``--set`` keys in kebab-case: ``student-width``, ``epochs``, ...).

    Parameters
    ----------
    student_model : str
        Family of the student (``STUDENT_MODELS``; default ``plain``: conv + ReLU only, which ONNX Runtime runs
        wholly in int8; the teacher's own family keeps its GroupNorm, SiLU and resizing in float).
    student_width : int, optional
        Width of the student. Default: the run's ``student-width`` for a student of the teacher's family (which
        must then be narrower than the teacher), else ``EDGE_WIDTHS`` (plain: 12).
    proxy_samples : int, optional
        Server-side proxy images to distill and calibrate on (default ``DEFAULT_PROXY_SAMPLES``; ``none``: the
        run's ``proxy-samples``). They are synthetic and free to draw; 256 (a run's default) left the int8
        width-4 student 1.06 dB under the teacher at 200 epochs, 1024 left it 0.65 dB under (README).
    epochs : int
        Distillation epochs over the proxy images (default ``DEFAULT_EPOCHS``).
    prune_amount : float
        Share of the conv weights zeroed by global magnitude pruning, in ``[0, 1)`` (default 0.3).
    finetune_epochs : int, optional
        Distillation epochs after pruning, masks held (default: a quarter of ``epochs``, at least 1).
    qat_epochs : int
        Quantization-aware fine-tune epochs before the int8 export; 0 (default) is post-training only.
    calibration : str
        int8 calibration: ``minmax``, ``entropy``, ``percentile``, or ``auto`` (default: all three, keep the
        one closest to the teacher on proxy images held out from calibration).
    calibration_samples : int
        Proxy images the int8 calibration reads (default 128; at most the proxy set).
    latency_repeats : int
        Interleaved timed runs per row (default 200).
    teacher_margin_db : float
        PSNR the teacher must gain over the noisy input to be worth distilling (default 2 dB: a student
        allowed to lose 1 dB must still gain at least 1 dB over doing nothing).
    """

    student_model: str = "plain"
    student_width: int | None = None
    proxy_samples: int | None = DEFAULT_PROXY_SAMPLES
    epochs: int = DEFAULT_EPOCHS
    prune_amount: float = DEFAULT_PRUNE_AMOUNT
    finetune_epochs: int | None = None
    qat_epochs: int = 0
    calibration: str = "auto"
    calibration_samples: int = 128
    latency_repeats: int = 200
    teacher_margin_db: float = 2.0

    def __post_init__(self) -> None:
        for name in ("student_width", "proxy_samples", "epochs", "finetune_epochs", "calibration_samples"):
            _check_int(name, getattr(self, name), low=1, optional=name in _OPTIONAL)
        _check_int("qat_epochs", self.qat_epochs, low=0)
        _check_int("latency_repeats", self.latency_repeats, low=1)
        amount = self.prune_amount
        if isinstance(amount, bool) or not isinstance(amount, int | float) or not 0 <= amount < 1:
            raise ConfigError(f"prune-amount={amount!r} is not allowed: a share in [0, 1)")
        margin = self.teacher_margin_db
        if isinstance(margin, bool) or not isinstance(margin, int | float) or not math.isfinite(margin):
            raise ConfigError(f"teacher-margin-db={margin!r} is not allowed: a finite number of dB")
        if self.student_model not in STUDENT_MODELS:
            raise ConfigError(f"student-model={self.student_model!r} is not allowed: one of {list(STUDENT_MODELS)}")
        if self.calibration not in CALIBRATION_CHOICES:
            raise ConfigError(f"calibration={self.calibration!r} is not allowed: one of {list(CALIBRATION_CHOICES)}")

    def width_for(self, cfg_model: str, cfg_student_width: int) -> int:
        """The student's width for a teacher of family ``cfg_model`` whose run asked for ``cfg_student_width``."""
        if self.student_width is not None:
            return self.student_width
        if self.student_model == cfg_model:
            return cfg_student_width
        return EDGE_WIDTHS.get(self.student_model, cfg_student_width)

    @property
    def finetune(self) -> int:
        """Epochs of the fine-tune after pruning."""
        return self.finetune_epochs if self.finetune_epochs is not None else max(1, self.epochs // 4)

    @classmethod
    def from_overrides(cls, items: list[str] | None, base: DistillSettings | None = None) -> DistillSettings:
        """``base`` (default: the defaults) with ``key=value`` items applied (``--set``), validated once."""
        changes: dict[str, Any] = {}
        for key, text in parse_overrides(items).items():
            name = key.replace("-", "_")
            if name not in _FIELDS:
                raise ConfigError(f"unknown distill setting {key!r}; known: {sorted(_kebab(f) for f in _FIELDS)}")
            changes[name] = _coerce(key, text, _FIELDS[name])
        return dataclasses.replace(base or cls(), **changes)

    def to_dict(self) -> dict[str, Any]:
        """The settings as plain JSON data with kebab-case keys."""
        return {_kebab(f.name): getattr(self, f.name) for f in dataclasses.fields(self)}


_OPTIONAL = {"student_width", "proxy_samples", "finetune_epochs"}
_FIELDS = {f.name: f for f in dataclasses.fields(DistillSettings)}


def _kebab(name: str) -> str:
    return name.replace("_", "-")


def _check_int(name: str, value: Any, *, low: int, optional: bool = False) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{_kebab(name)}={value!r} is not allowed: an integer >= {low}")


def _coerce(key: str, text: str, field: dataclasses.Field[Any]) -> Any:
    """A ``--set`` value as the field's type (``none`` clears an optional field)."""
    kind = str(field.type)
    if field.name in _OPTIONAL and text.lower() in ("", "none"):
        return None
    try:
        if kind.startswith("int"):
            return int(text)
        if kind.startswith("float"):
            return float(text)
    except ValueError:
        raise ConfigError(f"{key}={text!r} is not allowed: expected {kind.split(' ')[0]}") from None
    return text


def settings_help() -> str:
    """One line per setting with its default, for ``--help``."""
    defaults = DistillSettings()
    parts = []
    for f in dataclasses.fields(DistillSettings):
        value = getattr(defaults, f.name)
        parts.append(f"{_kebab(f.name)}={_HELP_DEFAULTS.get(f.name, value)}")
    return ", ".join(parts)


_HELP_DEFAULTS = {"student_width": "(plain: 12; the teacher's family: the run's)", "finetune_epochs": "(epochs/4)"}
