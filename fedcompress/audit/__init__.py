"""Measured leakage: a gradient-inversion attack on what the server receives, and an empirical DP check.

- :func:`invert_update` (``inversion``): Inverting-Gradients-style reconstruction of a client's images
  from its decoded update, simulating its local SGD; threat model in :data:`THREAT_MODEL`.
- :class:`Condition` (``conditions``): a defence (codec, sample-level DP, the client's DP randomness) and the
  adversary (honest-but-curious, or informed: it regenerates the noise from public values).
- :func:`observe_update` (``client``): the update the server decodes from the REAL client round
  (``run_client_round``) under a condition.
- :func:`regenerated_noise` (``informed``): the informed server's estimate of the client's DP noise.
- :func:`score_reconstruction` (``scoring``): per-image PSNR/SSIM after optimal assignment.
- :func:`check_client_level_dp` (``dp_check``): Clopper-Pearson lower bound on the epsilon of the deployed
  client-level mechanism (:func:`local_noise_mechanism`, secret randomness), to compare with the accountant's.
- :func:`run_audit` (``runner``): all of it for an :class:`AuditConfig`; writes ``audit.json`` and PNG grids.
  ``fedcompress audit`` is its command (``cli.register``).

Measured leakage is evidence beside the epsilon, never a guarantee: a stronger attack may leak more.

Names are re-exported lazily (PEP 562): ``fedcompress.audit.cli`` registers its subcommand without importing
torch or Opacus; each name's module loads on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "ADVERSARIES": "conditions",
    "AuditConfig": "settings",
    "Condition": "conditions",
    "DPCheckResult": "dp_check",
    "InversionConfig": "inversion",
    "LEAKAGE_FIELDS": "report",
    "Leakage": "scoring",
    "MODEL_INITS": "settings",
    "ObservedUpdate": "client",
    "Reconstruction": "inversion",
    "THREAT_MODEL": "inversion",
    "attacked_model": "conditions",
    "check_client_level_dp": "dp_check",
    "client_config": "client",
    "clopper_pearson_upper": "dp_check",
    "conditions_from": "conditions",
    "dp_check_rows": "dp_rows",
    "epsilon_lower_bound": "dp_check",
    "invert_update": "inversion",
    "load_audit_config": "settings",
    "local_noise_mechanism": "dp_mechanisms",
    "mean_image_baseline": "scoring",
    "noiseless_update": "informed",
    "observe_update": "client",
    "public_noise_adversary": "dp_mechanisms",
    "regenerated_noise": "informed",
    "relative_error": "informed",
    "run_audit": "runner",
    "score_reconstruction": "scoring",
    "simulate_update": "inversion",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"fedcompress.audit.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'fedcompress.audit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
