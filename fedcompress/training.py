"""Plain local training of a denoiser: the loader, the optimizer, the epoch loop, evaluation and deltas.

Model, optimizer and loader are built separately so that Opacus's ``PrivacyEngine.make_private`` can wrap the
same three objects for DP-SGD; ``train_epochs`` then runs unchanged on the wrapped ones. The loss is the mean
squared error over all pixels (``F.mse_loss``), so per-sample gradients are scaled by ``1 / (C*H*W)``: choose
DP clip norms for that scale (see notes/opacus-and-dp.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from fedcompress import metrics
from fedcompress.data.denoising import DenoisingSet

__all__ = ["apply_delta", "evaluate", "make_loader", "make_optimizer", "state_delta", "train_epochs"]


def make_loader(dataset: DenoisingSet, batch_size: int, generator: torch.Generator) -> DataLoader:
    """A shuffled loader of ``(noisy, clean)`` batches whose order comes from ``generator`` only."""
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if len(dataset) == 0:
        raise ValueError("dataset is empty: a client needs at least one sample to train")
    return DataLoader(dataset.as_tensor_dataset(), batch_size=batch_size, shuffle=True, generator=generator)


def make_optimizer(model: nn.Module, lr: float, momentum: float) -> torch.optim.SGD:
    """SGD with momentum over all of ``model``'s parameters (build it before any Opacus wrapping)."""
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr!r}")
    if not 0 <= momentum < 1:
        raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)


def train_epochs(model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer, epochs: int) -> float:
    """Train for ``epochs`` passes over ``loader``; return the mean per-sample training MSE.

    Empty batches (Poisson sampling in Opacus can draw none) contribute no loss. With a plain optimizer they
    are skipped. With an Opacus ``DPOptimizer`` they still take a step: DP-SGD must add its noise and count
    the step whatever the batch holds, or the released model would depend on the batch being empty without
    the accountant knowing. The model is left in training mode.
    """
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive int, got {epochs!r}")
    private = hasattr(optimizer, "noise_multiplier")  # opacus.optimizers.DPOptimizer and its subclasses
    device = _device(model)
    model.train()
    total, count = 0.0, 0
    for _ in range(epochs):
        for noisy, clean in loader:
            size = int(noisy.shape[0])
            if size == 0 and not private:
                continue
            noisy, clean = noisy.to(device), clean.to(device)
            optimizer.zero_grad(set_to_none=True)
            loss = F.mse_loss(model(noisy), clean) if size else _empty_loss(model, noisy)
            loss.backward()
            optimizer.step()
            if size:
                total += float(loss.detach()) * size
                count += size
    return total / count if count else float("nan")


def _device(model: nn.Module) -> torch.device:
    """Where the model's parameters live; batches are moved there (CPU unless the caller moved the model)."""
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def _empty_loss(model: nn.Module, noisy: torch.Tensor) -> torch.Tensor:
    """A zero loss on an empty batch whose backward still runs Opacus's hooks (empty per-sample grads)."""
    return model(noisy).sum() * 0.0


@torch.no_grad()
def evaluate(model: nn.Module, dataset: DenoisingSet, batch_size: int = 256) -> dict[str, float]:
    """Denoising quality on ``dataset``, as a dict of floats.

    Keys: ``psnr`` and ``ssim`` of the output clipped to ``[0, 1]``, ``loss`` (MSE of the raw output, as in
    training) and ``psnr_noisy`` (the input's PSNR: what doing nothing scores). Runs in eval mode and
    restores the model's previous mode.
    """
    if len(dataset) == 0:
        raise ValueError("dataset is empty: nothing to evaluate")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    device = _device(model)
    was_training = model.training
    model.eval()
    try:
        outputs = [
            model(torch.from_numpy(np.array(dataset.noisy[i : i + batch_size])).to(device)).cpu()
            for i in range(0, len(dataset), batch_size)
        ]
    finally:
        model.train(was_training)
    pred = torch.cat(outputs)
    clean = torch.from_numpy(np.array(dataset.clean))
    clipped = pred.clamp(0.0, 1.0)
    return {
        "loss": metrics.mse(pred, clean),
        "psnr": metrics.psnr(clipped, clean),
        "ssim": metrics.ssim(clipped, clean),
        "psnr_noisy": metrics.psnr(dataset.noisy, dataset.clean),
    }


def state_delta(
    new_state: Mapping[str, torch.Tensor], old_state: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """``new - old`` for every floating-point entry (detached float32 copies); other buffers are skipped."""
    if list(new_state) != list(old_state):
        raise ValueError(f"states have different keys: {_key_difference(new_state, old_state)}")
    delta = {}
    for name, new in new_state.items():
        old = old_state[name]
        if not torch.is_floating_point(new):
            continue
        if new.shape != old.shape:
            raise ValueError(f"state[{name!r}] has shape {tuple(new.shape)} in new and {tuple(old.shape)} in old")
        delta[name] = (new.detach().float() - old.detach().float()).cpu()
    return delta


def apply_delta(
    model_or_state: nn.Module | Mapping[str, torch.Tensor], delta: Mapping[str, Any], scale: float = 1.0
) -> Any:
    """Add ``scale * delta`` to the floating-point entries.

    A module is updated IN PLACE (its parameters keep their identity, so an optimizer holding them stays
    valid) and returned; a state mapping is NOT changed: a new dict is returned. ``delta`` values may be
    tensors or numpy arrays and must cover exactly the floating-point entries, with matching shapes.
    """
    if isinstance(model_or_state, nn.Module):
        state: Mapping[str, torch.Tensor] = model_or_state.state_dict()  # shares storage with the parameters
        target = dict(state)
    else:
        state = model_or_state
        target = {name: value.detach().clone() for name, value in state.items()}
    floats = [name for name, value in state.items() if torch.is_floating_point(value)]
    if sorted(floats) != sorted(delta):
        difference = _key_difference(delta, dict.fromkeys(floats))
        raise ValueError(f"delta does not match the floating-point entries: {difference}")
    with torch.no_grad():
        for name in floats:
            change = torch.as_tensor(delta[name])
            if change.shape != target[name].shape:
                raise ValueError(
                    f"delta[{name!r}] has shape {tuple(change.shape)}, expected {tuple(target[name].shape)}"
                )
            target[name].add_(change.to(dtype=target[name].dtype, device=target[name].device), alpha=scale)
    return model_or_state if isinstance(model_or_state, nn.Module) else target


def _key_difference(a: Mapping[str, Any], b: Mapping[str, Any]) -> str:
    only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
    return f"only in the first: {only_a[:5]}, only in the second: {only_b[:5]}"
