"""The informed server: it regenerates DP noise from public values; that works only against seeded noise."""

import numpy as np
import pytest
import torch

from fedcompress.audit import (
    AuditConfig,
    Condition,
    InversionConfig,
    attacked_model,
    invert_update,
    mean_image_baseline,
    noiseless_update,
    observe_update,
    regenerated_noise,
    relative_error,
    score_reconstruction,
    simulate_update,
)
from fedcompress.audit.client import client_config, client_policy
from fedcompress.audit.informed import dummy_data, subtract
from fedcompress.data import client_data, site_profiles, test_data

CFG = AuditConfig(width=4, image_size=16)


@pytest.fixture(scope="module")
def model():
    return attacked_model(CFG)


def _data(batch: int):
    return client_data(
        0, CFG.num_partitions, samples_per_client=batch, image_size=CFG.image_size, non_iid=CFG.non_iid, seed=CFG.seed
    )


def _recovered(model, data, condition):
    observed = observe_update(CFG, model, data, condition, local_steps=1)
    noise = regenerated_noise(CFG, model, condition, batch_size=len(data), local_steps=1)
    return subtract(observed.update, noise), observed


def test_dummy_data_has_exactly_zero_gradient(model):
    cfg = client_config(CFG, Condition(epsilon=8.0), batch_size=2, local_steps=1)
    dummy = dummy_data(cfg, model, 2)
    step = simulate_update(
        model,
        torch.from_numpy(np.array(dummy.noisy)),
        torch.from_numpy(np.array(dummy.clean)),
        local_steps=1,
        lr=1.0,
        momentum=0.0,
    )
    assert all(float(v.abs().max()) == 0.0 for v in step.values())


@pytest.mark.parametrize("batch", [1, 3])
def test_regeneration_recovers_seeded_noise_and_fails_on_secret_noise(model, batch):
    # The negative control (client used dp-randomness="seeded"): observed - regenerated is the client's clipped
    # update up to float32 rounding. The deployed client (secret noise): two independent draws remain, so the
    # error is about sqrt(2) z sqrt(d) times the update (far above 1).
    data = _data(batch)
    truth = noiseless_update(model, data, lr=CFG.lr, clip_norm=CFG.clip_norm)
    seeded, observed_seeded = _recovered(model, data, Condition(epsilon=8.0, randomness="seeded", informed=True))
    secret, observed_secret = _recovered(model, data, Condition(epsilon=8.0, informed=True))
    assert relative_error(seeded, truth) < 1e-3
    assert relative_error(secret, truth) > 10.0
    # without the subtraction both releases are pure DP outputs, as noisy as the failed regeneration
    assert relative_error(observed_seeded.update, truth) > 10.0 and relative_error(observed_secret.update, truth) > 10.0
    assert observed_secret.privacy["randomness"] == "secret" and observed_seeded.privacy["randomness"] == "seeded"


def test_the_deployed_client_refuses_seeded_noise_unless_the_audit_opts_in():
    secret = client_config(CFG, Condition(epsilon=8.0), batch_size=1, local_steps=1)
    seeded = client_config(CFG, Condition(epsilon=8.0, randomness="seeded"), batch_size=1, local_steps=1)
    assert secret.dp == "sample" and secret.dp_randomness == "secret" and seeded.dp_randomness == "seeded"
    assert secret.samples_per_client == secret.batch_size == 1 and secret.error_feedback == "off"
    assert not client_policy(secret, 0.6).allow_seeded_noise and client_policy(seeded, 0.6).allow_seeded_noise
    assert client_policy(secret, 0.3).min_noise_multiplier == 0.3  # epsilons above ~10 need z under the 0.5 floor


def test_the_attack_succeeds_only_where_the_noise_was_regenerated():
    # The informed server's attack: near the no-defence leakage against seeded noise, at DP level against secret.
    cfg = AuditConfig(image_size=16, seed=1)
    model = attacked_model(cfg)
    data = client_data(0, cfg.num_partitions, samples_per_client=1, image_size=16, non_iid=cfg.non_iid, seed=cfg.seed)
    noise_std = site_profiles(cfg.num_partitions, cfg.non_iid, cfg.seed)[0].noise_std
    reference = test_data(256, image_size=16, seed=99, num_partitions=cfg.num_partitions, non_iid=cfg.non_iid).clean
    baseline = mean_image_baseline(data.clean, reference).summary()["psnr_mean"]
    psnr = {}
    for randomness in ("seeded", "secret"):
        condition = Condition(epsilon=8.0, randomness=randomness, informed=True)
        observed = observe_update(cfg, model, data, condition, local_steps=1)
        noise = regenerated_noise(cfg, model, condition, batch_size=1, local_steps=1)
        rec = invert_update(
            model,
            subtract(observed.update, noise),
            batch_size=1,
            local_steps=1,
            lr=cfg.lr,
            momentum=cfg.momentum,
            noise_std=noise_std,
            image_shape=data.image_shape,
            config=InversionConfig(iterations=150, restarts=2),
        )
        psnr[randomness] = score_reconstruction(rec.clean, data.clean).summary()["psnr_mean"]
    # measured: 23.4 dB against seeded noise, 11.2 against secret noise, mean-image baseline 16.5
    assert psnr["seeded"] > baseline + 2.0
    assert psnr["secret"] < baseline - 3.0
