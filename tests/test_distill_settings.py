"""Distillation settings (``--set key=value``), progress lines, and the targets' teacher gate."""

from __future__ import annotations

import logging

import pytest
import torch

from fedcompress.distill.distill import fit_to_teacher
from fedcompress.distill.progress import LOGGER_NAME, EpochProgress, format_seconds
from fedcompress.distill.report import ROWS, add_ratios, check_targets, verdict
from fedcompress.distill.settings import DEFAULT_EPOCHS, EDGE_WIDTHS, DistillSettings, settings_help
from fedcompress.errors import ConfigError
from fedcompress.models import build_model


# --- settings -------------------------------------------------------------------------------------------------
def test_set_items_override_the_defaults_with_their_types():
    items = ["student-width=3", "epochs=7", "prune-amount=0.5", "calibration-samples=64", "calibration=percentile",
             "qat-epochs=2", "teacher-margin-db=1.5", "proxy-samples=none"]  # fmt: skip
    settings = DistillSettings.from_overrides(items)
    assert settings == DistillSettings(
        student_width=3, epochs=7, prune_amount=0.5, calibration_samples=64, calibration="percentile",
        qat_epochs=2, teacher_margin_db=1.5, proxy_samples=None,
    )  # fmt: skip
    assert DistillSettings.from_overrides(None) == DistillSettings()
    assert DistillSettings().epochs == DEFAULT_EPOCHS and DistillSettings().finetune == DEFAULT_EPOCHS // 4
    assert DistillSettings(epochs=2).finetune == 1 and DistillSettings(finetune_epochs=9).finetune == 9


def test_set_items_apply_over_a_base():
    base = DistillSettings(epochs=3)
    assert DistillSettings.from_overrides(["prune-amount=0.1"], base) == DistillSettings(epochs=3, prune_amount=0.1)


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("epoch=3", "unknown distill setting 'epoch'"),
        ("epochs=0", "epochs=0"),
        ("epochs=two", "epochs='two'"),
        ("prune-amount=1.0", "prune-amount=1.0"),
        ("calibration=kl", "calibration='kl'"),
        ("student-width=-1", "student-width=-1"),
        ("student-model=resnet", "student-model='resnet'"),
        ("teacher-margin-db=nan", "teacher-margin-db=nan"),
        ("qat-epochs=-1", "qat-epochs=-1"),
        ("epochs", "key=value"),
    ],
)
def test_bad_set_items_fail_naming_the_key_and_value(item, message):
    with pytest.raises(ConfigError, match=message):
        DistillSettings.from_overrides([item])


def test_the_student_width_follows_its_family():
    assert DistillSettings().width_for("unet", 4) == EDGE_WIDTHS["plain"]  # the plain edge student's own width
    assert DistillSettings(student_model="unet").width_for("unet", 4) == 4  # the run's, for its own family
    assert DistillSettings(student_width=6).width_for("unet", 4) == 6


def test_settings_round_trip_as_kebab_case_data():
    settings = DistillSettings(student_width=3, qat_epochs=1)
    data = settings.to_dict()
    assert data["student-width"] == 3 and data["qat-epochs"] == 1
    items = [f"{k}={'none' if v is None else v}" for k, v in data.items()]
    assert DistillSettings.from_overrides(items) == settings
    assert all(key in settings_help() for key in data)


# --- progress ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("seconds", "text"), [(4.2, "4 s"), (185, "3 min 05 s"), (3720, "1 h 02 min")])
def test_format_seconds(seconds, text):
    assert format_seconds(seconds) == text


def test_progress_logs_epoch_loss_and_eta(caplog):
    progress = EpochProgress("distill", 4, every_s=0.0)
    with caplog.at_level(logging.INFO, logger=LOGGER_NAME):
        progress.update(1, 0.5)
        progress.update(4, 0.25)
    assert [r.getMessage().split(",")[0] for r in caplog.records] == ["distill: epoch 1/4", "distill: epoch 4/4"]
    assert "loss 0.25" in caplog.records[-1].getMessage() and "ETA 0 s" in caplog.records[-1].getMessage()


def test_training_reports_its_progress_under_its_label(caplog):
    inputs = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with caplog.at_level(logging.INFO, logger=LOGGER_NAME):
        fit_to_teacher(build_model("unet", 2), build_model("unet", 4), inputs, epochs=2, generator=torch.Generator(),
                       label="qat")  # fmt: skip
    assert any(r.getMessage().startswith("qat: epoch 2/2, loss") and "ETA" in r.getMessage() for r in caplog.records)


# --- targets: the teacher must be worth distilling ------------------------------------------------------------
def rows(teacher_psnr: float, int8_psnr: float, noisy_psnr: float = 25.0) -> list[dict]:
    psnr = {"noisy_input": noisy_psnr, "teacher": teacher_psnr, "student_fp32": int8_psnr + 0.2,
            "student_pruned": int8_psnr + 0.1, "student_int8": int8_psnr}  # fmt: skip
    out = []
    for name in ROWS:
        model = name != "noisy_input"
        out.append({
            "name": name, "runtime": "x", "params": (100_000 if name == "teacher" else 7_000) if model else 0,
            "nonzero_params": 0, "weights_file": f"{name}.pt" if model and name != "student_int8" else None,
            "weights_bytes": 400_000 if name == "teacher" else None, "runnable_file": f"{name}.onnx" if model else None,
            "runnable_bytes": (400_000 if name == "teacher" else 9_000) if model else None, "psnr": psnr[name],
            "ssim": 0.9, "latency_ms": (1.0 if name == "teacher" else 0.3) if model else None,
            "latency_p10_ms": None, "latency_p90_ms": None,
        })  # fmt: skip
    return add_ratios(out)


def test_a_teacher_barely_above_the_noisy_input_is_not_worth_distilling():
    targets = check_targets(rows(teacher_psnr=25.46, int8_psnr=25.2), teacher_margin_db=2.0)
    assert targets["teacher_beats_noisy"]["met"] is False
    assert targets["teacher_beats_noisy"]["measured"] == pytest.approx(0.46)
    assert targets["student_int8_psnr_within_1db"]["measured"] == pytest.approx(0.26)
    assert targets["student_int8_psnr_within_1db"]["met"] is False  # within 1 dB of a teacher that does nothing
    assert "not worth distilling" in targets["student_int8_psnr_within_1db"]["note"]
    assert verdict(targets).startswith("teacher not worth distilling: it beats the noisy input by 0.46 dB")


def test_targets_are_measured_against_the_teacher():
    targets = check_targets(rows(teacher_psnr=30.0, int8_psnr=29.3), teacher_margin_db=2.0)
    assert targets["teacher_beats_noisy"]["met"] and targets["student_int8_psnr_within_1db"]["met"]
    assert targets["int8_file_40x"]["measured"] == pytest.approx(400_000 / 9_000)
    assert targets["int8_latency_3x"]["measured"] == pytest.approx(1 / 0.3)
    assert verdict(targets) == "all targets met"
    missed = check_targets(rows(teacher_psnr=30.0, int8_psnr=28.9), teacher_margin_db=2.0)
    assert verdict(missed) == "missed: student_int8_psnr_within_1db"
