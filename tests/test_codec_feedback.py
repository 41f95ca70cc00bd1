"""Error feedback and the codec state: the residual invariant, tracking, persistence, layout rules."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord
from test_codec_support import ALL_SPECS, LOSSY_SPECS, as_float64, sample_update

from fedcompress.codec import PRESETS, CodecState, SharedLayout, decode, encode, parse_spec
from fedcompress.codec.api import _warn_no_contraction


def _flat(update: dict[str, np.ndarray]) -> np.ndarray:
    return np.concatenate([np.asarray(v, dtype=np.float64).ravel() for v in update.values()])


@pytest.mark.parametrize("spec", ALL_SPECS)
def test_decoded_plus_new_residual_equals_input_plus_old_residual(spec: str) -> None:
    state = CodecState()
    for round_ in range(3):
        update = sample_update(round_)
        old = state.residuals
        payload = encode(update, spec, state, seed=round_)
        decoded, new = as_float64(decode(payload)), state.residuals
        for name, value in update.items():
            lhs = decoded[name] + new[name]
            rhs = np.asarray(value, dtype=np.float64) + old.get(name, 0.0)
            np.testing.assert_allclose(lhs, rhs, rtol=1e-12, atol=1e-12 * (1 + np.abs(rhs).max(initial=0)))


@pytest.mark.parametrize("spec", [*PRESETS, "lowrank:2", "randk:0.25", "q:2:block=16", "q:8:range=0.5"])
def test_sum_of_decoded_tracks_sum_of_raw_over_many_rounds(spec: str) -> None:
    """Feedback keeps the residual bounded: the running sums differ by one bounded residual, not a drift."""
    base, raw, sent, gaps = sample_update(0), 0.0, 0.0, []
    state = CodecState()
    for round_ in range(60):
        noise = sample_update(round_ + 1)
        update = {name: 0.1 * (base[name] + 0.5 * noise[name]) for name in base}
        raw = raw + _flat(update)
        sent = sent + _flat(decode(encode(update, spec, state, seed=round_)))
        np.testing.assert_allclose(raw - sent, _flat(state.residuals), atol=1e-9)
        gaps.append(np.linalg.norm(raw - sent) / np.linalg.norm(_flat(update)))
    assert max(gaps[40:]) <= 1.5 * max(gaps[20:40]) + 1e-6  # not growing
    assert max(gaps) < 50  # bounded by a few updates' worth


def test_low_bit_rounding_with_large_blocks_is_not_a_contraction(caplog: pytest.LogCaptureFixture) -> None:
    """Documented limit: q:1 over 256-value blocks lets the residual grow (and says so); q:4 does not."""
    _warn_no_contraction.cache_clear()  # it warns once per process and stage
    state, update = CodecState(), sample_update(0)
    for round_ in range(30):
        encode(update, "q:1", state, seed=round_)
    assert np.linalg.norm(_flat(state.residuals)) > 100 * np.linalg.norm(_flat(update))
    assert "contraction" in caplog.text
    assert not parse_spec("q:1").quantizer.contracts()  # type: ignore[union-attr]
    assert parse_spec("q:4").quantizer.contracts() and parse_spec("q:2:block=17").quantizer.contracts()  # type: ignore[union-attr]


def test_state_dict_is_flat_plain_arrays_and_round_trips() -> None:
    state = CodecState()
    encode(sample_update(1), "lowrank:2+topk:0.3+q:4", state, seed=1)
    saved = state.state_dict()
    assert all(isinstance(k, str) and type(v) is np.ndarray for k, v in saved.items())
    assert saved["schema_version"].tolist() == [1]
    assert {k.split("/")[0] for k in saved} == {"schema_version", "residual", "q"}
    restored = CodecState.from_state_dict(saved)
    # Continuing from the restored state gives the same bytes as continuing from the original.
    assert encode(sample_update(2), "lowrank:2+topk:0.3+q:4", restored, seed=2) == encode(
        sample_update(2), "lowrank:2+topk:0.3+q:4", state, seed=2
    )


def test_state_survives_flowers_array_record() -> None:
    state = CodecState()
    encode(sample_update(1), "aggressive", state, seed=1)
    record = ArrayRecord({k: Array(np.array(v, order="C")) for k, v in state.state_dict().items()})
    restored = CodecState.from_state_dict({k: v.numpy() for k, v in record.items()})
    for name, value in state.residuals.items():
        np.testing.assert_array_equal(restored.residuals[name], value)


def test_state_dict_and_from_state_dict_copy() -> None:
    state = CodecState()
    encode(sample_update(1), "lowrank:2", state)
    saved = state.state_dict()
    saved["residual/head.bias"][:] = 99.0
    saved["q/mid.conv.weight"][:] = 99.0
    assert not np.any(state.residuals["head.bias"] == 99.0) and not np.any(state.qs["mid.conv.weight"] == 99.0)
    source = state.state_dict()
    restored = CodecState.from_state_dict(source)
    source["residual/head.bias"][:] = 7.0
    assert not np.any(restored.residuals["head.bias"] == 7.0)


@pytest.mark.parametrize(
    ("state_dict", "words"),
    [
        ({}, "schema_version"),
        ({"schema_version": np.array([2])}, "schema_version"),
        ({"schema_version": np.array([1]), "extra/x": np.zeros(2)}, "unknown"),
        ({"schema_version": np.array([1]), "residual/x": np.array([np.nan])}, "NaN"),
        ({"schema_version": np.array([1]), "residual/x": [0.0, 1.0]}, "numpy array"),
        ({"schema_version": np.array([1]), "residual/x": np.array(["a"])}, "float"),
        ({"schema_version": np.array([1]), "q/x": np.zeros(3)}, "2-D"),
    ],
)
def test_from_state_dict_validates(state_dict: dict, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        CodecState.from_state_dict(state_dict)


def test_a_state_used_with_other_tensors_fails_until_reset() -> None:
    state = CodecState()
    encode(sample_update(1), "balanced", state)
    before = state.state_dict()
    other = dict(sample_update(1))
    other["head.bias"] = np.zeros(11, np.float32)
    with pytest.raises(ValueError, match=r"other shape: \['head.bias'\].*reset"):
        encode(other, "balanced", state)
    del other["head.bias"]
    with pytest.raises(ValueError, match="missing from the update"):
        encode(other, "balanced", state)
    assert state.state_dict().keys() == before.keys()  # a refused encode changes nothing
    for key, value in before.items():
        np.testing.assert_array_equal(state.state_dict()[key], value)
    state.reset()
    assert state.residuals == {} and state.qs == {}
    encode(other, "balanced", state)


def test_a_state_accepts_the_same_tensors_in_another_order() -> None:
    state = CodecState()
    update = sample_update(1)
    encode(update, "balanced", state)
    old = state.residuals
    reordered = dict(reversed(list(update.items())))
    decoded = decode(encode(reordered, "balanced", state))
    for name, value in reordered.items():
        np.testing.assert_allclose(decoded[name] + state.residuals[name], value + old[name], atol=1e-12)


def test_a_changed_rank_fails_clearly() -> None:
    state = CodecState()
    encode(sample_update(1), "lowrank:2", state)
    with pytest.raises(ValueError, match="needs"):
        encode(sample_update(1), "lowrank:3", state)


def test_a_failed_encode_leaves_the_state_alone() -> None:
    state = CodecState()
    encode(sample_update(1), "q8", state)
    before = state.state_dict()
    bad = sample_update(2)
    bad["enc.conv.bias"][0] = np.nan
    with pytest.raises(ValueError, match=r"enc\.conv\.bias"):
        encode(bad, "q8", state)
    for key, value in state.state_dict().items():
        np.testing.assert_array_equal(value, before[key])


@pytest.mark.parametrize("spec", LOSSY_SPECS[:3])
def test_load_state_dict_replaces_contents(spec: str) -> None:
    source, target = CodecState(), CodecState()
    encode(sample_update(1), spec, source)
    target.load_state_dict(source.state_dict())
    assert target.state_dict().keys() == source.state_dict().keys()


@pytest.mark.parametrize("spec", ["ultra", "rotate:64+randk:0.1+sign", "rotate:32+q:2:block=8"])
def test_the_invariant_holds_with_compact_framing(spec: str) -> None:
    state, layout = CodecState(), SharedLayout.of(sample_update(0), spec)
    for round_ in range(3):
        update, old = sample_update(round_), state.residuals
        decoded = as_float64(decode(encode(update, spec, state, seed=round_, framing="compact"), layout=layout))
        for name, value in update.items():
            rhs = np.asarray(value, dtype=np.float64) + old.get(name, 0.0)
            np.testing.assert_allclose(decoded[name] + state.residuals[name], rhs, rtol=1e-12, atol=1e-12)


def test_sub_bit_rotated_signs_are_a_contraction_and_unbiased_ones_warn(caplog: pytest.LogCaptureFixture) -> None:
    assert parse_spec("rotate+randk:0.08+sign").quantizer.contracts()  # type: ignore[union-attr]
    assert not parse_spec("rotate+sign:scale=unbiased").quantizer.contracts()  # type: ignore[union-attr]
    _warn_no_contraction.cache_clear()
    encode(sample_update(0), "rotate:64+sign:scale=unbiased", CodecState(), seed=1)
    assert "sign:scale=unbiased" in caplog.text and "contraction" in caplog.text
