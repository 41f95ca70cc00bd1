"""Refuse unsafe orders of compression and DP noise at start-up, naming the stage and the rule.

Rule: whatever runs on an already-DP output is post-processing and free; whatever runs BEFORE the noise must
release nothing about the data. So:

- ``dp = "sample"``: the local delta is already DP (Opacus DP-SGD), every codec stage after it is allowed.
- ``dp = "client"``, ``dp-noise = "central"``: the trusted server clips and noises decoded updates; the
  codec runs before the noise but only the trusted server sees its output. ``pre-noise`` does not apply.
- ``dp = "client"``, ``dp-noise = "local"``: the ``pre-noise`` stages run on the raw update BEFORE clip and
  noise, so only data-independent stages are allowed there: random-k whose mask comes from a public seed
  (``randk``) and quantization to a fixed public range (``q:B:range=r``). Refused: top-k (its indices),
  low-rank factors, quantization with data-derived scales, zstd (the compressed length), anything adaptive.
  The main ``codec`` runs after the noise: post-processing, allowed.

Which stages are data-independent is decided by the codec itself (``data_dependent_stages``).
"""

from __future__ import annotations

from fedcompress.codec import data_dependent_stages
from fedcompress.config import RunConfig
from fedcompress.errors import ConfigError

__all__ = ["check_order", "check_stage_order"]

_SAFE = "random-k with a public seed ('randk:F') and fixed-range quantization ('q:B:range=R')"


def check_stage_order(*, dp: str, dp_noise: str, pre_noise: str) -> None:
    """Raise ``ConfigError`` naming the stage and the rule when ``pre_noise`` would leak before the noise.

    Parameters
    ----------
    dp : str
        ``"none"``, ``"sample"`` or ``"client"``.
    dp_noise : str
        ``"local"`` or ``"central"`` (read only when ``dp = "client"``).
    pre_noise : str
        Codec spec of the stages run before clip + noise (empty for none).
    """
    if not pre_noise:
        return
    if not (dp == "client" and dp_noise == "local"):
        raise ConfigError(
            f"pre-noise={pre_noise!r} runs stages before client-side noise, which exists only with "
            f"dp='client' and dp-noise='local' (got dp={dp!r}, dp-noise={dp_noise!r})"
        )
    try:
        unsafe = data_dependent_stages(pre_noise)
    except ValueError as e:
        raise ConfigError(f"pre-noise={pre_noise!r} is not a valid codec spec: {e}") from e
    if unsafe:
        raise ConfigError(
            f"pre-noise={pre_noise!r}: stage {unsafe[0]!r} is data-dependent and would run BEFORE the "
            f"client-level DP noise, releasing un-noised information about the update (rule: before noise "
            f"only data-independent stages: {_SAFE}). Refused stages here: {unsafe}. Move them to 'codec', "
            "which runs after the noise (post-processing)."
        )


def check_order(cfg: RunConfig) -> None:
    """Check a run configuration's DP / compression order (module docstring); raise ``ConfigError``."""
    check_stage_order(dp=cfg.dp, dp_noise=cfg.dp_noise, pre_noise=cfg.pre_noise)
