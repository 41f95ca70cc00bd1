"""Differential privacy for fedcompress: accounting, DP-SGD wiring, client-level clip + noise, ledger, budget.

Flower-free: works on tensors, numpy arrays and :class:`~fedcompress.config.RunConfig`. Two levels:

- sample-level (``dp = "sample"``): Opacus DP-SGD on each client (:class:`SampleLevelDP`), noise calibrated
  once for the planned horizon (:func:`sample_level_noise`), accountant history persisted between rounds;
  federation guarantee = max over clients (parallel composition).
- client-level (``dp = "client"``): clip the whole update to C and add N(0, (zC)^2), at the client
  (``local``: :func:`clip_and_noise`, no amplification by sampling against the server) or at the server
  (``central``: :func:`central_aggregate`, Poisson client sampling, fixed denominator q*N).

Each mode is one mechanism object per side (:mod:`fedcompress.privacy.mechanisms`) that owns its randomness,
accountant and state; DP noise and DP sampling come from secret OS entropy (:class:`NoiseSource`), never from
the public run seed, and a client holds every request to its site's floor (:class:`ClientPolicy`).

Every epsilon travels with delta, noise multiplier, clip norm, sample rate, steps/rounds, accountant, level,
threat model and randomness source (:class:`LedgerEntry`). Accountants are Opacus's PRV (default) and RDP,
never GDP.

Not covered by the epsilon (see :data:`NOT_COVERED`): num-examples used as FedAvg weights, training loss and
metrics on private data, who took part and when. Private runs default to ``release = "minimal"``, which
withholds num-examples (uniform weights) and the private metrics.
"""

from fedcompress.privacy.accountant import ACCOUNTANTS, Accountant, epsilon, history_epsilon
from fedcompress.privacy.calibration import calibrate_noise
from fedcompress.privacy.client_level import (
    TRUST_MODELS,
    central_aggregate,
    client_level_epsilon,
    client_level_noise,
)
from fedcompress.privacy.clipping import add_noise, clip_and_noise, clip_update
from fedcompress.privacy.disclosure import NOT_COVERED
from fedcompress.privacy.grad_norms import norm_quantiles, per_sample_grad_norms
from fedcompress.privacy.ledger import (
    GUARANTEES,
    LEVELS,
    PARALLEL_COMPOSITION,
    THREAT_MODELS,
    LedgerEntry,
    PrivacyLedger,
)
from fedcompress.privacy.order import check_order, check_stage_order
from fedcompress.privacy.policy import ClientPolicy
from fedcompress.privacy.randomness import RANDOMNESS, NoiseSource, gaussian
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
    "RANDOMNESS",
    "THREAT_MODELS",
    "TRUST_MODELS",
    "Accountant",
    "ClientPolicy",
    "LedgerEntry",
    "NoiseSource",
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
    "gaussian",
    "history_epsilon",
    "norm_quantiles",
    "per_sample_grad_norms",
    "sample_level_noise",
    "sample_level_plan",
]
