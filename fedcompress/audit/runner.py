"""One audit run: attack a client's update under every condition, check the DP mechanism, write the report.

For each target (batch size B, local steps S) the client is partition ``partition_id`` holding B phantoms
(one batch, so S local epochs are S steps), and what the server decodes comes from the REAL client round
(:mod:`fedcompress.audit.client`). Conditions are run on ``defence_targets``; the other targets are attacked
without defence. The informed-server conditions subtract the noise regenerated from public values first
(:mod:`fedcompress.audit.informed`) and report how far the result is from the client's true clipped update.
Identical decoded updates (a lossless codec) are attacked once and the result is reused, marked
``attack_reused_from``. The DP checks (:mod:`fedcompress.audit.dp_rows`) run in a thread while the attacks run in
their processes. Writes ``audit.json``, ``audit.txt`` and ``grid_b{B}_s{S}.png`` into ``out_dir``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fedcompress.audit.client import observe_update
from fedcompress.audit.conditions import Condition, attacked_model, conditions_from, public_images
from fedcompress.audit.dp_rows import dp_check_rows
from fedcompress.audit.informed import noiseless_update, regenerated_noise, relative_error, subtract
from fedcompress.audit.inversion import THREAT_MODEL, Reconstruction
from fedcompress.audit.jobs import AttackJob, AttackResult, run_jobs
from fedcompress.audit.report import dp_check_table, leakage_table, save_grid, write_json
from fedcompress.audit.scoring import mean_image_baseline, score_reconstruction
from fedcompress.audit.settings import AuditConfig, Target
from fedcompress.data import DenoisingSet, client_data, site_profiles

__all__ = ["SCHEMA_VERSION", "run_audit"]

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2  # 2: rows from the real client round; randomness, adversary, control, recovered_rel_error


def run_audit(config: AuditConfig, out_dir: str | Path) -> dict[str, Any]:
    """Run the audit in ``config``; write ``audit.json`` and image grids to ``out_dir``; return the result."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with _threads(config.threads), ThreadPoolExecutor(1) as background:
        model = attacked_model(config)
        cases = _observe_all(config, model)
        dp_future = background.submit(dp_check_rows, config)  # numpy work, while the attacks run in processes
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
        dp_rows = dp_future.result()
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
    (out / "audit.txt").write_text(leakage_table(rows) + "\n\n" + dp_check_table(dp_rows) + "\n")
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
    recovered_error: float | None
    key: str
    job: AttackJob


def _observe_all(config: AuditConfig, model: nn.Module) -> list[_Case]:
    """Every target's client update under every condition that applies to it (cheap: local training only)."""
    reference = public_images(config, 256, "audit-reference").clean
    noise_std = site_profiles(config.num_partitions, config.non_iid, config.seed)[config.partition_id].noise_std
    defences = conditions_from(config.codecs, config.epsilons, config.combined, config.informed_epsilons)
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
        for condition in defences if target in config.defence_targets else [Condition()]:
            observed = observe_update(config, model, data, condition, local_steps=steps)
            update, error = observed.update, None
            if condition.informed:
                update, error = _informed(config, model, data, condition, update, steps)
            label = f"batch {batch}, {steps} step(s), {condition.name}"
            job = AttackJob(label, update, batch, steps, config.lr, config.momentum, noise_std, data.image_shape)
            key = f"{batch}x{steps}:{_fingerprint(update)}"
            cases.append(
                _Case(
                    target, condition, data.clean, baseline, observed.privacy, observed.payload_bytes, error, key, job
                )
            )
    return cases


def _informed(
    config: AuditConfig,
    model: nn.Module,
    data: DenoisingSet,
    condition: Condition,
    observed: dict[str, np.ndarray],
    steps: int,
) -> tuple[dict[str, np.ndarray], float | None]:
    """The informed server's update (observed minus regenerated noise) and its error vs the true clipped update."""
    noise = regenerated_noise(config, model, condition, batch_size=len(data), local_steps=steps)
    update = subtract(observed, noise)
    if steps != 1:  # the true update of several noisy steps is not defined without the noise
        return update, None
    truth = noiseless_update(model, data, lr=config.lr, clip_norm=config.clip_norm)
    error = relative_error(update, truth)
    log.info("audit: %s: recovered update vs the true clipped one, relative error %.3g", condition.name, error)
    return update, error


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
        **case.condition.describe(),
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
        "recovered_rel_error": case.recovered_error,
        "attack_reused_from": reused_from,
        "seconds": seconds,
    }


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
