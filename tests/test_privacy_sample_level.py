"""Sample-level DP: real Opacus DP-SGD runs report exactly the epsilon of their parameters."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fedcompress.config import RunConfig
from fedcompress.privacy import (
    SampleLevelDP,
    SampleLevelPlan,
    epsilon,
    per_sample_grad_norms,
    sample_level_noise,
    sample_level_plan,
)
from fedcompress.training import train_epochs

DELTA = 1e-5
SAMPLES, BATCH = 24, 8  # 3 batches: q = 1/3, 3 steps per epoch
PLAN = SampleLevelPlan(sample_rate=1 / 3, steps_per_epoch=3, steps_per_round=3, total_steps=6, expected_batch_size=8)


def _tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.GroupNorm(2, 4), nn.ReLU(), nn.Conv2d(4, 1, 3, padding=1))


def _dataset(samples: int = SAMPLES) -> TensorDataset:
    g = torch.Generator().manual_seed(5)
    clean = torch.rand(samples, 1, 8, 8, generator=g)
    noisy = clean + 0.1 * torch.randn(samples, 1, 8, 8, generator=g)
    return TensorDataset(noisy, clean)


def _loader() -> DataLoader:
    return DataLoader(_dataset(), batch_size=BATCH, shuffle=True)


def _train_round(
    state: dict[str, np.ndarray] | None, weights: dict, seed: int, z: float = 1.1, plan=PLAN, samples=SAMPLES
):
    """One client round as the ClientApp does it: fresh objects, reload the accountant, train one epoch."""
    model = _tiny_model()
    model.load_state_dict(weights)
    dp = SampleLevelDP(noise_multiplier=z, clip_norm=0.05, plan=plan, accountant="prv")
    if state is not None:
        dp.load_state_dict(state)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    private_model, private_optimizer, private_loader = dp.make_private(
        model, optimizer, _dataset(samples), generator=torch.Generator().manual_seed(seed)
    )
    train_epochs(private_model, private_loader, private_optimizer, 1)
    return dp, {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_real_dp_sgd_rounds_report_the_epsilon_of_their_parameters():
    weights = _tiny_model().state_dict()
    dp, weights = _train_round(None, weights, seed=1)
    assert dp.sample_rate == pytest.approx(1 / 3)
    assert dp.steps == 3
    assert dp.epsilon(DELTA) == epsilon(1.1, 1 / 3, 3, DELTA)
    state = {k: v.copy() for k, v in dp.state_dict().items()}  # through context.state
    dp, _ = _train_round(state, weights, seed=2)
    assert dp.steps == 6
    assert dp.accountant.history == [(1.1, 1 / 3, 6)]
    assert dp.epsilon(DELTA) == epsilon(1.1, 1 / 3, 6, DELTA)


def test_noise_and_sampling_come_from_the_generator_only():
    weights = _tiny_model().state_dict()
    torch.manual_seed(100)
    _, first = _train_round(None, weights, seed=7)
    torch.manual_seed(200)  # a different global RNG state changes nothing
    _, again = _train_round(None, weights, seed=7)
    _, other = _train_round(None, weights, seed=8)
    for name in first:
        torch.testing.assert_close(first[name], again[name], rtol=0, atol=0)
    assert any(not torch.equal(first[name], other[name]) for name in first)


def test_facade_checks_its_arguments():
    with pytest.raises(ValueError, match="grad_sample_mode"):
        SampleLevelDP(noise_multiplier=1.0, clip_norm=1.0, plan=PLAN, grad_sample_mode="ghost")
    with pytest.raises(ValueError, match="noise_multiplier"):
        SampleLevelDP(noise_multiplier=0.0, clip_norm=1.0, plan=PLAN)
    with pytest.raises(ValueError, match="accountant"):
        SampleLevelDP(noise_multiplier=1.0, clip_norm=1.0, plan=PLAN, accountant="gdp")
    with pytest.raises(ValueError, match="plan"):
        SampleLevelDP(noise_multiplier=1.0, clip_norm=1.0, plan=None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="steps_per_epoch"):
        SampleLevelPlan(sample_rate=0.5, steps_per_epoch=0, steps_per_round=1, total_steps=1, expected_batch_size=1)
    model = _tiny_model()
    dp = SampleLevelDP(noise_multiplier=1.0, clip_norm=1.0, plan=PLAN)
    with pytest.raises(ValueError, match="generator"):
        dp.make_private(model, torch.optim.SGD(model.parameters(), lr=0.1), _dataset(), generator=None)


def test_a_shard_of_another_size_spends_exactly_the_public_schedule():
    """The server plans with samples-per-client; a 25-image shard must spend the same, not more."""
    cfg = RunConfig(dp="sample", noise_multiplier=1.1, samples_per_client=64, batch_size=16, local_epochs=1)
    plan = sample_level_plan(cfg)
    assert (plan.sample_rate, plan.steps_per_epoch, plan.expected_batch_size) == (0.25, 4, 16)
    weights = _tiny_model().state_dict()
    for samples in (25, 200):
        dp, _ = _train_round(None, weights, seed=3, plan=plan, samples=samples)
        assert dp.accountant.history == [(1.1, 0.25, 4)]  # what the ledger charges for one round
        assert dp.epsilon(DELTA) == epsilon(1.1, 0.25, 4, DELTA)


def test_plan_calibrates_once_for_the_horizon():
    cfg = RunConfig(dp="sample", target_epsilon=4.0, num_rounds=3, local_epochs=2, samples_per_client=64)
    plan = sample_level_plan(cfg)
    assert (plan.sample_rate, plan.steps_per_round, plan.total_steps) == (0.25, 8, 24)
    assert sample_level_plan(cfg.replace(samples_per_client=100)).sample_rate == 1 / 7
    z = sample_level_noise(cfg)
    spent = epsilon(z, plan.sample_rate, plan.total_steps, cfg.delta, cfg.accountant)
    assert 0.98 * cfg.target_epsilon <= spent <= cfg.target_epsilon
    assert sample_level_noise(cfg.replace(target_epsilon=0.0, noise_multiplier=1.7)) == 1.7
    with pytest.raises(ValueError, match="dp='sample'"):
        sample_level_noise(RunConfig())


def test_per_sample_grad_norms_match_a_naive_loop():
    model = _tiny_model()
    inputs, targets = _loader().dataset.tensors
    norms = per_sample_grad_norms(model, [(inputs[:10], targets[:10]), (inputs[10:], targets[10:])])
    assert norms.shape == (SAMPLES,)
    for i in (0, 5, 17):
        model.zero_grad()
        nn.functional.mse_loss(model(inputs[i : i + 1]), targets[i : i + 1]).backward()
        naive = torch.sqrt(sum(p.grad.double().pow(2).sum() for p in model.parameters()))
        assert norms[i] == pytest.approx(float(naive), rel=1e-4)
