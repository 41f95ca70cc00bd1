"""Typed run records: what result.json holds round-trips exactly, and readers take partial rows."""

from __future__ import annotations

import json

import pytest

import fedcompress.federation.records as records
from fedcompress.federation.records import RoundRow, RunResult, ServerChecks, as_scores
from fedcompress.federation.results import RunRecorder

SCORES = {"loss": 0.01, "psnr": 22.5, "ssim": 0.7, "psnr_noisy": 21.0}
REAL = {"real_psnr": 20.5, "real_ssim": 0.4, "real_psnr_noisy": 19.9}
CHECKS = ServerChecks(
    failures={"1": "timeout"}, guard_bound=None, guarded={"2": "norm 9 > 3"}, client_epsilon_reported=0.5
)


def row(*, real: bool = True, checks: ServerChecks | None = CHECKS, **changes) -> RoundRow:
    values = {
        "round": 3,
        **as_scores({**SCORES, **(REAL if real else {})}),
        "uplink_bytes": 1000,
        "downlink_bytes": 4000,
        "dense_uplink_bytes": 4000,
        "clients_ok": 2,
        "clients_failed": 1,
        "seconds": 1.5,
        "skipped": False,
        "epsilon": 1.25,
        "checks": checks,
    }
    return RoundRow(**{**values, **changes})


def test_all_is_sorted_and_every_name_imports() -> None:
    def isort_key(name: str) -> tuple[int, str]:  # ruff's RUF022 order: CONSTANTS, Classes, functions
        return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)

    assert list(records.__all__) == sorted(records.__all__, key=isort_key)
    assert all(getattr(records, name) is not None for name in records.__all__)


def test_our_servers_row_has_the_keys_of_result_json_in_their_order() -> None:
    assert list(row().to_dict()) == [
        "round", "loss", "psnr", "ssim", "psnr_noisy", "real_psnr", "real_ssim", "real_psnr_noisy",
        "uplink_bytes", "downlink_bytes", "dense_uplink_bytes", "clients_ok", "clients_failed",
        "failures", "guard_bound", "guarded", "seconds", "skipped", "client_epsilon_reported", "epsilon",
    ]  # fmt: skip


def test_a_baseline_without_our_server_writes_no_checks_and_a_run_without_real_patches_no_real_scores() -> None:
    keys = list(row(real=False, checks=None).to_dict())
    assert keys == [
        "round", "loss", "psnr", "ssim", "psnr_noisy", "uplink_bytes", "downlink_bytes", "dense_uplink_bytes",
        "clients_ok", "clients_failed", "seconds", "skipped", "epsilon",
    ]  # fmt: skip


@pytest.mark.parametrize("real", [True, False])
@pytest.mark.parametrize("checks", [CHECKS, None], ids=["ours", "flower-dp"])
@pytest.mark.parametrize("withheld", [False, True])
def test_rows_round_trip_through_json_exactly(real: bool, checks: ServerChecks | None, withheld: bool) -> None:
    written = row(real=real, checks=checks)
    written = written.withheld() if withheld else written
    text = json.dumps(written.to_dict())
    assert RoundRow.from_dict(json.loads(text)) == written
    assert json.dumps(RoundRow.from_dict(json.loads(text)).to_dict()) == text


def test_withheld_hides_participation_and_byte_counts_but_keeps_the_scores() -> None:
    public = row().withheld()
    assert (public.uplink_bytes, public.dense_uplink_bytes, public.downlink_bytes) == (None, None, None)
    assert (public.clients_ok, public.clients_failed) == (None, None)
    assert public.checks == ServerChecks(failures={}, guard_bound=None, guarded={}, client_epsilon_reported=0.5)
    assert (public.psnr, public.epsilon) == (row().psnr, row().epsilon)


def test_a_partial_row_reads_with_none_for_what_it_lacks_and_a_row_without_round_is_refused() -> None:
    partial = RoundRow.from_dict({"round": 1, "psnr": 21.0, "extra-key": 1})
    assert (partial.round, partial.psnr, partial.loss, partial.checks) == (1, 21.0, None, None)
    with pytest.raises(ValueError, match="no 'round'"):
        RoundRow.from_dict({"psnr": 21.0})


@pytest.mark.parametrize(
    ("values", "fragment"),
    [({"psnr": 1.0}, "missing ['loss', 'ssim', 'psnr_noisy']"), ({**SCORES, "psnr2": 1.0}, "unknown ['psnr2']")],
)
def test_scores_name_what_is_missing_or_unknown(values: dict[str, float], fragment: str) -> None:
    with pytest.raises(ValueError) as caught:
        as_scores(values)
    assert fragment in str(caught.value)


def test_the_recorder_writes_result_json_and_rounds_csv_from_typed_rows(tmp_path) -> None:
    recorder = RunRecorder(tmp_path, {"num-rounds": 2})
    recorder.baseline = {"round": 0, **as_scores(SCORES)}
    recorder.record_round(row(round=1, real=False), total_rounds=2)
    recorder.record_round(row(round=2, real=False, skipped=True, uplink_bytes=None), total_rounds=2)
    written = recorder.write(status="completed", extra={"message": "", "weights": "model.pt"})
    on_disk = json.loads((tmp_path / "result.json").read_text())
    assert list(on_disk) == ["status", "config", "baseline", "rounds", "final", "privacy", "message", "weights"]
    assert RunResult.from_dict(on_disk) == written and written.to_dict() == on_disk
    assert written.finished and written.final["rounds_completed"] == 1
    assert written.final["uplink_bytes"] is None  # one round withheld its count: no total
    header = (tmp_path / "rounds.csv").read_text().splitlines()[0].split(",")
    assert header[:3] == ["round", "loss", "psnr"] and "failures" in header
    restored = RunRecorder(tmp_path, {"num-rounds": 2})
    restored.load_state_dict(json.loads(json.dumps(recorder.state_dict())))
    assert restored.rounds == recorder.rounds


def test_a_result_missing_parts_reads_as_empty() -> None:
    result = RunResult.from_dict({"status": "running", "runner": "flower-dp"})
    assert (result.rounds, result.final, result.baseline, result.extra) == ((), {}, {}, {"runner": "flower-dp"})
    assert not result.finished
