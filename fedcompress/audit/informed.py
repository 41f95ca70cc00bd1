"""The informed server: regenerate the client's DP noise from public values, subtract it, then attack.

The server knows the run configuration (seed, round, partition, model, lr, clip norm, noise multiplier). If the
client's DP noise were derived from those values (``dp-randomness = "seeded"``), the server could redraw it. The
generic way: run the same real client round on DUMMY data whose gradient is exactly zero (each target is the
model's own output on its dummy input, so the loss and every per-sample gradient are 0) with the same number of
records (the Poisson masks consume the generator exactly as the client's did) and the public seeded derivation.
That release is pure noise, scaled as the client scales it (clip, sum, noise, divide by the expected batch, lr
and momentum); subtracting its decoded update from the observed one leaves the client's clipped update.

Against the deployed client (secret OS-entropy noise) the regeneration must fail: the difference holds two
independent noise draws and the attack stays at DP level. Against a client that really used seeded noise (the
negative control) it succeeds. The recovery is exact for one local step; with several, the noise of step 1 moves
the weights and later dummy gradients are no longer zero. :func:`noiseless_update` gives the client's true
clipped update for one step, so the audit reports how well the noise was removed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from fedcompress.audit.client import AUDIT_ROUND, client_config, global_weights, release
from fedcompress.audit.conditions import Condition
from fedcompress.audit.inversion import simulate_update
from fedcompress.audit.settings import AuditConfig
from fedcompress.codec import decode
from fedcompress.config import RunConfig
from fedcompress.data.denoising import DenoisingSet
from fedcompress.federation import downlink
from fedcompress.models import model_from_state
from fedcompress.seeding import torch_generator

__all__ = ["dummy_data", "noiseless_update", "regenerated_noise", "relative_error", "subtract"]


def dummy_data(cfg: RunConfig, model: nn.Module, batch_size: int) -> DenoisingSet:
    """``batch_size`` random inputs whose targets are the model's outputs on them: the MSE gradient is exactly 0.

    The outputs come from the model as the client rebuilds it from the downlink (``cfg``), in train mode.
    """
    shape = (batch_size, 1, cfg.image_size, cfg.image_size)
    inputs = torch.rand(shape, generator=torch_generator(cfg.seed, "audit-informed-dummy"))
    payload = downlink.broadcast(global_weights(model), cfg, AUDIT_ROUND)
    client_model = model_from_state(cfg.model, cfg.width, downlink.receive(payload, cfg))
    client_model.train()
    with torch.no_grad():
        targets = client_model(inputs)
    return DenoisingSet(noisy=inputs.numpy().copy(), clean=targets.numpy().astype(np.float32))


def regenerated_noise(
    config: AuditConfig, model: nn.Module, condition: Condition, *, batch_size: int, local_steps: int
) -> dict[str, np.ndarray]:
    """The informed server's estimate of the client's noise: its round on zero-gradient dummy data, seeded noise.

    The same real client round (same configuration, round, partition and number of records) with
    ``dp-randomness = "seeded"``, the public derivation a seeded deployment would use; returns the decoded release.
    """
    public = dataclasses.replace(condition, randomness="seeded", informed=False)
    cfg = client_config(config, public, batch_size=batch_size, local_steps=local_steps)
    dummy = dummy_data(cfg, model, batch_size)
    return decode(release(cfg, model, dummy, partition_id=config.partition_id))


def subtract(observed: Mapping[str, np.ndarray], noise: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``observed - noise`` per tensor (float32)."""
    return {name: (np.asarray(value) - np.asarray(noise[name])).astype(np.float32) for name, value in observed.items()}


def noiseless_update(model: nn.Module, data: DenoisingSet, *, lr: float, clip_norm: float) -> dict[str, np.ndarray]:
    """The client's DP-SGD update for ONE local step without its noise: ``-lr * mean_i clip_C(g_i)``.

    Per-sample gradients are of each record's own MSE (Opacus's ``loss_reduction="mean"``), clipped to
    ``clip_norm`` in L2 over all parameters, summed and divided by the expected batch (all records: sample
    rate 1). Momentum does not act on the first step.
    """
    total: dict[str, np.ndarray] = {}
    for i in range(len(data)):
        step = simulate_update(
            model,
            torch.from_numpy(np.array(data.noisy[i : i + 1])),
            torch.from_numpy(np.array(data.clean[i : i + 1])),
            local_steps=1,
            lr=lr,
            momentum=0.0,
        )
        flat = {name: value.detach().numpy().astype(np.float64) for name, value in step.items()}
        norm = np.sqrt(sum(float(np.sum(v**2)) for v in flat.values())) / lr  # ||g_i||
        scale = min(1.0, clip_norm / norm) if norm > 0 else 1.0
        for name, value in flat.items():
            total[name] = total.get(name, 0.0) + scale * value
    return {name: (value / len(data)).astype(np.float32) for name, value in total.items()}


def relative_error(estimate: Mapping[str, np.ndarray], truth: Mapping[str, np.ndarray]) -> float:
    """``||estimate - truth|| / ||truth||`` over the tensors of ``truth`` (float64; inf when the truth is 0)."""
    diff = sum(
        float(np.sum((np.asarray(estimate[k], np.float64) - np.asarray(v, np.float64)) ** 2)) for k, v in truth.items()
    )
    norm = sum(float(np.sum(np.asarray(v, np.float64) ** 2)) for v in truth.values())
    return float(np.sqrt(diff / norm)) if norm > 0 else float("inf")
