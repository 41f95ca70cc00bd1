"""The client half of each privacy mode: one object that wraps the local step it changes.

=====================  ==========================================================================================
class                  what it wraps
=====================  ==========================================================================================
ClientMechanism        nothing: plain local SGD, the update as it is (``dp = "none"``; and central noise, where
                       the trusted server clips and noises)
SampleLevelClient      training: Opacus DP-SGD on the public schedule, secret batches and noise (under
                       ``dp-keep``, on the round's public mask of coordinates only)
LocalNoiseClient       the update: data-independent ``pre-noise`` stages (or the round's public ``dp-keep``
                       mask), clip to C, secret N(0, (zC)^2) on what is kept
=====================  ==========================================================================================

The two private ones check every request against the site's :class:`~fedcompress.privacy.policy.ClientPolicy`
and their own accountant BEFORE any work (:meth:`ClientMechanism.admit`), and keep that accountant in the
client's own state (``state_dict``), which never rewinds: a replayed round that is trained afresh is charged again.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from fedcompress.codec import decode, encode
from fedcompress.config import RunConfig
from fedcompress.data.denoising import DenoisingSet
from fedcompress.privacy.accountant import Accountant
from fedcompress.privacy.clipping import clip_and_noise, clip_update
from fedcompress.privacy.masking import PublicMask
from fedcompress.privacy.policy import ClientPolicy
from fedcompress.privacy.randomness import NoiseSource
from fedcompress.privacy.sample_level import SampleLevelDP, sample_level_plan
from fedcompress.seeding import derive_seed, torch_generator
from fedcompress.training import make_loader, make_optimizer, train_epochs

__all__ = ["ClientMechanism", "LocalNoiseClient", "SampleLevelClient"]

_RELEASES = "releases"


class ClientMechanism:
    """No privacy at the client: plain local SGD on batches shuffled from the public seed; the update unchanged.

    Parameters
    ----------
    cfg : RunConfig
        The run's settings as the server sent them.
    partition_id : int
        This client's partition (site).
    """

    #: Whether a replayed round must re-send the stored release (its randomness cannot be redrawn for free).
    private = False

    def __init__(self, cfg: RunConfig, *, partition_id: int) -> None:
        self.cfg = cfg
        self.partition_id = partition_id

    def admit(self) -> None:
        """Refuse the request before any work (``PrivacyPolicyError``); nothing to check without client-side DP."""

    def train(self, model: nn.Module, data: DenoisingSet, server_round: int) -> float:
        """Train ``model`` in place for ``local-epochs``; return the mean training loss."""
        cfg = self.cfg
        loader = make_loader(data, cfg.batch_size, torch_generator(cfg.seed, "train", server_round, self.partition_id))
        return train_epochs(model, loader, make_optimizer(model, cfg.lr, cfg.momentum), cfg.local_epochs)

    def privatise(self, delta: dict[str, np.ndarray], server_round: int) -> dict[str, np.ndarray]:
        """The update to encode: ``delta`` itself."""
        return delta

    def private_metrics(self) -> dict[str, float]:
        """Metrics the epsilon does not cover (sent only with ``release = "all"``)."""
        return {}

    def public_metrics(self) -> dict[str, float]:
        """Metrics safe to send always (participation counts the server knows anyway)."""
        return {}

    def state_dict(self) -> dict[str, np.ndarray]:
        """Plain arrays for the client's own state."""
        return {}

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Continue from :meth:`state_dict` output."""


class _AccountedClient(ClientMechanism, abc.ABC):
    """A client that runs the DP mechanism itself: policy, secret randomness, its own accountant."""

    private = True

    def __init__(
        self,
        cfg: RunConfig,
        *,
        partition_id: int,
        noise_multiplier: float,
        policy: ClientPolicy,
        source: NoiseSource,
    ) -> None:
        super().__init__(cfg, partition_id=partition_id)
        self.noise_multiplier = float(noise_multiplier)
        self.policy = policy
        self.source = source
        self.accountant = Accountant(cfg.accountant)
        self.releases = 0

    @abc.abstractmethod
    def _this_round(self) -> tuple[float, int]:
        """(sample rate, steps) one release adds to the accountant."""

    def admit(self) -> None:
        """Refuse a request below the site's floor, or one that would pass its own budget."""
        self.policy.check_request(
            noise_multiplier=self.noise_multiplier, pre_noise=self.cfg.pre_noise, randomness=self.source.kind
        )
        future = self.accountant.copy()
        sample_rate, steps = self._this_round()
        future.step(self.noise_multiplier, sample_rate, steps)
        self.policy.check_budget(future.epsilon(self.policy.delta))

    def private_metrics(self) -> dict[str, float]:
        """The client's own epsilon at the run's delta, and its DP steps (they reveal its size up to a batch)."""
        return {"epsilon": self.accountant.epsilon(self.cfg.delta), "dp-steps": float(self.accountant.steps)}

    def public_metrics(self) -> dict[str, float]:
        """How many releases this client's accountant charged (the server's ledger must never count fewer)."""
        return {"dp-releases": float(self.releases)}

    def state_dict(self) -> dict[str, np.ndarray]:
        """The accountant's history and the release count."""
        return {**self.accountant.state_dict(), _RELEASES: np.array(self.releases, dtype=np.int64)}

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Continue the accountant (validated copy) and the release count."""
        if not state:
            return
        self.accountant.load_state_dict({k: v for k, v in state.items() if k != _RELEASES})
        self.releases = int(np.asarray(state.get(_RELEASES, 0)))


class SampleLevelClient(_AccountedClient):
    """DP-SGD (Opacus) with the public schedule of :func:`sample_level_plan` and secret batches and noise."""

    def _this_round(self) -> tuple[float, int]:
        plan = sample_level_plan(self.cfg)
        return plan.sample_rate, plan.steps_per_round

    def train(self, model: nn.Module, data: DenoisingSet, server_round: int) -> float:
        """DP-SGD for ``local-epochs`` passes of the public schedule; the accountant steps with every batch."""
        cfg = self.cfg
        engine = SampleLevelDP(
            noise_multiplier=self.noise_multiplier,
            clip_norm=cfg.clip_norm,
            plan=sample_level_plan(cfg),
            accountant=self.accountant,  # the client's own, persisted history: Opacus steps it
        )
        optimizer: torch.optim.Optimizer = make_optimizer(model, cfg.lr, cfg.momentum)
        generator = self.source.torch(server_round, self.partition_id)  # batch masks: on the CPU
        device = next(model.parameters()).device
        noise = None if device.type == "cpu" else self.source.torch(server_round, self.partition_id, device=str(device))
        private_model, optimizer, loader = engine.make_private(
            model,
            optimizer,
            data.as_tensor_dataset(),
            generator=generator,
            trainable=_trainable(model, cfg, server_round),
            noise_generator=noise,
        )
        loss = train_epochs(private_model, loader, optimizer, cfg.local_epochs)
        self.releases += 1
        return loss


def _trainable(model: nn.Module, cfg: RunConfig, server_round: int) -> dict[str, torch.Tensor] | None:
    """The round's public ``dp-keep`` mask as a 0/1 tensor per parameter (None: train every coordinate)."""
    mask = PublicMask.of(cfg, server_round)
    if mask is None:
        return None
    ones = {name: np.ones(tuple(value.shape), dtype=np.float32) for name, value in model.state_dict().items()}
    device = next(model.parameters()).device
    return {name: torch.from_numpy(value).to(device) for name, value in mask.restrict(ones).items()}


class LocalNoiseClient(_AccountedClient):
    """Client-level DP against an untrusted server: pre-noise stages, clip to C, secret N(0, (zC)^2), one step."""

    def _this_round(self) -> tuple[float, int]:
        return 1.0, 1  # the server sees every update: no amplification by sampling

    def privatise(self, delta: dict[str, np.ndarray], server_round: int) -> dict[str, np.ndarray]:
        """Data-independent ``pre-noise`` stages (public seed), clip, secret noise; charge one release.

        Under ``dp-keep`` the round's public mask restricts the update BEFORE clipping, and the noise goes on the
        kept coordinates only (the rest are exactly zero whatever the data, so they need none).
        """
        cfg = self.cfg
        if cfg.pre_noise:  # randk masks and fixed ranges from the public seed release nothing about the data
            seed = derive_seed(cfg.seed, "pre", server_round, self.partition_id)
            delta = decode(encode(delta, cfg.pre_noise, seed=seed))
        generator = self.source.numpy("client-noise", server_round, self.partition_id)
        mask = PublicMask.of(cfg, server_round)
        if mask is None:
            noised, _ = clip_and_noise(
                delta, clip_norm=cfg.clip_norm, noise_multiplier=self.noise_multiplier, generator=generator
            )
        else:
            clipped, _ = clip_update(mask.restrict(delta), cfg.clip_norm)
            noised = mask.add_noise(clipped, self.noise_multiplier * cfg.clip_norm, generator)
        self.accountant.step(self.noise_multiplier, 1.0, 1)
        self.releases += 1
        return noised
