"""Sample-level DP on a client: a small facade over Opacus's DP-SGD pieces (Abadi et al. 2016).

Usage, once per round on a client (the accountant's history lives in the client's state between rounds)::

    plan = sample_level_plan(cfg)                                   # public: from the run's settings only
    dp = SampleLevelDP(noise_multiplier=z, clip_norm=cfg.clip_norm, plan=plan)
    dp.load_state_dict(saved)                                      # if this client trained before
    model, optimizer, loader = dp.make_private(model, optimizer, dataset, generator=source.torch())
    ... train ...
    saved, eps = dp.state_dict(), dp.epsilon(cfg.delta)

The schedule is PUBLIC and the same for every client: Poisson rate q = 1 / ceil(N / B) and ceil(N / B) steps
per epoch with N = ``samples-per-client`` (not the size of the client's shard), and the noisy gradient sum is
divided by the public expected batch q * N. So the server's ledger and every client's accountant count the same
steps at the same rate whatever a shard holds (a 25-image shard of a user ``.npz`` spends exactly what the plan
says), and no data-dependent number scales the release. The noise multiplier is calibrated ONCE for the
planned horizon (``sample_level_noise``); calibrating per round would ignore what was already spent.

Opacus's ``PrivacyEngine`` is not used: it derives q and the expected batch from the shard's length, and its
``secure_mode`` needs torchcsprng. Its public parts are wired here instead: ``GradSampleModule`` (per-sample
gradients), ``DPDataLoader`` (Poisson batches), ``DPOptimizer`` with ``secure_mode=True`` (clip, then 2n = 4
Gaussian draws per value against floating-point attacks), all drawing from the caller's generator, which must
be secret (:class:`fedcompress.privacy.randomness.NoiseSource`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

import numpy as np
import torch
from opacus import GradSampleModule
from opacus.data_loader import DPDataLoader
from opacus.optimizers import DPOptimizer
from opacus.validators import ModuleValidator
from torch import nn
from torch.utils.data import DataLoader, Dataset

from fedcompress.config import RunConfig
from fedcompress.privacy._checks import check_number
from fedcompress.privacy.accountant import Accountant
from fedcompress.privacy.calibration import calibrate_noise

__all__ = ["GRAD_SAMPLE_MODES", "SampleLevelDP", "SampleLevelPlan", "sample_level_noise", "sample_level_plan"]

#: Per-sample gradient modes that return (model, optimizer, loader) and work on the U-Net and DnCNN.
GRAD_SAMPLE_MODES: tuple[str, ...] = ("hooks", "functorch")


@dataclasses.dataclass(frozen=True)
class SampleLevelPlan:
    """The public DP-SGD schedule of every client: Poisson rate, steps and the expected batch."""

    sample_rate: float
    steps_per_epoch: int
    steps_per_round: int
    total_steps: int
    expected_batch_size: int

    def __post_init__(self) -> None:
        check_number("sample_rate", self.sample_rate, low=0.0, high=1.0, low_open=True)
        for name in ("steps_per_epoch", "steps_per_round", "total_steps", "expected_batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")


def sample_level_plan(cfg: RunConfig) -> SampleLevelPlan:
    """Q = 1 / ceil(N / B), ceil(N / B) steps per epoch, expected batch q * N, with N = ``samples-per-client``."""
    batches = math.ceil(cfg.samples_per_client / cfg.batch_size)
    per_round = cfg.local_epochs * batches
    return SampleLevelPlan(
        sample_rate=1.0 / batches,
        steps_per_epoch=batches,
        steps_per_round=per_round,
        total_steps=cfg.num_rounds * per_round,
        expected_batch_size=max(1, round(cfg.samples_per_client / batches)),
    )


def sample_level_noise(cfg: RunConfig) -> float:
    """The DP-SGD noise multiplier: ``noise-multiplier`` if given, else calibrated once for the whole horizon.

    Every client uses this same number in every round it trains, so its epsilon after all ``num-rounds``
    rounds is at most ``target-epsilon`` (see :func:`sample_level_plan` for q and the steps).
    """
    if cfg.dp != "sample":
        raise ValueError(f"sample_level_noise needs dp='sample', got dp={cfg.dp!r}")
    if cfg.noise_multiplier > 0:
        return float(cfg.noise_multiplier)
    plan = sample_level_plan(cfg)
    return calibrate_noise(cfg.target_epsilon, plan.sample_rate, plan.total_steps, cfg.delta, cfg.accountant)


class SampleLevelDP:
    """Opacus DP-SGD for one client on a public schedule, with an accountant that persists across rounds.

    Parameters
    ----------
    noise_multiplier : float
        z > 0: noise std over the per-sample clip norm.
    clip_norm : float
        C > 0: per-sample gradient L2 bound (``max_grad_norm``). With per-pixel-mean MSE the per-sample norms
        are small: measure them (:func:`fedcompress.privacy.grad_norms.per_sample_grad_norms`).
    plan : SampleLevelPlan
        The public schedule (:func:`sample_level_plan`): Poisson rate, steps per epoch, expected batch.
    accountant : str | Accountant, default "prv"
        ``"prv"`` or ``"rdp"`` for a fresh history, or an :class:`Accountant` to keep stepping (not copied).
    grad_sample_mode : str, default "hooks"
        One of :data:`GRAD_SAMPLE_MODES`.
    """

    def __init__(
        self,
        *,
        noise_multiplier: float,
        clip_norm: float,
        plan: SampleLevelPlan,
        accountant: str | Accountant = "prv",
        grad_sample_mode: str = "hooks",
    ) -> None:
        noise_multiplier = check_number("noise_multiplier", noise_multiplier, low=0, low_open=True, high_open=True)
        clip_norm = check_number("clip_norm", clip_norm, low=0.0, low_open=True, high_open=True)
        if grad_sample_mode not in GRAD_SAMPLE_MODES:
            raise ValueError(f"grad_sample_mode must be one of {GRAD_SAMPLE_MODES}, got {grad_sample_mode!r}")
        if not isinstance(plan, SampleLevelPlan):
            raise ValueError(f"plan must be a SampleLevelPlan, got {type(plan).__name__}")
        self.noise_multiplier = float(noise_multiplier)
        self.clip_norm = float(clip_norm)
        self.plan = plan
        self.grad_sample_mode = grad_sample_mode
        self.accountant = accountant if isinstance(accountant, Accountant) else Accountant(accountant)

    @property
    def sample_rate(self) -> float:
        """The Poisson rate q every step uses (public)."""
        return self.plan.sample_rate

    @property
    def steps(self) -> int:
        """DP-SGD steps accounted so far, over all rounds."""
        return self.accountant.steps

    def make_private(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        dataset: Dataset,
        *,
        generator: torch.Generator,
        trainable: Mapping[str, torch.Tensor] | None = None,
        noise_generator: torch.Generator | None = None,
    ) -> tuple[nn.Module, torch.optim.Optimizer, DataLoader]:
        """Wrap model and optimizer for DP-SGD and make the Poisson loader; each step is accounted here.

        ``noise_generator``: the noise's, on the model's device (a CUDA model needs a CUDA generator; the batch
        masks are drawn on the CPU); None: ``generator``. ``trainable`` (``dp-keep``): a public 0/1 mask per
        parameter name; per-sample gradients are clipped on
        the masked coordinates only and the rest never move (their noise is discarded: post-processing).

        ``model`` must be Opacus-compatible (GroupNorm, no BatchNorm) and ``optimizer`` built on its
        parameters. The returned model wraps ``model`` (the same parameters; keys of the wrapper's state dict
        gain ``_module.``: keep using ``model``). Batch masks and noise both draw from ``generator`` (secret).
        One pass over the loader is ``plan.steps_per_epoch`` steps whatever ``len(dataset)`` is.
        """
        if not isinstance(generator, torch.Generator):
            raise ValueError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        problems = ModuleValidator.validate(model, strict=False)
        if problems:
            raise ValueError(f"model is not DP-SGD compatible: {problems[0]}")
        private_model = GradSampleModule(
            model, batch_first=True, loss_reduction="mean", force_functorch=self.grad_sample_mode == "functorch"
        )
        private_model.forbid_grad_accumulation()  # one Poisson batch per step, as the accountant assumes
        loader = DPDataLoader(dataset, sample_rate=self.plan.sample_rate, generator=generator)
        loader.batch_sampler.steps = self.plan.steps_per_epoch
        kind = DPOptimizer if trainable is None else _masked_optimizer(model, trainable)
        private_optimizer = kind(
            optimizer,
            noise_multiplier=self.noise_multiplier,
            max_grad_norm=self.clip_norm,
            expected_batch_size=self.plan.expected_batch_size,
            generator=generator if noise_generator is None else noise_generator,
            secure_mode=True,
        )
        private_optimizer.attach_step_hook(self.accountant.opacus.get_optimizer_hook_fn(self.plan.sample_rate))
        return private_model, private_optimizer, loader

    def epsilon(self, delta: float) -> float:
        """Epsilon of this client over all its DP-SGD steps so far, at ``delta``."""
        return self.accountant.epsilon(delta)

    def state_dict(self) -> dict[str, np.ndarray]:
        """The accountant's history as plain arrays (see :meth:`Accountant.state_dict`)."""
        return self.accountant.state_dict()

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Continue from a saved history (validated and copied)."""
        self.accountant.load_state_dict(state)


def _masked_optimizer(model: nn.Module, trainable: Mapping[str, torch.Tensor]) -> type[DPOptimizer]:
    """A DPOptimizer that clips and steps on ``trainable``'s coordinates of ``model``'s parameters only."""
    masks = {id(p): trainable[name].to(p.dtype) for name, p in model.named_parameters() if p.requires_grad}

    class MaskedDPOptimizer(DPOptimizer):
        def clip_and_accumulate(self) -> None:
            for p in self.params:  # before the per-sample norms: only kept coordinates count toward C
                p.grad_sample = p.grad_sample * masks[id(p)]
            super().clip_and_accumulate()

        def add_noise(self) -> None:
            super().add_noise()
            for p in self.params:
                p.grad = p.grad * masks[id(p)]

    return MaskedDPOptimizer
