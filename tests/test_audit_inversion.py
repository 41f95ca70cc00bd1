"""The gradient-inversion attack: the real client round, its exact simulation, scoring, leakage above a baseline."""

import numpy as np
import pytest
import torch

from fedcompress.audit import (
    AuditConfig,
    Condition,
    InversionConfig,
    attacked_model,
    conditions_from,
    invert_update,
    mean_image_baseline,
    observe_update,
    score_reconstruction,
    simulate_update,
)
from fedcompress.data import client_data, site_profiles, test_data


def _client(cfg: AuditConfig, batch: int):
    data = client_data(
        0, cfg.num_partitions, samples_per_client=batch, image_size=cfg.image_size, non_iid=cfg.non_iid, seed=cfg.seed
    )
    noise_std = site_profiles(cfg.num_partitions, cfg.non_iid, cfg.seed)[0].noise_std
    return data, noise_std


def test_simulated_local_sgd_matches_the_real_client_round():
    # The attack is only as good as its model of the client: the update of run_client_round (3 local epochs of
    # one batch, SGD with momentum, from the weights the downlink carried) is what it simulates.
    cfg = AuditConfig(width=4, image_size=16)
    model = attacked_model(cfg)
    data, _ = _client(cfg, batch=2)
    observed = observe_update(cfg, model, data, Condition(), local_steps=3)
    simulated = simulate_update(
        model,
        torch.from_numpy(np.array(data.noisy)),
        torch.from_numpy(np.array(data.clean)),
        local_steps=3,
        lr=cfg.lr,
        momentum=cfg.momentum,
    )
    assert set(simulated) == set(observed.update)
    for name, value in simulated.items():
        np.testing.assert_allclose(value.detach().numpy(), observed.update[name], rtol=1e-4, atol=1e-6)
    assert observed.privacy is None and observed.payload_bytes > 0


def test_attack_beats_the_mean_image_without_defence():
    cfg = AuditConfig(image_size=16, seed=1)
    model = attacked_model(cfg)
    data, noise_std = _client(cfg, batch=1)
    observed = observe_update(cfg, model, data, Condition(), local_steps=1)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small convolutions: one thread is faster, and the machine may be shared
    try:
        rec = invert_update(
            model,
            observed.update,
            batch_size=1,
            local_steps=1,
            lr=cfg.lr,
            momentum=cfg.momentum,
            noise_std=noise_std,
            image_shape=data.image_shape,
            config=InversionConfig(iterations=150, restarts=2),
        )
    finally:
        torch.set_num_threads(threads)
    reference = test_data(256, image_size=16, seed=99, num_partitions=cfg.num_partitions, non_iid=cfg.non_iid).clean
    attack = score_reconstruction(rec.clean, data.clean).summary()
    baseline = mean_image_baseline(data.clean, reference).summary()
    # measured: about 21 dB against a 16.5 dB baseline
    assert attack["psnr_mean"] > baseline["psnr_mean"] + 2.0
    assert attack["ssim_mean"] > baseline["ssim_mean"]
    assert rec.match_loss == min(rec.restart_losses) and rec.match_loss < 0.05


def test_scoring_undoes_a_permutation():
    images = test_data(5, image_size=16, seed=3, num_partitions=2, non_iid=0.0).clean
    order = np.array([3, 0, 4, 1, 2])
    leak = score_reconstruction(images[order], images)
    assert [order[i] for i in leak.assignment] == list(range(5))
    assert min(leak.psnr) > 100 and min(leak.ssim) == pytest.approx(1.0)
    summary = leak.summary()
    assert set(summary) == {"psnr_mean", "psnr_max", "ssim_mean", "ssim_max"}
    with pytest.raises(ValueError, match="shape"):
        score_reconstruction(images[:2], images)


def test_conditions_are_named_and_unique():
    conditions = conditions_from(("zstd", "none"), (8.0, 8), (("balanced", 8.0),), (8.0,))
    names = [c.name for c in conditions]
    assert names == [
        "none",
        "codec=zstd",
        "dp=8",
        "codec=balanced+dp=8",
        "dp=8+informed-server",
        "dp=8+seeded-noise+informed-server",
    ]
    assert [c.control for c in conditions] == [False] * 5 + [True]
    assert [c.adversary for c in conditions][-3:] == ["honest-but-curious", "informed", "informed"]
    with pytest.raises(ValueError, match="epsilon"):
        Condition(epsilon=0.0)
    with pytest.raises(ValueError):
        Condition(codec="nonsense:3")
    with pytest.raises(ValueError, match="randomness"):
        Condition(epsilon=8.0, randomness="public")
    with pytest.raises(ValueError, match="need DP"):
        Condition(informed=True)


def test_dp_condition_runs_the_deployed_sample_level_client():
    # dp=8: Opacus DP-SGD in the real round, noise calibrated for epsilon 8 over that round, secret randomness.
    cfg = AuditConfig(width=4, image_size=16)
    model = attacked_model(cfg)
    data, _ = _client(cfg, batch=1)
    first = observe_update(cfg, model, data, Condition(epsilon=8.0), local_steps=1)
    again = observe_update(cfg, model, data, Condition(epsilon=8.0), local_steps=1)
    record = first.privacy
    assert record["level"] == "sample" and record["randomness"] == "secret"
    assert 7.9 < record["epsilon"] <= 8.0 and record["target_epsilon"] == 8.0
    assert record["sample_rate"] == 1.0 and record["steps"] == 1 and record["noise_multiplier"] > 0.5
    # secret noise: the same round on the same data and model releases a different update each time
    assert any(not np.array_equal(first.update[k], again.update[k]) for k in first.update)


def test_invert_rejects_bad_input():
    model = attacked_model(AuditConfig(width=4))
    zeros = {name: np.zeros(tuple(p.shape), np.float32) for name, p in model.named_parameters()}
    kwargs = dict(batch_size=1, local_steps=1, lr=0.1, momentum=0.9, noise_std=0.1, image_shape=(1, 16, 16))
    with pytest.raises(ValueError, match="all zeros"):
        invert_update(model, zeros, **kwargs)
    with pytest.raises(ValueError, match="lacks"):
        invert_update(model, {}, **kwargs)
    with pytest.raises(ValueError, match="restarts"):
        InversionConfig(restarts=0)
