"""Model families by name, and helpers to size them and rebuild them from a state dict."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from fedcompress.models.dncnn import DnCNN
from fedcompress.models.plain import PlainCNN
from fedcompress.models.unet import UNet

__all__ = ["MODEL_NAMES", "build_model", "count_parameters", "model_from_state"]

_BUILDERS: dict[str, Callable[[int, int], nn.Module]] = {"unet": UNet, "dncnn": DnCNN, "plain": PlainCNN}
MODEL_NAMES: tuple[str, ...] = tuple(_BUILDERS)


def build_model(name: str = "unet", width: int = 16, in_channels: int = 1) -> nn.Module:
    """A freshly initialised denoiser of family ``name`` (one of ``MODEL_NAMES``).

    Initialisation uses torch's global RNG: seed it (``torch.manual_seed``) or load a state dict when every
    party must start from the same weights.
    """
    if name not in _BUILDERS:
        raise ValueError(f"model name {name!r} is not known; choose one of {MODEL_NAMES}")
    if not isinstance(width, int) or width < 1:
        raise ValueError(f"width must be a positive int, got {width!r}")
    return _BUILDERS[name](width, in_channels)


def count_parameters(model: nn.Module) -> int:
    """Number of scalar parameters (trainable or not)."""
    return sum(p.numel() for p in model.parameters())


def model_from_state(name: str, width: int, state_dict: Mapping[str, Any], *, in_channels: int = 1) -> nn.Module:
    """Build ``name`` at ``width`` and load ``state_dict`` (tensors or arrays, copied in).

    Raises ``ValueError`` naming the missing, unexpected and wrongly shaped entries when the state does not
    belong to that architecture, rather than torch's long ``RuntimeError``.
    """
    model = build_model(name, width, in_channels)
    expected = model.state_dict()
    given = {k: torch.as_tensor(v) for k, v in state_dict.items()}
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    shapes = [
        f"{k}: {tuple(given[k].shape)} vs {tuple(expected[k].shape)}"
        for k in expected
        if k in given and given[k].shape != expected[k].shape
    ]
    if missing or unexpected or shapes:
        hint = ""
        if any(k.startswith("_module.") for k in given):
            hint = " (keys start with '_module.': pass the Opacus-wrapped model's `_module.state_dict()`)"
        raise ValueError(
            f"state dict does not fit model {name!r} at width {width}{hint}: missing {_few(missing)}, "
            f"unexpected {_few(unexpected)}, wrong shapes {_few(shapes)}"
        )
    model.load_state_dict(given, strict=True)
    return model


def _few(items: list[str], limit: int = 5) -> str:
    shown = ", ".join(items[:limit])
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return f"[{shown}{more}]"
