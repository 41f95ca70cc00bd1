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
"""

from fedcompress.audit.conditions import (
    Condition,
    ObservedUpdate,
    PrivacySettings,
    conditions_from,
    observe_update,
)
from fedcompress.audit.dp_check import (
    DPCheckResult,
    check_client_level_dp,
    client_level_mechanism,
    clopper_pearson_upper,
    epsilon_lower_bound,
)
from fedcompress.audit.inversion import THREAT_MODEL, InversionConfig, Reconstruction, invert_update, simulate_update
from fedcompress.audit.report import LEAKAGE_FIELDS
from fedcompress.audit.runner import attacked_model, run_audit
from fedcompress.audit.scoring import Leakage, mean_image_baseline, score_reconstruction
from fedcompress.audit.settings import MODEL_INITS, AuditConfig, load_audit_config

__all__ = [
    "LEAKAGE_FIELDS",
    "MODEL_INITS",
    "THREAT_MODEL",
    "AuditConfig",
    "Condition",
    "DPCheckResult",
    "InversionConfig",
    "Leakage",
    "ObservedUpdate",
    "PrivacySettings",
    "Reconstruction",
    "attacked_model",
    "check_client_level_dp",
    "client_level_mechanism",
    "clopper_pearson_upper",
    "conditions_from",
    "epsilon_lower_bound",
    "invert_update",
    "load_audit_config",
    "mean_image_baseline",
    "observe_update",
    "run_audit",
    "score_reconstruction",
    "simulate_update",
]
