"""Attack jobs: each distinct decoded update is inverted once, in this process or in a small process pool.

Attacks are independent and single-threaded work on tiny convolutions, so ``workers`` processes (``spawn``
start method: no forked OpenMP state) each running one torch thread use a small machine's cores best. Jobs
travel to the workers by ``multiprocessing``'s pickling between this run's own processes; nothing from outside
the run is unpickled. The model goes as its state dict and is rebuilt there.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed

import numpy as np
import torch
from torch import nn

from fedcompress.audit.inversion import InversionConfig, Reconstruction, invert_update
from fedcompress.models import model_from_state

__all__ = ["AttackJob", "AttackResult", "run_jobs"]

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class AttackJob:
    """One inversion: the decoded update and what the attacker knows about the client that sent it."""

    label: str
    update: dict[str, np.ndarray]
    batch_size: int
    local_steps: int
    lr: float
    momentum: float
    noise_std: float
    image_shape: tuple[int, int, int]

    @property
    def cost(self) -> int:
        """Relative cost, to start the longest jobs first."""
        return self.batch_size * self.local_steps


@dataclasses.dataclass(frozen=True)
class AttackResult:
    """A job's reconstruction and the wall-clock seconds it took."""

    reconstruction: Reconstruction
    seconds: float


def run_jobs(
    jobs: Sequence[AttackJob],
    model: nn.Module,
    *,
    model_name: str,
    width: int,
    attack: InversionConfig,
    workers: int,
    threads: int,
) -> list[AttackResult]:
    """Run every job (in order of the returned list), in ``workers`` processes when ``workers > 1``."""
    if workers <= 1 or len(jobs) <= 1:
        return [_attack(model, job, attack) for job in jobs]
    state = {name: value.detach().numpy().copy() for name, value in model.state_dict().items()}
    order = sorted(range(len(jobs)), key=lambda i: -jobs[i].cost)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker, initargs=(threads,)) as pool:
        futures = {pool.submit(_attack_in_worker, model_name, width, state, jobs[i], attack): i for i in order}
        results: dict[int, AttackResult] = {}
        started, total_cost = time.perf_counter(), sum(job.cost for job in jobs)
        for future in as_completed(futures):
            i = futures[future]
            results[i] = future.result()
            done_cost = sum(jobs[k].cost for k in results)
            eta = (time.perf_counter() - started) * (total_cost - done_cost) / done_cost
            log.info(
                "audit: attacked %s in %.0f s (%d of %d, ETA %.0f s)",
                jobs[i].label,
                results[i].seconds,
                len(results),
                len(jobs),
                eta,
            )
        return [results[i] for i in range(len(jobs))]


def _attack(model: nn.Module, job: AttackJob, attack: InversionConfig) -> AttackResult:
    tick = time.perf_counter()
    reconstruction = invert_update(
        model,
        job.update,
        batch_size=job.batch_size,
        local_steps=job.local_steps,
        lr=job.lr,
        momentum=job.momentum,
        noise_std=job.noise_std,
        image_shape=job.image_shape,
        config=attack,
    )
    seconds = time.perf_counter() - tick
    log.info("audit: attacked %s in %.0f s (matching loss %.4f)", job.label, seconds, reconstruction.match_loss)
    return AttackResult(reconstruction, seconds)


def _attack_in_worker(
    model_name: str, width: int, state: dict[str, np.ndarray], job: AttackJob, attack: InversionConfig
) -> AttackResult:
    return _attack(model_from_state(model_name, width, state), job, attack)


def _init_worker(threads: int) -> None:
    if threads > 0:
        torch.set_num_threads(threads)
