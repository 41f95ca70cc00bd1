"""The codec benchmark runs; the aggressive preset is >= 100x smaller than dense float32 on a real delta."""

from __future__ import annotations

import json

import pytest
import torch

import fedcompress.bench.codec as bench
from fedcompress.codec import decode, encode_with_stats


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


def test_the_update_is_a_real_training_step_not_noise(updates: list[dict]) -> None:
    sizes = {name: value.size for name, value in updates[1].items()}
    assert 100_000 < sum(sizes.values()) < 1_000_000
    assert any(abs(value).max() > 0 for value in updates[1].values())
    _, stats = encode_with_stats(updates[1], "topk:0.1")
    assert stats.rel_l2_error < 0.9  # a trained delta concentrates its energy; random noise would keep ~0.95


def test_benchmark_reports_every_spec_and_the_references(
    updates: list[dict], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(bench, "realistic_updates", lambda: updates)
    rows = bench.run_codec_benchmark(["none", "aggressive", "lowrank:2+q:8"], repeats=1, json_lines=True)
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [row["spec"] for row in rows] == [line["spec"] for line in lines]
    assert [row["spec"] for row in rows] == [
        "none",
        "aggressive",
        "lowrank:2+q:8",
        "ref:zstd-3-raw-f32",
        "ref:memcpy",
    ]
    for row in rows:
        assert row["encode_mb_s"] > 0 and row["decode_mb_s"] > 0 and row["payload_bytes"] > 0
    assert rows[0]["ratio"] == pytest.approx(1.0, abs=0.01) and rows[0]["rel_l2_error"] == 0.0
    assert bench.main(["--specs", "q8", "--repeats", "1"]) == 0
    assert "q8" in capsys.readouterr().out


def test_benchmark_refuses_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown stage"):
        bench.run_codec_benchmark(["gzip"])
    with pytest.raises(ValueError, match="repeats"):
        bench.run_codec_benchmark(["none"], repeats=0)
