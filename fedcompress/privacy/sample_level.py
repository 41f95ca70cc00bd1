"""Sample-level DP on a client: a small facade over Opacus's ``PrivacyEngine`` (DP-SGD, Abadi et al. 2016).

Usage, once per round on a client (the accountant's history lives in Flower's ``context.state`` between
rounds)::

    dp = SampleLevelDP(noise_multiplier=sample_level_noise(cfg), clip_norm=cfg.clip_norm)
    dp.load_state_dict(saved)                                      # if this client trained before
    model, optimizer, loader = dp.make_private(model, optimizer, loader, generator=torch_generator(...))
    ... train ...
    saved, eps = dp.state_dict(), dp.epsilon(cfg.delta)

The noise multiplier is calibrated ONCE for the planned horizon (``sample_level_noise``) and used unchanged
every round; calibrating per round (``make_private_with_epsilon``) would ignore what was already spent.
Poisson sampling draws each example with probability q = 1 / len(loader) = 1 / ceil(N / B) (what Opacus's
DP data loader does; equal to B / N when B divides N). Noise and sampling come from the caller's torch
generator. ``secure_mode`` is off (torchcsprng is not available): noise comes from torch's ordinary PRNG.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

import numpy as np
import torch
from opacus import PrivacyEngine
from torch import nn
from torch.utils.data import DataLoader

from fedcompress.config import RunConfig
from fedcompress.privacy._checks import check_number
from fedcompress.privacy.accountant import Accountant
from fedcompress.privacy.calibration import calibrate_noise

__all__ = ["GRAD_SAMPLE_MODES", "SampleLevelDP", "SampleLevelPlan", "sample_level_noise", "sample_level_plan"]

#: Per-sample gradient modes that return (model, optimizer, loader) and work on the U-Net and DnCNN.
GRAD_SAMPLE_MODES: tuple[str, ...] = ("hooks", "functorch")


@dataclasses.dataclass(frozen=True)
class SampleLevelPlan:
    """The DP-SGD schedule of one client: Poisson rate and step counts."""

    sample_rate: float
    steps_per_round: int
    total_steps: int


def sample_level_plan(cfg: RunConfig, num_samples: int | None = None) -> SampleLevelPlan:
    """Q = 1 / ceil(N / B) and steps = num_rounds * local_epochs * ceil(N / B), N = ``samples-per-client``.

    Pass ``num_samples`` when a client's dataset size differs from ``samples-per-client`` (user data).
    """
    size = cfg.samples_per_client if num_samples is None else num_samples
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"num_samples must be a positive int, got {size!r}")
    batches = math.ceil(size / cfg.batch_size)
    per_round = cfg.local_epochs * batches
    return SampleLevelPlan(sample_rate=1.0 / batches, steps_per_round=per_round, total_steps=cfg.num_rounds * per_round)


def sample_level_noise(cfg: RunConfig, num_samples: int | None = None) -> float:
    """The DP-SGD noise multiplier: ``noise-multiplier`` if given, else calibrated once for the whole horizon.

    Every client uses this same number in every round it trains, so its epsilon after all ``num-rounds``
    rounds is at most ``target-epsilon`` (see :func:`sample_level_plan` for q and the steps).
    """
    if cfg.dp != "sample":
        raise ValueError(f"sample_level_noise needs dp='sample', got dp={cfg.dp!r}")
    if cfg.noise_multiplier > 0:
        return float(cfg.noise_multiplier)
    plan = sample_level_plan(cfg, num_samples)
    return calibrate_noise(cfg.target_epsilon, plan.sample_rate, plan.total_steps, cfg.delta, cfg.accountant)


def _with_generator(loader: DataLoader, generator: torch.Generator) -> DataLoader:
    """A loader like ``loader`` (same dataset, length, collate) whose randomness is ``generator``."""
    if loader.batch_size is None:
        raise ValueError(
            "loader must batch by batch_size (not a custom batch_sampler): Opacus samples q = 1/len(loader)"
        )
    return DataLoader(
        loader.dataset,
        batch_size=loader.batch_size,
        drop_last=loader.drop_last,
        collate_fn=loader.collate_fn,
        num_workers=loader.num_workers,
        generator=generator,
    )


class SampleLevelDP:
    """Opacus DP-SGD for one client, with an accountant that persists across rounds.

    Parameters
    ----------
    noise_multiplier : float
        z > 0: noise std over the per-sample clip norm.
    clip_norm : float
        C > 0: per-sample gradient L2 bound (``max_grad_norm``). With per-pixel-mean MSE the per-sample norms
        are small: measure them (:func:`fedcompress.privacy.grad_norms.per_sample_grad_norms`).
    accountant : str, default "prv"
        ``"prv"`` or ``"rdp"``.
    grad_sample_mode : str, default "hooks"
        One of :data:`GRAD_SAMPLE_MODES`.
    """

    def __init__(
        self,
        *,
        noise_multiplier: float,
        clip_norm: float,
        accountant: str = "prv",
        grad_sample_mode: str = "hooks",
    ) -> None:
        noise_multiplier = check_number("noise_multiplier", noise_multiplier, low=0, low_open=True, high_open=True)
        clip_norm = check_number("clip_norm", clip_norm, low=0.0, low_open=True, high_open=True)
        if grad_sample_mode not in GRAD_SAMPLE_MODES:
            raise ValueError(f"grad_sample_mode must be one of {GRAD_SAMPLE_MODES}, got {grad_sample_mode!r}")
        self.noise_multiplier = float(noise_multiplier)
        self.clip_norm = float(clip_norm)
        self.grad_sample_mode = grad_sample_mode
        self.accountant = Accountant(accountant)
        self.sample_rate: float | None = None  # known after make_private

    @property
    def steps(self) -> int:
        """DP-SGD steps accounted so far, over all rounds."""
        return self.accountant.steps

    def make_private(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        loader: DataLoader,
        *,
        generator: torch.Generator,
    ) -> tuple[nn.Module, torch.optim.Optimizer, DataLoader]:
        """Wrap the three training objects for DP-SGD; each optimizer step is accounted here.

        ``model`` must be Opacus-compatible (GroupNorm, no BatchNorm) and ``optimizer`` built on its
        parameters. The returned model wraps ``model`` (the same parameters; keys of the wrapper's state dict
        gain ``_module.``: keep using ``model``). Poisson sampling and noise both draw from ``generator``.
        """
        if not isinstance(generator, torch.Generator):
            raise ValueError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        engine = PrivacyEngine(accountant=self.accountant.name, secure_mode=False)
        engine.accountant = self.accountant.opacus  # Opacus's step hook now steps our (persisted) history
        private_model, private_optimizer, private_loader = engine.make_private(
            module=model,
            optimizer=optimizer,
            data_loader=_with_generator(loader, generator),
            noise_multiplier=self.noise_multiplier,
            max_grad_norm=self.clip_norm,
            poisson_sampling=True,
            noise_generator=generator,
            grad_sample_mode=self.grad_sample_mode,
        )
        self.sample_rate = 1.0 / len(private_loader)
        return private_model, private_optimizer, private_loader

    def epsilon(self, delta: float) -> float:
        """Epsilon of this client over all its DP-SGD steps so far, at ``delta``."""
        return self.accountant.epsilon(delta)

    def state_dict(self) -> dict[str, np.ndarray]:
        """The accountant's history as plain arrays (see :meth:`Accountant.state_dict`)."""
        return self.accountant.state_dict()

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Continue from a saved history (validated and copied)."""
        self.accountant.load_state_dict(state)
