"""Server-side knowledge distillation: the federation's global denoiser (teacher) into a narrow student.

The student, of the same family at a smaller width, learns to reproduce the teacher's OUTPUT on unlabeled
proxy inputs (Hinton et al. 2015, https://arxiv.org/abs/1503.02531; ensemble distillation on server data as
in FedDF, Lin et al. 2020, https://arxiv.org/abs/2006.07242). For a denoiser the soft target is the
teacher's image and the loss is MSE; ``kd_loss`` is the temperature-scaled KL for classifiers. An optional
FitNets hint (Romero et al. 2015, https://arxiv.org/abs/1412.6550) also matches the bottleneck features
through a learned 1x1 regressor. Batches are augmented by the 8 dihedral transforms (flips and quarter
turns), each with the teacher's output on the transformed input, so the student sees 8x the proxy set; those
outputs are computed once up front (unless the hint is on or they would exceed 256 MiB), which more than halves
the cost of a step.

Privacy: the proxy inputs come from ``fedcompress.data.proxy_data``, a stream that holds no client's record,
and the teacher is the global model the federation already released. Distillation is post-processing of that
release: it spends no privacy budget, and the student's guarantee is the teacher's.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fedcompress.config import RunConfig
from fedcompress.data import proxy_data
from fedcompress.distill.hint import BottleneckHint
from fedcompress.distill.progress import EpochProgress
from fedcompress.distill.settings import DEFAULT_EPOCHS
from fedcompress.models import build_model, count_parameters

__all__ = [
    "DEFAULT_EPOCHS",
    "PRIVACY_NOTE",
    "dihedral",
    "distill_model",
    "fit_to_teacher",
    "kd_loss",
    "mse_to_teacher",
]

PRIVACY_NOTE = (
    "distilled on server-side proxy inputs (fedcompress.data.proxy_data: a stream with no client's records); "
    "no client data is touched, so distillation is post-processing of the released global model and spends "
    "no privacy budget: the student's guarantee is the teacher's"
)
_VAL_SHARE = 8  # one proxy image in 8 is held out to measure the fit to the teacher
_CACHE_FLOATS = 2**26  # precompute the teacher's outputs under all 8 transforms up to 256 MiB of them


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 4.0) -> torch.Tensor:
    """Hinton's distillation loss ``KL(softmax(t/T) || softmax(s/T)) * T**2``, averaged over the batch.

    The ``T**2`` factor keeps the gradient's scale independent of ``T`` (Hinton et al. 2015, section 2).
    Logits are ``[batch, classes]``; the teacher's side is detached.
    """
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a positive finite number, got {temperature!r}")
    if student_logits.shape != teacher_logits.shape or student_logits.ndim != 2:
        raise ValueError(
            f"logits must be [batch, classes] of one shape, got {tuple(student_logits.shape)} and "
            f"{tuple(teacher_logits.shape)}"
        )
    log_p_student = F.log_softmax(student_logits / temperature, dim=1)
    log_p_teacher = F.log_softmax(teacher_logits.detach() / temperature, dim=1)
    kl = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)
    return kl * temperature**2


def dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """Transform ``k`` (0-7) of the dihedral group on the last two axes: ``k % 4`` quarter turns, then a flip."""
    if not 0 <= k < 8:
        raise ValueError(f"k must be in 0..7, got {k!r}")
    x = torch.rot90(x, k % 4, dims=(-2, -1))
    return torch.flip(x, dims=(-1,)) if k >= 4 else x


@torch.no_grad()
def mse_to_teacher(student: nn.Module, teacher: nn.Module, inputs: torch.Tensor, batch_size: int = 256) -> float:
    """Mean squared difference between the student's and the teacher's outputs on ``inputs``."""
    total = 0.0
    for i in range(0, len(inputs), batch_size):
        batch = inputs[i : i + batch_size]
        total += float(F.mse_loss(student(batch), teacher(batch), reduction="sum"))
    return total / inputs.numel()


def fit_to_teacher(
    student: nn.Module,
    teacher: nn.Module,
    inputs: torch.Tensor,
    *,
    epochs: int,
    generator: torch.Generator,
    lr: float = 1e-2,
    batch_size: int = 32,
    hint_weight: float = 0.0,
    label: str = "distill",
) -> dict[str, Any]:
    """Train ``student`` IN PLACE to match ``teacher``'s outputs on ``inputs``; return loss measurements.

    Adam with a cosine learning-rate decay; batch order and augmentations come from ``generator`` only.
    Parameters that do not require grad stay fixed, and ``torch.nn.utils.prune`` masks stay applied (so
    this is also the fine-tune after pruning; forward hooks and parametrizations stay too, so it is also
    the quantization-aware fine-tune). ``hint_weight > 0`` adds the bottleneck-feature hint loss.
    Progress (epoch, loss, ETA) is logged under ``label``. Both models are left in eval mode.
    """
    _check_fit_args(epochs, lr, batch_size, hint_weight, len(inputs))
    teacher.eval()
    hint = None
    if hint_weight > 0:
        with torch.random.fork_rng(devices=[]):  # the regressor's initialisation comes from ``generator`` too
            torch.manual_seed(int(torch.randint(2**62, (1,), generator=generator)))
            hint = BottleneckHint(student, teacher)
    params = [p for p in student.parameters() if p.requires_grad]
    params += list(hint.regressor.parameters()) if hint else []
    steps_per_epoch = math.ceil(len(inputs) / batch_size)
    optimizer = torch.optim.Adam(params, lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * steps_per_epoch)
    targets = _teacher_targets(teacher, inputs) if hint is None and 8 * inputs.numel() <= _CACHE_FLOATS else None
    student.train()
    losses: list[float] = []
    progress = EpochProgress(label, epochs)
    try:
        for epoch in range(epochs):
            order = torch.randperm(len(inputs), generator=generator)
            for i in range(0, len(inputs), batch_size):
                k = int(torch.randint(8, (1,), generator=generator))
                index = order[i : i + batch_size]
                batch = dihedral(inputs[index], k)
                if targets is not None:
                    target = targets[k][index]
                else:
                    with torch.no_grad():
                        target = teacher(batch)
                loss = F.mse_loss(student(batch), target)
                if hint is not None:
                    loss = loss + hint_weight * hint.loss()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                losses.append(float(loss.detach()))
            progress.update(epoch + 1, _mean(losses[-steps_per_epoch:]))
    finally:
        if hint is not None:
            hint.close()
        student.eval()
    return {
        "steps": len(losses),
        "loss_first_epoch": _mean(losses[:steps_per_epoch]),
        "loss_last_epoch": _mean(losses[-steps_per_epoch:]),
    }


#: Adam's learning rate for distilling into a family (1e-2 otherwise): the norm-free ReLU stack learned slower at
#: 1e-2 (8 epochs: MSE to the teacher 4.9e-3, against 3.2e-3 at 3e-3).
DISTILL_LR = {"plain": 3e-3}


def distill_model(
    teacher: nn.Module,
    cfg: RunConfig,
    *,
    student_width: int | None = None,
    student_model: str | None = None,
    epochs: int = DEFAULT_EPOCHS,
    generator: torch.Generator,
    hint_weight: float = 0.0,
    proxy: np.ndarray | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Distill ``teacher`` (family ``cfg.model`` at ``cfg.width``) into a fresh student; return it and a report.

    Parameters
    ----------
    teacher : nn.Module
        The global model; it is not changed (only put in eval mode).
    cfg : RunConfig
        Supplies the family, the teacher's width, ``student-width``, and the proxy set's size, image size,
        seed and dataset.
    student_width : int, optional
        Overrides ``cfg.student_width``; in the teacher's family it must be smaller than the teacher's width.
    student_model : str, optional
        The student's family (default: the teacher's, ``cfg.model``); another family must have fewer parameters.
    epochs : int
        Passes over the proxy training images (each batch under a random dihedral transform).
    generator : torch.Generator
        Source of the student's initialisation, the proxy split, batch order and augmentations.
    hint_weight : float
        Weight of the bottleneck hint loss; 0 (default) turns it off.
    proxy : numpy.ndarray, optional
        Proxy inputs ``[n, C, H, W]`` already drawn with ``proxy_data``; drawn from ``cfg`` when omitted.
    """
    width = cfg.student_width if student_width is None else student_width
    family = student_model or cfg.model
    if not isinstance(width, int) or width < 1 or (family == cfg.model and width >= cfg.width):
        raise ValueError(f"student_width must be an int in [1, {cfg.width}) (below the teacher's width), got {width!r}")
    started, cpu_started = time.monotonic(), time.process_time()
    if proxy is None:
        proxy = proxy_data(cfg.proxy_samples, image_size=cfg.image_size, seed=cfg.seed, dataset=cfg.dataset)
    train, val = _split(torch.from_numpy(np.array(proxy, dtype=np.float32)), generator)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(2**62, (1,), generator=generator)))
        student = build_model(family, width=width, in_channels=int(train.shape[1]))
    if count_parameters(student) >= count_parameters(teacher):
        raise ValueError(
            f"a {family} student at width {width} has {count_parameters(student)} parameters, not fewer than the "
            f"teacher's {count_parameters(teacher)}: choose a smaller student-width"
        )
    student.eval()
    teacher.eval()
    before = mse_to_teacher(student, teacher, val)
    lr = DISTILL_LR.get(family, 1e-2)
    fit = fit_to_teacher(student, teacher, train, epochs=epochs, generator=generator, lr=lr, hint_weight=hint_weight)
    teacher_params, student_params = count_parameters(teacher), count_parameters(student)
    report = {
        "model": cfg.model,
        "student_model": family,
        "teacher_width": cfg.width,
        "student_width": width,
        "teacher_params": teacher_params,
        "student_params": student_params,
        "param_ratio": teacher_params / student_params,
        "epochs": epochs,
        "lr": lr,
        "hint_weight": hint_weight,
        "proxy_train": len(train),
        "proxy_val": len(val),
        "mse_to_teacher_before": before,
        "mse_to_teacher_after": mse_to_teacher(student, teacher, val),
        **fit,
        "seconds": time.monotonic() - started,
        "cpu_seconds": time.process_time() - cpu_started,
        "privacy": PRIVACY_NOTE,
    }
    return student, report


@torch.no_grad()
def _teacher_targets(teacher: nn.Module, inputs: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """``[8, n, C, H, W]``: the teacher's output on every input under each dihedral transform."""
    return torch.stack(
        [
            torch.cat([teacher(dihedral(inputs[i : i + batch_size], k)) for i in range(0, len(inputs), batch_size)])
            for k in range(8)
        ]
    )


def _split(inputs: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Hold out one image in ``_VAL_SHARE`` (none below ``_VAL_SHARE`` images: then both are everything)."""
    if len(inputs) < _VAL_SHARE:
        return inputs, inputs
    order = torch.randperm(len(inputs), generator=generator)
    n_val = len(inputs) // _VAL_SHARE
    return inputs[order[n_val:]], inputs[order[:n_val]]


def _check_fit_args(epochs: int, lr: float, batch_size: int, hint_weight: float, n: int) -> None:
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive int, got {epochs!r}")
    if not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a positive finite number, got {lr!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if not (math.isfinite(hint_weight) and hint_weight >= 0):
        raise ValueError(f"hint_weight must be a finite number >= 0, got {hint_weight!r}")
    if n < 1:
        raise ValueError("no proxy inputs: distillation needs at least one image")


def _mean(values: list[float]) -> float:
    return float(sum(values) / len(values)) if values else float("nan")
