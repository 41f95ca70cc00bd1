"""The codec benchmark runs; aggressive is >= 100x and ultra (compact framing) >= 300x smaller than float32."""

from __future__ import annotations

import json

import pytest
import torch

import fedcompress.bench.codec as bench
from fedcompress.codec import SharedLayout, decode, encode_with_stats


@pytest.fixture(scope="module")
def updates() -> list[dict]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return bench.realistic_updates(width=16, steps=4)
    finally:
        torch.set_num_threads(threads)


def test_aggressive_is_at_least_100x_smaller_than_dense_float32(updates: list[dict]) -> None:
    payload, stats = encode_with_stats(updates[1], "aggressive", seed=1)
    assert stats.ratio >= 100 and stats.payload_bytes == len(payload)
    assert stats.rel_l2_error < 1.0
    assert list(decode(payload)) == list(updates[1])


@pytest.fixture(scope="module")
def small_updates() -> list[dict]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return bench.realistic_updates(width=8, steps=4)
    finally:
        torch.set_num_threads(threads)


def test_ultra_with_compact_framing_is_at_least_300x_on_small_models_too(
    updates: list[dict], small_updates: list[dict]
) -> None:
    """The header counted: at 28k parameters the self-describing table alone would spend most of the budget."""
    for update in (updates[1], small_updates[1]):
        assert sum(v.size for v in update.values()) > 20_000
        payload, stats = encode_with_stats(update, "ultra", seed=1, framing="compact")
        assert stats.ratio >= 300 and stats.payload_bytes == len(payload)
        assert stats.rel_l2_error < 0.8
        assert list(decode(payload, layout=SharedLayout.of(update, "ultra"))) == list(update)
    _, full = encode_with_stats(small_updates[1], "ultra", seed=1)
    assert full.ratio < 300 and full.stages["format"]["table_bytes"] > 500  # names and shapes of 46 tensors


def test_the_update_is_a_real_training_step_not_noise(updates: list[dict]) -> None:
    sizes = {name: value.size for name, value in updates[1].items()}
    assert 100_000 < sum(sizes.values()) < 1_000_000
    assert any(abs(value).max() > 0 for value in updates[1].values())
    _, stats = encode_with_stats(updates[1], "topk:0.1")
    assert stats.rel_l2_error < 0.9  # a trained delta concentrates its energy; random noise would keep ~0.95


def test_benchmark_reports_every_spec_and_the_references(
    updates: list[dict], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(bench, "realistic_updates", lambda width: updates)
    specs = ["none", "aggressive", "lowrank:2+q:8", "ultra@compact"]
    rows = bench.run_codec_benchmark(specs, repeats=1, json_lines=True)
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [row["spec"] for row in rows] == [line["spec"] for line in lines]
    assert [row["spec"] for row in rows] == [
        "none",
        "aggressive",
        "lowrank:2+q:8",
        "ultra@compact",
        "ref:zstd-3-raw-f32",
        "ref:memcpy",
    ]
    assert [row["framing"] for row in rows[:4]] == ["self-describing"] * 3 + ["compact"]
    assert rows[3]["canonical"] == "topk:0.008+sign:scale=mse+zstd:3" and rows[3]["ratio"] >= 300
    for row in rows:
        assert row["encode_mb_s"] > 0 and row["decode_mb_s"] > 0 and row["payload_bytes"] > 0
    assert rows[0]["ratio"] == pytest.approx(1.0, abs=0.01) and rows[0]["rel_l2_error"] == 0.0
    assert bench.main(["--specs", "q8", "--repeats", "1"]) == 0
    assert "q8" in capsys.readouterr().out


def test_benchmark_refuses_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown stage"):
        bench.run_codec_benchmark(["gzip"])
    with pytest.raises(ValueError, match="'compact'"):
        bench.run_codec_benchmark(["ultra@tiny"])
    with pytest.raises(ValueError, match="width"):
        bench.run_codec_benchmark(["none"], width=0)
    with pytest.raises(ValueError, match="repeats"):
        bench.run_codec_benchmark(["none"], repeats=0)


def test_feedback_rows_measure_how_far_the_sum_of_decoded_updates_drifts(
    small_updates: list[dict], capsys: pytest.CaptureFixture[str]
) -> None:
    rows = bench.feedback_rows(["none", "ultra@compact", "rotate:4096+randk:0.08+sign@compact"], small_updates)
    assert [row["rounds"] for row in rows] == [2, 2, 2]
    assert rows[0]["sum_rel_error"] == 0.0 and rows[0]["ratio"] < 1.0
    assert 0 < rows[1]["sum_rel_error"] < rows[2]["sum_rel_error"] < 1.0
    assert rows[1]["ratio"] >= 300
    assert bench.main(["--feedback-rounds", "2", "--width", "8", "--specs", "ultra@compact", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["spec"] == "ultra@compact"
