"""Client-level DP: each client's whole update is the unit of privacy, under two trust models.

``central`` (trusted server)
    Clients send their (compressed) updates; the server clips EACH decoded update to C, sums, adds
    N(0, (zC)^2) to every coordinate and divides by the FIXED denominator q*N (never the realised count,
    which would make the sensitivity depend on who was sampled). With Poisson client sampling at rate q,
    one round is one step of the Poisson-subsampled Gaussian mechanism: accountant sample rate q, one step
    per released round, add/remove-one-client adjacency (McMahan et al. 2018, https://arxiv.org/abs/1710.06963).
    Fixed-size sampling (m of N without replacement) is NOT what the accountant assumes: its honest analysis
    is sampling without replacement with replace-one adjacency (about twice the epsilon), which Opacus does
    not implement, so an amplified epsilon for it is refused here.

``local`` (untrusted server)
    Each client clips and noises its own update before encoding. The server sees every update on its own
    and knows who took part, so sampling gives NO amplification against it: each client is accounted with
    sample rate 1 for exactly the rounds it took part in, whatever the client-sampling scheme (fixed or
    Poisson), and the federation reports the max over clients. Adjacency is "this client's data vs none"
    (its clipped update vs a zero update, sensitivity C); distinguishing two arbitrary datasets of the same
    client (``adjacency="replace-one"``, sensitivity 2C) is accounted as noise multiplier z/2.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from fedcompress.config import RunConfig
from fedcompress.privacy._checks import check_number
from fedcompress.privacy.accountant import epsilon
from fedcompress.privacy.calibration import calibrate_noise
from fedcompress.privacy.clipping import add_noise, clip_update
from fedcompress.privacy.masking import PublicMask

__all__ = ["TRUST_MODELS", "central_aggregate", "client_level_epsilon", "client_level_noise"]

TRUST_MODELS: tuple[str, ...] = ("central", "local")
_ADJACENCY = ("add-remove", "replace-one")


def client_level_epsilon(
    *,
    trust: str,
    noise_multiplier: float,
    rounds: int,
    delta: float,
    sample_rate: float = 1.0,
    client_sampling: str = "poisson",
    adjacency: str = "add-remove",
    accountant: str = "prv",
) -> float:
    """Epsilon of client-level DP after ``rounds`` rounds.

    Parameters
    ----------
    trust : str
        ``"central"``: server-side noise; ``rounds`` counts released aggregates. ``"local"``: client-side
        noise; ``rounds`` counts the rounds THIS client took part in, and there is no amplification by
        sampling against the server (``sample_rate`` and ``client_sampling`` are ignored).
    noise_multiplier : float
        z: noise std over the clip norm C.
    rounds : int
        Number of noisy releases composed.
    delta : float
        Target delta.
    sample_rate : float, default 1.0
        Central only: Poisson client-sampling rate q (``fraction-train``).
    client_sampling : str, default "poisson"
        Central only: ``"poisson"``; ``"fixed"`` raises ``ValueError`` (no honest amplified epsilon here).
    adjacency : str, default "add-remove"
        Local only may use ``"replace-one"`` (sensitivity 2C).
    accountant : str, default "prv"
        ``"prv"`` or ``"rdp"``.
    """
    if trust not in TRUST_MODELS:
        raise ValueError(f"trust must be one of {TRUST_MODELS}, got {trust!r}")
    if adjacency not in _ADJACENCY:
        raise ValueError(f"adjacency must be one of {_ADJACENCY}, got {adjacency!r}")
    if trust == "local":
        z = noise_multiplier / 2.0 if adjacency == "replace-one" else noise_multiplier
        return epsilon(z, 1.0, rounds, delta, accountant)
    if client_sampling != "poisson":
        raise ValueError(
            f"client_sampling={client_sampling!r} with central client-level DP: the accountant assumes "
            "Poisson sampling; fixed-size sampling needs sampling-without-replacement accounting with "
            "replace-one adjacency, which is not available, so no amplified epsilon is given. "
            "Use client_sampling='poisson'."
        )
    if adjacency != "add-remove":
        raise ValueError("central client-level DP is accounted for add/remove adjacency only (Opacus's model)")
    return epsilon(noise_multiplier, sample_rate, rounds, delta, accountant)


def client_level_noise(cfg: RunConfig) -> float:
    """The noise multiplier for ``dp = "client"``: ``noise-multiplier`` if given, else calibrated ONCE.

    Calibration covers the whole planned horizon: central, q = ``fraction-train`` and ``num-rounds`` steps;
    local, q = 1 and ``num-rounds`` steps (a client that takes part in every round).
    """
    if cfg.dp != "client":
        raise ValueError(f"client_level_noise needs dp='client', got dp={cfg.dp!r}")
    if cfg.noise_multiplier > 0:
        return float(cfg.noise_multiplier)
    sample_rate = cfg.fraction_train if cfg.dp_noise == "central" else 1.0
    return calibrate_noise(cfg.target_epsilon, sample_rate, cfg.num_rounds, cfg.delta, cfg.accountant)


def central_aggregate(
    updates: Sequence[Mapping[str, np.ndarray]],
    *,
    clip_norm: float,
    noise_multiplier: float,
    expected_clients: float,
    generator: np.random.Generator,
    mask: PublicMask | None = None,
) -> dict[str, np.ndarray]:
    """Central client-level DP: clip each update to C, sum, add N(0, (zC)^2), divide by q*N.

    Parameters
    ----------
    updates : Sequence[dict[str, numpy.ndarray]]
        Decoded updates, same names and shapes; at least one (a zero update when nobody replied gives the
        noise its shapes and adds nothing to the sum). Not modified.
    clip_norm : float
        C, per update, global L2.
    noise_multiplier : float
        z; the noise on the SUM has std z*C.
    expected_clients : float
        The fixed denominator q*N (> 0), never the number that replied.
    generator : numpy.random.Generator
        Source of the noise.
    mask : PublicMask | None
        ``dp-keep``'s public mask: the updates must already be zero off it, and the noise goes on it only.
        None: noise on every coordinate.

    Returns
    -------
    dict[str, numpy.ndarray]
        The float32 noisy mean update.
    """
    if not updates:
        raise ValueError("updates is empty: pass at least one (a zero update) so the noise has shapes")
    expected_clients = check_number("expected_clients", expected_clients, low=0.0, low_open=True, high_open=True)
    noise_multiplier = check_number("noise_multiplier", noise_multiplier, low=0.0, high_open=True)
    layout = {name: np.shape(value) for name, value in updates[0].items()}
    total = {name: np.zeros(shape, dtype=np.float64) for name, shape in layout.items()}
    for index, update in enumerate(updates):
        shapes = {name: np.shape(value) for name, value in update.items()}
        if shapes != layout:
            raise ValueError(f"updates[{index}] has names/shapes {shapes}, expected those of updates[0]: {layout}")
        clipped, _ = clip_update(update, clip_norm)
        for name, value in clipped.items():
            total[name] += value
    std = noise_multiplier * clip_norm
    if mask is None:
        noised = add_noise(total, std, generator, dtype=np.float64)
    else:
        noised = mask.add_noise(total, std, generator)
    return {name: (value / expected_clients).astype(np.float32) for name, value in noised.items()}
