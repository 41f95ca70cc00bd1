"""Spec strings parse into stages, print back canonically, and bad specs are refused with a useful message."""

from __future__ import annotations

import inspect
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_codec_support import ALL_SPECS

from fedcompress.codec import PRESETS, CodecSpec, data_dependent_stages, parse_spec
from fedcompress.codec.base import get_stage_class, registered_ids


@pytest.mark.parametrize("spec", ALL_SPECS)
def test_canonical_string_parses_back_to_an_equal_spec(spec: str) -> None:
    parsed = parse_spec(spec)
    assert parse_spec(parsed.canonical()) == parsed
    assert parse_spec(parsed.canonical()).canonical() == parsed.canonical()


@pytest.mark.parametrize("spec", ALL_SPECS)
def test_config_is_plain_json_and_round_trips(spec: str) -> None:
    parsed = parse_spec(spec)
    config = json.loads(json.dumps(parsed.get_config()))
    assert CodecSpec.from_config(config) == parsed


def test_presets_expand_to_canonical_strings() -> None:
    assert {"none", "zstd", "q8", "balanced", "aggressive"} <= set(PRESETS)
    for name, canonical in PRESETS.items():
        assert parse_spec(name).canonical() == canonical
        assert parse_spec(canonical).canonical() == canonical
    assert parse_spec("none") == CodecSpec() and CodecSpec().canonical() == "none"


@pytest.mark.parametrize(
    ("spec", "canonical"),
    [
        ("lowrank:4", "lowrank:4:power"),
        ("q:4", "q:4:block=256"),
        (" topk:0.010 + q:8 ", "topk:0.01+q:8:block=256"),
        ("zstd", "zstd:3"),
        ("q:8:range=5e-2", "q:8:range=0.05"),
        ("randk:1", "randk:1"),
        ("rotate", "rotate:4096"),
        ("sign", "sign:scale=mse"),
        ("rotate:256 + randk:0.08 + sign:scale=unbiased", "rotate:256+randk:0.08+sign:scale=unbiased"),
        ("ultra", "topk:0.008+sign:scale=mse+zstd:3"),
    ],
)
def test_defaults_and_spelling_are_normalised(spec: str, canonical: str) -> None:
    assert parse_spec(spec).canonical() == canonical


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("", ["empty", "none"]),
        ("foo:1", ["unknown stage 'foo'", "lowrank"]),
        ("q:9", ["'bits'", "1..8 or 16"]),
        ("q", ["number of bits"]),
        ("q:4:block=0", ["'block'", "1.."]),
        ("q:4:blk=3", ["'blk=3'", "block=N"]),
        ("q:4:block=8:range=1", ["exclusive"]),
        ("q:4:range=-1", ["'range'", "> 0"]),
        ("q:4:range=nan", ["'range'"]),
        ("topk:0", ["'fraction'", "(0, 1]"]),
        ("topk:1.5", ["'fraction'"]),
        ("topk", ["exactly one argument"]),
        ("randk:x", ["'fraction'", "number"]),
        ("lowrank:0", ["'rank'"]),
        ("lowrank:2:qr", ["'method'", "svd"]),
        ("zstd:99", ["'level'", "-7..22"]),
        ("q:4+lowrank:2", ["cannot follow", "order"]),
        ("q:4+q:8", ["cannot follow"]),
        ("topk:0.1+randk:0.1", ["cannot follow"]),
        ("q:4+", ["unknown stage ''"]),
        ("rotate:3", ["'chunk'", "power of two"]),
        ("rotate:0", ["'chunk'", "1.."]),
        ("rotate:2097152", ["'chunk'", "1.."]),
        ("rotate:8:8", ["at most one argument"]),
        ("rotate:x", ["'chunk'", "integer"]),
        ("sign:1", ["'scale=mse' or 'scale=unbiased'"]),
        ("sign:scale=max", ["'scale'", "unbiased"]),
        ("sign:scale=mse:scale=mse", ["one option"]),
        ("topk:0.1+sign:scale=unbiased", ["cannot follow 'topk:0.1'", "randk"]),
        ("rotate+topk:0.1+sign:scale=unbiased", ["cannot follow 'topk:0.1'"]),
        ("q:4+rotate", ["cannot follow", "rotate"]),
        ("randk:0.1+rotate", ["cannot follow"]),
        ("sign+q:4", ["cannot follow"]),
        ("sign+zstd+rotate", ["cannot follow"]),
    ],
)
def test_bad_specs_name_what_is_wrong(spec: str, words: list[str]) -> None:
    with pytest.raises(ValueError) as info:
        parse_spec(spec)
    for word in words:
        assert word in str(info.value)


@pytest.mark.parametrize("codec_id", registered_ids())
def test_stage_attributes_are_exactly_the_constructor_arguments(codec_id: str) -> None:
    cls = get_stage_class(codec_id)
    stage = parse_spec(
        {
            "lowrank": "lowrank:2",
            "rotate": "rotate:8",
            "topk": "topk:0.5",
            "randk": "randk:0.5",
            "q": "q:4",
            "sign": "sign",
            "zstd": "zstd:1",
        }[codec_id]
    ).stages[0]
    arguments = [name for name in inspect.signature(cls.__init__).parameters if name != "self"]
    assert sorted(vars(stage)) == sorted(arguments) == sorted(cls.params)
    assert cls.from_config(stage.get_config()) == stage
    assert isinstance(stage.data_independent, bool)


def test_from_config_refuses_unknown_and_missing_keys() -> None:
    with pytest.raises(ValueError, match="unknown keys"):
        CodecSpec.from_config([{"id": "zstd", "level": 3, "extra": 1}])
    with pytest.raises(ValueError, match="missing keys"):
        CodecSpec.from_config([{"id": "q", "bits": 4}])
    with pytest.raises(ValueError, match="unknown codec stage"):
        CodecSpec.from_config([{"id": "gzip"}])
    with pytest.raises(ValueError, match="'bits'"):
        CodecSpec.from_config([{"id": "q", "bits": 8.0, "block": 256, "range": None}])


@pytest.mark.parametrize(
    ("spec", "dependent"),
    [
        ("randk:0.1+q:8:range=0.05", []),
        ("randk:0.1+q:8:range=0.05+zstd:3", ["zstd:3"]),
        ("randk:0.1+q:8", ["q:8:block=256"]),
        ("none", []),
        ("aggressive", ["topk:0.01", "q:4:block=256", "zstd:3"]),
        ("lowrank:2", ["lowrank:2:power"]),
        ("rotate:64+randk:0.1+q:8:range=0.05", []),
        ("rotate", []),
        ("rotate+randk:0.08+sign", ["sign:scale=mse"]),
    ],
)
def test_data_dependent_stages_are_what_may_not_run_before_dp_noise(spec: str, dependent: list[str]) -> None:
    assert data_dependent_stages(spec) == dependent


_stage_text = st.one_of(
    st.builds(lambda r, m: f"lowrank:{r}" + m, st.integers(1, 64), st.sampled_from(["", ":power", ":svd"])),
    st.integers(0, 20).map(lambda p: f"rotate:{2**p}"),
    st.sampled_from(["sign", "sign:scale=mse", "sign:scale=unbiased"]),
    st.builds(lambda k, f: f"{k}:{f}", st.sampled_from(["topk", "randk"]), st.floats(1e-6, 1.0)),
    st.builds(
        lambda b, opt: f"q:{b}" + opt,
        st.sampled_from([1, 2, 3, 4, 5, 6, 7, 8, 16]),
        st.one_of(
            st.just(""),
            st.integers(1, 4096).map(lambda n: f":block={n}"),
            st.floats(1e-6, 1e6).map(lambda r: f":range={r!r}"),
        ),
    ),
    st.integers(-7, 22).map(lambda level: f"zstd:{level}"),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(_stage_text, min_size=1, max_size=4))
def test_any_well_ordered_spec_round_trips(parts: list[str]) -> None:
    order = {"lowrank": 0, "rotate": 1, "topk": 2, "randk": 2, "q": 3, "sign": 3, "zstd": 4}
    slots = [order[part.split(":")[0]] for part in parts]
    text = "+".join(parts)
    unbiased_after_topk = "sign:scale=unbiased" in parts and any(part.startswith("topk") for part in parts)
    if slots != sorted(set(slots)) or len(set(slots)) != len(slots) or unbiased_after_topk:
        with pytest.raises(ValueError, match="cannot follow"):
            parse_spec(text)
        return
    parsed = parse_spec(text)
    assert parse_spec(parsed.canonical()) == parsed
    assert CodecSpec.from_config(json.loads(json.dumps(parsed.get_config()))) == parsed
