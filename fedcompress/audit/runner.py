"""One audit run: attack a client's update under every condition, check the DP mechanism, write the report.

For each target (batch size B, local steps S) the client is partition ``partition_id`` holding B phantoms
(one batch, so S local epochs are S steps). Conditions are run on ``defence_targets``; the other targets are
attacked without defence. Identical decoded updates (a lossless codec) are attacked once and the result is
reused, marked ``attack_reused_from``. Writes ``audit.json`` and ``grid_b{B}_s{S}.png`` into ``out_dir``.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fedcompress.audit.conditions import Condition, PrivacySettings, conditions_from, observe_update
from fedcompress.audit.dp_check import check_client_level_dp, client_level_mechanism
from fedcompress.audit.inversion import THREAT_MODEL, InversionConfig, Reconstruction, invert_update
from fedcompress.audit.report import leakage_table, save_grid, write_json
from fedcompress.audit.scoring import mean_image_baseline, score_reconstruction
from fedcompress.audit.settings import AuditConfig, Target
from fedcompress.data import client_data, site_profiles, test_data
from fedcompress.models import build_model
from fedcompress.privacy import clip_and_noise
from fedcompress.seeding import derive_seed, torch_generator
from fedcompress.training import make_loader, make_optimizer, train_epochs

__all__ = ["SCHEMA_VERSION", "attacked_model", "run_audit"]

SCHEMA_VERSION = 1
_PUBLIC_SEED_SPACE = 2**31 - 1
_CONTROL_NOISE_SCALE = 0.1


def attacked_model(config: AuditConfig) -> nn.Module:
    """The global model the server sent: seeded fresh weights, re-drawn or briefly pretrained."""
    with torch.random.fork_rng():
        torch.manual_seed(derive_seed(config.seed, "audit-model"))
        model = build_model(config.model, config.width)
        if config.model_init == "random":
            for module in model.modules():
                weight = getattr(module, "weight", None)
                if hasattr(module, "reset_parameters") and weight is not None and not weight.detach().any():
                    module.reset_parameters()  # type: ignore[operator]
    if config.model_init == "pretrained" and config.pretrain_steps > 0:
        public = _public_images(config, config.pretrain_steps * 16, "audit-pretrain")
        loader = make_loader(public, 16, torch_generator(config.seed, "audit-pretrain"))
        train_epochs(model, loader, make_optimizer(model, config.lr, config.momentum), 1)
    return model


def run_audit(config: AuditConfig, out_dir: str | Path) -> dict[str, Any]:
    """Run the audit in ``config``; write ``audit.json`` and image grids to ``out_dir``; return the result."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with _threads(config.threads):
        model = attacked_model(config)
        reference = _public_images(config, 256, "audit-reference").clean
        rows: list[dict[str, Any]] = []
        grids: list[str] = []
        for target in dict.fromkeys((*config.targets, *config.defence_targets)):
            target_rows, grid = _attack_target(config, model, target, reference, out)
            rows += target_rows
            grids.append(grid)
        dp_rows = _dp_checks(config)
    result = {
        "schema_version": SCHEMA_VERSION,
        "config": config.to_dict(),
        "threat_model": THREAT_MODEL,
        "leakage": rows,
        "dp_check": dp_rows,
        "grids": grids,
        "seconds": time.perf_counter() - started,
    }
    write_json(result, out / "audit.json")
    (out / "audit.txt").write_text(leakage_table(rows) + "\n")
    return result


def _attack_target(
    config: AuditConfig, model: nn.Module, target: Target, reference: np.ndarray, out: Path
) -> tuple[list[dict[str, Any]], str]:
    batch, steps = target
    data = client_data(
        config.partition_id,
        config.num_partitions,
        samples_per_client=batch,
        image_size=config.image_size,
        non_iid=config.non_iid,
        seed=config.seed,
    )
    noise_std = site_profiles(config.num_partitions, config.non_iid, config.seed)[config.partition_id].noise_std
    baseline = mean_image_baseline(data.clean, reference).summary()
    conditions = (
        conditions_from(config.codecs, config.epsilons, config.combined)
        if target in config.defence_targets
        else [Condition()]
    )
    privacy = PrivacySettings(delta=config.delta, clip_norm=config.clip_norm, accountant=config.accountant)
    attack = InversionConfig(
        iterations=config.iterations,
        restarts=config.restarts,
        lr=config.attack_lr,
        tv_weight=config.tv_weight,
        noise_weight=config.noise_weight,
        seed=config.seed,
    )
    done: dict[str, tuple[str, Reconstruction]] = {}
    rows, grid_rows = [], []
    for condition in conditions:
        tick = time.perf_counter()
        observed = observe_update(
            model,
            data,
            condition,
            local_steps=steps,
            lr=config.lr,
            momentum=config.momentum,
            privacy=privacy,
            seed=derive_seed(config.seed, "audit-target", batch, steps),
        )
        key = _fingerprint(observed.update)
        reused_from = done[key][0] if key in done else None
        if reused_from is None:
            rec = invert_update(
                model,
                observed.update,
                batch_size=batch,
                local_steps=steps,
                lr=config.lr,
                momentum=config.momentum,
                noise_std=noise_std,
                image_shape=data.image_shape,
                config=attack,
            )
            done[key] = (condition.name, rec)
        rec = done[key][1]
        leak = score_reconstruction(rec.clean, data.clean)
        rows.append(
            _row(
                condition,
                target,
                observed.privacy,
                leak,
                baseline,
                rec,
                observed.payload_bytes,
                reused_from,
                time.perf_counter() - tick,
            )
        )
        grid_rows.append((condition.name, rec.clean[list(leak.assignment)], leak.summary()["psnr_mean"]))
    name = f"grid_b{batch}_s{steps}.png"
    save_grid(out / name, data.clean, grid_rows, title=f"batch {batch}, {steps} local step(s)")
    return rows, name


def _row(
    condition: Condition,
    target: Target,
    privacy: dict[str, Any] | None,
    leak: Any,
    baseline: dict[str, float],
    rec: Reconstruction,
    payload_bytes: int,
    reused_from: str | None,
    seconds: float,
) -> dict[str, Any]:
    record = privacy or {}
    return {
        "condition": condition.name,
        "codec": condition.codec,
        "dp": record.get("level", "none"),
        **{
            k: record.get(k)
            for k in (
                "epsilon",
                "target_epsilon",
                "delta",
                "noise_multiplier",
                "clip_norm",
                "sample_rate",
                "steps",
                "accountant",
            )
        },
        "batch_size": target[0],
        "local_steps": target[1],
        **leak.summary(),
        "psnr_per_image": list(leak.psnr),
        "ssim_per_image": list(leak.ssim),
        "baseline_psnr_mean": baseline["psnr_mean"],
        "baseline_ssim_mean": baseline["ssim_mean"],
        "match_loss": rec.match_loss,
        "payload_bytes": payload_bytes,
        "attack_reused_from": reused_from,
        "seconds": seconds,
    }


def _dp_checks(config: AuditConfig) -> list[dict[str, Any]]:
    """The check on the real mechanism per codec, then a negative control whose noise is 10x too small."""
    z, c = config.dp_check_noise_multiplier, config.dp_check_clip_norm
    common = {
        "clip_norm": c,
        "noise_multiplier": z,
        "trials": config.dp_check_trials,
        "delta": config.delta,
        "confidence": config.confidence,
        "accountant": config.accountant,
        "seed": config.seed,
    }
    rows = []
    for codec in config.dp_check_codecs:
        mechanism = client_level_mechanism(clip_norm=c, noise_multiplier=z, codec=codec, seed=config.seed)
        result = check_client_level_dp(codec=codec, mechanism=mechanism, **common)  # type: ignore[arg-type]
        rows.append({"mechanism": f"clip_and_noise + codec {codec}", "control": False, **result.to_dict()})

    def too_little_noise(update: Any, generator: np.random.Generator) -> Any:
        noised, _ = clip_and_noise(update, clip_norm=c, noise_multiplier=z * _CONTROL_NOISE_SCALE, generator=generator)
        return noised

    control = check_client_level_dp(mechanism=too_little_noise, **common)  # type: ignore[arg-type]
    rows.append(
        {
            "mechanism": f"negative control: noise x {_CONTROL_NOISE_SCALE}",
            "control": True,
            **control.to_dict(),
        }
    )
    return rows


def _public_images(config: AuditConfig, n: int, stream: str) -> Any:
    """Phantoms the server may hold (drawn from a stream no client uses)."""
    seed = derive_seed(config.seed, stream) % _PUBLIC_SEED_SPACE
    return test_data(
        n,
        image_size=config.image_size,
        seed=seed,
        num_partitions=config.num_partitions,
        non_iid=config.non_iid,
    )


def _fingerprint(update: dict[str, np.ndarray]) -> str:
    digest = hashlib.blake2b(digest_size=16)
    for name, value in update.items():
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(value, dtype=np.float32).tobytes())
    return digest.hexdigest()


@contextlib.contextmanager
def _threads(count: int) -> Iterator[None]:
    """Set torch's CPU thread count for the block (0: unchanged), then restore it."""
    before = torch.get_num_threads()
    if count > 0:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)
