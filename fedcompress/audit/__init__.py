"""Measured leakage: a gradient-inversion attack on what the server receives, and an empirical DP check.

- :func:`invert_update` (``inversion``): Inverting-Gradients-style reconstruction of a client's images
  from its decoded update, simulating its local SGD; threat model in :data:`THREAT_MODEL`.
- :func:`observe_update` (``conditions``): the update the server decodes under a defence (codec, sample-level
  DP-SGD, both).
- :func:`score_reconstruction` (``scoring``): per-image PSNR/SSIM after optimal assignment.
- :func:`check_client_level_dp` (``dp_check``): Clopper-Pearson lower bound on the epsilon of the client-level
  Gaussian mechanism as implemented, to compare with the accountant's.
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
    "AuditConfig": "settings",
    "Condition": "conditions",
    "DPCheckResult": "dp_check",
    "InversionConfig": "inversion",
    "LEAKAGE_FIELDS": "report",
    "Leakage": "scoring",
    "MODEL_INITS": "settings",
    "ObservedUpdate": "conditions",
    "PrivacySettings": "conditions",
    "Reconstruction": "inversion",
    "THREAT_MODEL": "inversion",
    "attacked_model": "runner",
    "check_client_level_dp": "dp_check",
    "client_level_mechanism": "dp_check",
    "clopper_pearson_upper": "dp_check",
    "conditions_from": "conditions",
    "epsilon_lower_bound": "dp_check",
    "invert_update": "inversion",
    "load_audit_config": "settings",
    "mean_image_baseline": "scoring",
    "observe_update": "conditions",
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
