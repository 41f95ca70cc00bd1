"""Differential privacy for fedcompress: accounting, DP-SGD wiring, client-level clip + noise, ledger, budget.

Flower-free: works on tensors, numpy arrays and :class:`~fedcompress.config.RunConfig`. Two levels:

- sample-level (``dp = "sample"``): Opacus DP-SGD on each client (:class:`SampleLevelDP`), noise calibrated
  once for the planned horizon (:func:`sample_level_noise`), accountant history persisted between rounds;
  federation guarantee = max over clients (parallel composition).
- client-level (``dp = "client"``): clip the whole update to C and add N(0, (zC)^2), at the client
  (``local``: :func:`clip_and_noise`, no amplification by sampling against the server) or at the server
  (``central``: :func:`central_aggregate`, Poisson client sampling, fixed denominator q*N).

Every epsilon travels with delta, noise multiplier, clip norm, sample rate, steps/rounds, accountant and level
(:class:`LedgerEntry`). Accountants are Opacus's PRV (default) and RDP, never GDP.

Not covered by the epsilon (see :data:`NOT_COVERED`): num-examples used as FedAvg weights, training loss and
metrics on private data, who took part and when. ``release = "minimal"`` withholds num-examples (uniform
weights) and the private metrics. ``secure_mode`` is off (no torchcsprng): noise comes from ordinary PRNGs.
"""

from fedcompress.privacy.accountant import ACCOUNTANTS, Accountant, epsilon, history_epsilon
from fedcompress.privacy.budget import BudgetCheck, BudgetGuard, predict_epsilon_after_round
from fedcompress.privacy.calibration import calibrate_noise
from fedcompress.privacy.client_level import (
    TRUST_MODELS,
    central_aggregate,
    client_level_epsilon,
    client_level_noise,
)
from fedcompress.privacy.clipping import add_noise, clip_and_noise, clip_update
from fedcompress.privacy.disclosure import NOT_COVERED, SECURE_MODE_NOTE
from fedcompress.privacy.grad_norms import norm_quantiles, per_sample_grad_norms
from fedcompress.privacy.ledger import (
    GUARANTEES,
    LEVELS,
    PARALLEL_COMPOSITION,
    LedgerEntry,
    PrivacyLedger,
    max_over_clients,
)
from fedcompress.privacy.order import check_order, check_stage_order
from fedcompress.privacy.sample_level import (
    GRAD_SAMPLE_MODES,
    SampleLevelDP,
    SampleLevelPlan,
    sample_level_noise,
    sample_level_plan,
)

__all__ = [
    "ACCOUNTANTS",
    "GRAD_SAMPLE_MODES",
    "GUARANTEES",
    "LEVELS",
    "NOT_COVERED",
    "PARALLEL_COMPOSITION",
    "SECURE_MODE_NOTE",
    "TRUST_MODELS",
    "Accountant",
    "BudgetCheck",
    "BudgetGuard",
    "LedgerEntry",
    "PrivacyLedger",
    "SampleLevelDP",
    "SampleLevelPlan",
    "add_noise",
    "calibrate_noise",
    "central_aggregate",
    "check_order",
    "check_stage_order",
    "client_level_epsilon",
    "client_level_noise",
    "clip_and_noise",
    "clip_update",
    "epsilon",
    "history_epsilon",
    "max_over_clients",
    "norm_quantiles",
    "per_sample_grad_norms",
    "predict_epsilon_after_round",
    "sample_level_noise",
    "sample_level_plan",
]
