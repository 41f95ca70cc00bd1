"""One audit run: attack a client's update under every condition, check the DP mechanism, write the report.

For each target (batch size B, local steps S) the client is partition ``partition_id`` holding B phantoms
(one batch, so S local epochs are S steps). Conditions are run on ``defence_targets``; the other targets are
attacked without defence. Identical decoded updates (a lossless codec) are attacked once and the result is
reused, marked ``attack_reused_from``. Writes ``audit.json`` and ``grid_b{B}_s{S}.png`` into ``out_dir``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fedcompress.audit.conditions import (
    Condition,
    PrivacySettings,
    attacked_model,
    conditions_from,
    observe_update,
    public_images,
)
from fedcompress.audit.dp_check import check_client_level_dp, client_level_mechanism
from fedcompress.audit.inversion import THREAT_MODEL, Reconstruction
from fedcompress.audit.jobs import AttackJob, AttackResult, run_jobs
from fedcompress.audit.report import leakage_table, save_grid, write_json
from fedcompress.audit.scoring import mean_image_baseline, score_reconstruction
from fedcompress.audit.settings import AuditConfig, Target
from fedcompress.data import client_data, site_profiles
from fedcompress.privacy import clip_and_noise
from fedcompress.seeding import derive_seed

__all__ = ["SCHEMA_VERSION", "run_audit"]

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
_CONTROL_NOISE_SCALE = 0.1


def run_audit(config: AuditConfig, out_dir: str | Path) -> dict[str, Any]:
    """Run the audit in ``config``; write ``audit.json`` and image grids to ``out_dir``; return the result."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with _threads(config.threads):
        model = attacked_model(config)
        cases = _observe_all(config, model)
        jobs: dict[str, AttackJob] = {}
        for case in cases:
            jobs.setdefault(case.key, case.job)
        attack = config.inversion_config()
        results = run_jobs(
            list(jobs.values()),
            model,
            model_name=config.model,
            width=config.width,
            attack=attack,
            workers=config.workers,
            threads=config.threads,
        )
        rows, grids = _report_rows(cases, dict(zip(jobs, results, strict=True)), out)
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


@dataclasses.dataclass(frozen=True)
class _Case:
    """One (target, condition): the client's data, what the server decoded, and the attack job for it."""

    target: Target
    condition: Condition
    clean: np.ndarray
    baseline: dict[str, float]
    privacy: dict[str, Any] | None
    payload_bytes: int
    key: str
    job: AttackJob


def _observe_all(config: AuditConfig, model: nn.Module) -> list[_Case]:
    """Every target's client update under every condition that applies to it (cheap: local training only)."""
    reference = public_images(config, 256, "audit-reference").clean
    noise_std = site_profiles(config.num_partitions, config.non_iid, config.seed)[config.partition_id].noise_std
    privacy = PrivacySettings(delta=config.delta, clip_norm=config.clip_norm, accountant=config.accountant)
    cases = []
    for target in dict.fromkeys((*config.targets, *config.defence_targets)):
        batch, steps = target
        data = client_data(
            config.partition_id,
            config.num_partitions,
            samples_per_client=batch,
            image_size=config.image_size,
            non_iid=config.non_iid,
            seed=config.seed,
        )
        baseline = mean_image_baseline(data.clean, reference).summary()
        defended = target in config.defence_targets
        for condition in (
            conditions_from(config.codecs, config.epsilons, config.combined) if defended else [Condition()]
        ):
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
            label = f"batch {batch}, {steps} step(s), {condition.name}"
            job = AttackJob(
                label, observed.update, batch, steps, config.lr, config.momentum, noise_std, data.image_shape
            )
            key = f"{batch}x{steps}:{_fingerprint(observed.update)}"
            cases.append(
                _Case(target, condition, data.clean, baseline, observed.privacy, observed.payload_bytes, key, job)
            )
    return cases


def _report_rows(
    cases: list[_Case], results: dict[str, AttackResult], out: Path
) -> tuple[list[dict[str, Any]], list[str]]:
    """Score every case, write one grid per target; identical updates share one attack (``attack_reused_from``)."""
    rows: list[dict[str, Any]] = []
    grids: dict[Target, list[tuple[str, np.ndarray, float]]] = {}
    first: dict[str, str] = {}
    for case in cases:
        result = results[case.key]
        reused_from = first.setdefault(case.key, case.condition.name)
        reused = reused_from != case.condition.name
        rec = result.reconstruction
        leak = score_reconstruction(rec.clean, case.clean)
        log.info("audit: %s: PSNR %.2f dB", case.job.label, leak.summary()["psnr_mean"])
        seconds = 0.0 if reused else result.seconds
        rows.append(_row(case, leak, rec, reused_from if reused else None, seconds))
        grids.setdefault(case.target, []).append(
            (case.condition.name, rec.clean[list(leak.assignment)], leak.summary()["psnr_mean"])
        )
    names = []
    for (batch, steps), grid_rows in grids.items():
        clean = next(case.clean for case in cases if case.target == (batch, steps))
        name = f"grid_b{batch}_s{steps}.png"
        save_grid(out / name, clean, grid_rows, title=f"batch {batch}, {steps} local step(s)")
        names.append(name)
    return rows, names


def _row(case: _Case, leak: Any, rec: Reconstruction, reused_from: str | None, seconds: float) -> dict[str, Any]:
    record = case.privacy or {}
    privacy_keys = ("epsilon", "target_epsilon", "delta", "noise_multiplier", "clip_norm", "sample_rate", "steps")
    return {
        "condition": case.condition.name,
        "codec": case.condition.codec,
        "dp": record.get("level", "none"),
        **{k: record.get(k) for k in (*privacy_keys, "accountant")},
        "batch_size": case.target[0],
        "local_steps": case.target[1],
        **leak.summary(),
        "psnr_per_image": list(leak.psnr),
        "ssim_per_image": list(leak.ssim),
        "baseline_psnr_mean": case.baseline["psnr_mean"],
        "baseline_ssim_mean": case.baseline["ssim_mean"],
        "match_loss": rec.match_loss,
        "payload_bytes": case.payload_bytes,
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
    for row in rows:
        log.info(
            "audit: DP check, %s: epsilon >= %.3f (accountant %.3f)",
            row["mechanism"],
            row["epsilon_lower_bound"],
            row["epsilon"],
        )
    return rows


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
