"""The audit's DP-check rows: the deployed mechanism per codec, against the informed server, and two controls.

========================================  =======  ===============================================================
row                                       control  what it shows
========================================  =======  ===============================================================
deployed, codec X                         no       the release as a client sends it is within its epsilon
deployed + informed server                no       regenerating the noise from public values does not help
noise x 0.1                               yes      the check has the power to flag too little noise
seeded noise + informed server            yes      noise derived from the public seed is no protection
========================================  =======  ===============================================================

A row passes when the lower bound is at most the accountant's epsilon; the audit fails (CLI exit 1) when a real
row is flagged or a control is not.
"""

from __future__ import annotations

import logging
from typing import Any, NamedTuple

from fedcompress.audit.dp_check import Adversary, check_client_level_dp
from fedcompress.audit.dp_mechanisms import local_noise_mechanism, public_noise_adversary
from fedcompress.audit.settings import AuditConfig

__all__ = ["CONTROL_NOISE_SCALE", "dp_check_rows"]

log = logging.getLogger(__name__)

#: The too-little-noise control's scale on the noise multiplier.
CONTROL_NOISE_SCALE = 0.1
_PLAIN = "honest-but-curious"  # tests the release as received; "informed" subtracts regenerated noise first


class _Check(NamedTuple):
    mechanism: str
    control: bool
    randomness: str
    adversary: str
    arguments: dict[str, Any]  # for check_client_level_dp, besides the common ones


def dp_check_rows(config: AuditConfig) -> list[dict[str, Any]]:
    """Run every check of ``config`` (``dp_check_*`` settings); one plain-JSON row each, in the table's order."""
    common: dict[str, Any] = {
        "clip_norm": config.dp_check_clip_norm,
        "noise_multiplier": config.dp_check_noise_multiplier,
        "trials": config.dp_check_trials,
        "selection_trials": config.dp_check_selection_trials,
        "delta": config.delta,
        "confidence": config.confidence,
        "accountant": config.accountant,
        "seed": config.seed,
    }
    rows = []
    for check in _checks(config):
        result = check_client_level_dp(**common, **check.arguments)
        row = {"mechanism": check.mechanism, "control": check.control, "randomness": check.randomness}
        rows.append({**row, "adversary": check.adversary, **result.to_dict()})
        log.info(
            "audit: DP check, %s, adversary %s: epsilon >= %.3f (accountant %.3f, %.0f s)",
            check.mechanism,
            check.adversary,
            result.epsilon_lower_bound,
            result.epsilon,
            result.seconds,
        )
    return rows


def _checks(config: AuditConfig) -> list[_Check]:
    """The rows of the module's table, each with its mechanism and adversary built fresh (they keep state)."""
    z, c, seed = config.dp_check_noise_multiplier, config.dp_check_clip_norm, config.seed

    def informed() -> Adversary:  # one per check: it counts the rounds of the mechanism it follows
        return public_noise_adversary(clip_norm=c, noise_multiplier=z, seed=seed)

    too_little = local_noise_mechanism(clip_norm=c, noise_multiplier=z * CONTROL_NOISE_SCALE, seed=seed)
    seeded = local_noise_mechanism(clip_norm=c, noise_multiplier=z, randomness="seeded", seed=seed)
    checks = [
        _Check(f"LocalNoiseClient + codec {codec}", False, "secret", _PLAIN, {"codec": codec})
        for codec in config.dp_check_codecs
    ]
    return [
        *checks,
        _Check("LocalNoiseClient + codec none", False, "secret", "informed", {"adversary": informed()}),
        _Check(f"negative control: noise x {CONTROL_NOISE_SCALE}", True, "secret", _PLAIN, {"mechanism": too_little}),
        _Check(
            "negative control: seeded noise", True, "seeded", "informed", {"mechanism": seeded, "adversary": informed()}
        ),
    ]
