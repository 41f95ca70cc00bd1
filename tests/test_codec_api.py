"""The public API: names, lossless round trips, what decode returns, what encode refuses, the statistics."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_codec_support import ALL_SPECS, sample_update

import fedcompress.codec as codec
from fedcompress.codec import (
    CodecError,
    CodecState,
    DecodeLimits,
    EncodeStats,
    SharedLayout,
    decode,
    encode,
    encode_with_stats,
)
from fedcompress.errors import CodecError as DomainCodecError


def test_all_is_sorted_and_every_name_imports() -> None:
    def isort_key(name: str) -> tuple[int, str]:  # ruff's RUF022 order: CONSTANTS, Classes, functions
        return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)

    assert list(codec.__all__) == sorted(codec.__all__, key=isort_key)
    assert len(set(codec.__all__)) == len(codec.__all__)
    for name in codec.__all__:
        assert getattr(codec, name) is not None
    assert CodecError is DomainCodecError


@pytest.mark.parametrize("spec", ["none", "zstd", "zstd:19", "zstd:-3"])
def test_lossless_codecs_round_trip_exactly(spec: str) -> None:
    update = sample_update(1)
    decoded = decode(encode(update, spec))
    assert list(decoded) == list(update)
    for name, value in update.items():
        assert decoded[name].dtype == np.float32 and decoded[name].shape == value.shape
        np.testing.assert_array_equal(decoded[name], value)


@pytest.mark.parametrize("spec", ALL_SPECS)
def test_every_codec_keeps_names_order_shapes_and_dtype(spec: str) -> None:
    update = sample_update(2)
    decoded = decode(encode(update, spec, seed=5))
    assert list(decoded) == list(update)
    assert all(decoded[n].shape == v.shape and decoded[n].dtype == np.float32 for n, v in update.items())
    assert all(np.all(np.isfinite(v)) and v.flags.writeable for v in decoded.values())


def test_torch_tensors_and_other_dtypes_are_accepted() -> None:
    update = {
        "half": torch.linspace(-1, 1, 12, dtype=torch.float16).reshape(3, 4),
        "double": np.arange(6, dtype=np.float64),
        "ints": np.arange(4, dtype=np.int32),
        "grad": torch.ones(3, requires_grad=True) * 2,
    }
    decoded = decode(encode(update, "none"))
    np.testing.assert_array_equal(decoded["half"], update["half"].float().numpy())
    np.testing.assert_array_equal(decoded["ints"], [0, 1, 2, 3])
    np.testing.assert_array_equal(decoded["grad"], [2, 2, 2])


@pytest.mark.xfail(strict=True, reason="fedcompress.tensors.to_numpy_update cannot convert bfloat16 tensors yet")
def test_bfloat16_tensors_are_accepted() -> None:
    decoded = decode(encode({"bf16": torch.ones(5, dtype=torch.bfloat16)}, "none"))
    np.testing.assert_array_equal(decoded["bf16"], np.ones(5))


def test_encode_does_not_touch_its_input() -> None:
    update = sample_update(3)
    before = {k: v.copy() for k, v in update.items()}
    state = CodecState()
    for _ in range(2):
        encode(update, "aggressive", state)
    for name, value in update.items():
        np.testing.assert_array_equal(value, before[name])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_updates_are_refused_naming_the_tensor(bad: float) -> None:
    update = sample_update(4)
    update["head.bias"][3] = bad
    with pytest.raises(ValueError, match=r"head\.bias"):
        encode(update, "q8")


@pytest.mark.parametrize("seed", [-1, 2**64, 1.5, True, "3"])
def test_bad_seeds_are_refused(seed: object) -> None:
    with pytest.raises(ValueError, match="seed must be"):
        encode(sample_update(), "q8", seed=seed)  # type: ignore[arg-type]


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown stage"):
        encode(sample_update(), "gzip:3")
    with pytest.raises(ValueError, match="state"):
        encode(sample_update(), "q8", {"residual/x": np.zeros(3)})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="dtype"):
        encode({"s": np.array(["a"])}, "none")
    with pytest.raises(ValueError, match="name"):
        encode({"x" * 2000: np.zeros(1, np.float32)}, "none")
    with pytest.raises(ValueError, match="positive integer"):
        DecodeLimits(max_elements=0)


def test_values_too_large_for_the_codec_are_refused() -> None:
    with pytest.raises(ValueError, match="too large"):
        encode({"w": np.array([-3e38, 3e38], dtype=np.float32)}, "q:8")


@pytest.mark.parametrize("spec", ALL_SPECS)
def test_stats_count_exactly_what_is_sent(spec: str) -> None:
    update = sample_update(5)
    payload, stats = encode_with_stats(update, spec, seed=1)
    assert isinstance(stats, EncodeStats)
    assert stats.payload_bytes == len(payload)
    assert stats.dense_bytes == 4 * sum(v.size for v in update.values())
    assert stats.ratio == pytest.approx(stats.dense_bytes / len(payload))
    decoded = decode(payload)
    flat_in = np.concatenate([v.ravel() for v in update.values()]).astype(np.float64)
    flat_out = np.concatenate([v.ravel() for v in decoded.values()])
    expected = np.linalg.norm(flat_out - flat_in) / np.linalg.norm(flat_in)
    assert stats.rel_l2_error == pytest.approx(expected, rel=1e-4, abs=1e-7)
    assert json.loads(json.dumps(stats.to_dict())) == stats.to_dict()
    assert stats.stages["format"]["header_bytes"] > 0
    for stage in stats.spec.split("+") if stats.spec != "none" else []:
        assert stage in stats.stages


def test_stats_report_each_stage() -> None:
    _, stats = encode_with_stats(sample_update(6), "lowrank:2+topk:0.5+q:4+zstd:3")
    low, top, quant, zstd = (stats.stages[s] for s in ("lowrank:2:power", "topk:0.5", "q:4:block=256", "zstd:3"))
    assert low["factored_tensors"] == 3 and 0 < low["rel_l2_error"] < 1
    assert top["kept"] == round(0.5 * top["values_in"]) and top["index_bytes"] > 0
    assert quant["values"] == low["values_out"] + top["kept"]
    assert zstd["bytes_out"] == stats.payload_bytes - stats.stages["format"]["header_bytes"]


def test_dense_float32_payload_is_values_plus_a_small_header() -> None:
    update = {"w": np.zeros(1000, np.float32)}
    assert 4000 < len(encode(update, "none")) < 4000 + 64


def test_encode_is_deterministic_for_a_seed() -> None:
    update = sample_update(7)
    assert encode(update, "aggressive", seed=3) == encode(update, "aggressive", seed=3)
    assert encode(update, "q:2", seed=3) != encode(update, "q:2", seed=4)


def test_an_empty_update_round_trips() -> None:
    for spec in ALL_SPECS:
        assert decode(encode({}, spec)) == {}


# ---- compact framing ----------------------------------------------------------------------------------


def test_a_compact_payload_carries_tens_of_bytes_of_framing() -> None:
    update = {"w": np.zeros(1000, np.float32), "a.realistic.module.name.weight": np.zeros((3, 3), np.float32)}
    compact = encode(update, "none", framing="compact")
    assert len(compact) == 4 * 1009 + 4 + 1 + 1 + 8 + 8 + 2 + 1 + 2  # values + header + section lengths
    assert len(encode(update, "none")) == len(compact) + 39  # the names, shapes and configs, less the digest
    decoded = decode(compact, layout=SharedLayout.of(update, "none"))
    assert list(decoded) == list(update) and decoded["a.realistic.module.name.weight"].shape == (3, 3)


def test_compact_framing_counts_exactly_what_is_sent() -> None:
    update = sample_update(8)
    payload, stats = encode_with_stats(update, "ultra", seed=2, framing="compact")
    assert stats.payload_bytes == len(payload) and stats.ratio == stats.dense_bytes / len(payload)
    assert stats.stages["format"]["table_bytes"] == 0 and stats.stages["format"]["header_bytes"] <= 25
    full, full_stats = encode_with_stats(update, "ultra", seed=2)
    assert full_stats.rel_l2_error == stats.rel_l2_error and len(full) > len(payload)


def test_shared_layout_is_validated_and_normalised() -> None:
    layout = SharedLayout.of({"w": torch.zeros(2, 3), "b": np.zeros(3)}, "ultra")
    assert layout.tensors == (("w", (2, 3)), ("b", (3,)))
    assert layout.codec.canonical() == "topk:0.008+sign:scale=mse+zstd:3"
    spelled = SharedLayout((("w", [2, 3]), ("b", (np.int64(3),))), "topk:0.008+sign+zstd:3")  # type: ignore[arg-type]
    assert layout == spelled
    same = SharedLayout.of({"w": np.zeros((2, 3)), "b": [0, 0, 0]}, "ultra")  # the values do not matter
    assert len(layout.digest) == 8 and layout.digest == same.digest
    for tensors, words in [
        ((("w", (2,)), ("w", (3,))), "unique"),
        (((1, (2,)),), "strings"),
        ((("w", (-1,)),), "integers >= 0"),
        ((("w", (2.5,)),), "integers >= 0"),
    ]:
        with pytest.raises(ValueError, match=words):
            SharedLayout(tensors, "none")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown stage"):
        SharedLayout.of({"w": np.zeros(2)}, "gzip")


@pytest.mark.parametrize("framing", ["compact ", "shared", "", None])
def test_unknown_framings_are_refused(framing: object) -> None:
    with pytest.raises(ValueError, match="framing"):
        encode(sample_update(), "q8", framing=framing)  # type: ignore[arg-type]
