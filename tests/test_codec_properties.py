"""Property tests: any update (names, shapes, dtypes, values) through any codec comes back well-formed."""

from __future__ import annotations

import math

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from test_codec_support import ALL_SPECS

from fedcompress.codec import CodecError, CodecState, SharedLayout, decode, encode, encode_with_stats, parse_spec

_names = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=0, max_size=24)
_shapes = st.one_of(
    st.just(()),  # scalars
    hnp.array_shapes(min_dims=1, max_dims=1, min_side=0, max_side=300),  # vectors, empty included
    hnp.array_shapes(min_dims=2, max_dims=4, min_side=0, max_side=9),  # matrices and conv kernels
    st.sampled_from([(64, 32, 3, 3), (3, 1, 7, 7), (1, 97), (97, 1), (0, 5)]),  # larger and odd kernels
)
_dtypes = st.sampled_from([np.float16, np.float32, np.float64, np.int8, np.int32])


@st.composite
def _arrays(draw: st.DrawFn) -> np.ndarray:
    dtype, shape = draw(_dtypes), draw(_shapes)
    rng = np.random.default_rng(draw(st.integers(0, 2**32)))
    kind = draw(st.sampled_from(["normal", "zeros", "constant", "sparse", "heavy"]))
    values = {
        "normal": lambda: rng.standard_normal(shape),
        "zeros": lambda: np.zeros(shape),
        "constant": lambda: np.full(shape, 0.3),
        "sparse": lambda: rng.standard_normal(shape) * (rng.random(shape) < 0.05),
        "heavy": lambda: rng.standard_cauchy(shape).clip(-1e3, 1e3),
    }[kind]()
    if np.issubdtype(dtype, np.integer):
        return (values * 20).clip(-100, 100).astype(dtype)
    scaled = values * draw(st.sampled_from([1e-30, 1e-6, 1.0, 1e4]))
    return scaled.clip(-6e4, 6e4).astype(dtype) if dtype == np.float16 else scaled.astype(dtype)


_updates = st.dictionaries(_names, _arrays(), max_size=6)
_settings = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _flat(update: dict) -> np.ndarray:
    parts = [np.asarray(v, dtype=np.float64).ravel() for v in update.values()]
    return np.concatenate(parts) if parts else np.zeros(0)


@_settings
@given(update=_updates, spec=st.sampled_from(ALL_SPECS), seed=st.integers(0, 2**64 - 1))
def test_any_update_round_trips_with_names_order_and_shapes(update: dict, spec: str, seed: int) -> None:
    payload, stats = encode_with_stats(update, spec, seed=seed)
    decoded = decode(payload)
    assert list(decoded) == list(update)
    for name, value in update.items():
        assert decoded[name].shape == np.shape(value) and decoded[name].dtype == np.float32
        assert np.all(np.isfinite(decoded[name]))
    assert stats.payload_bytes == len(payload)
    # Relative to an all-zero update any error is infinite (the fixed range cannot represent 0 exactly).
    assert math.isfinite(stats.rel_l2_error) or not np.any(_flat(update))
    if spec in ("none", "zstd"):
        np.testing.assert_array_equal(_flat(decoded), _flat(update).astype(np.float32))


@_settings
@given(update=_updates, spec=st.sampled_from(ALL_SPECS), rounds=st.integers(1, 3))
def test_feedback_invariant_holds_for_any_update(update: dict, spec: str, rounds: int) -> None:
    state = CodecState()
    for round_ in range(rounds):
        old = _flat(state.residuals) if state.residuals else np.zeros(_flat(update).size)
        decoded = decode(encode(update, spec, state, seed=round_))
        lhs = _flat(decoded) + _flat(state.residuals)
        rhs = _flat(update).astype(np.float32).astype(np.float64) + old
        np.testing.assert_allclose(lhs, rhs, rtol=1e-12, atol=1e-12 * (1 + np.abs(rhs).max(initial=0)))


@settings(max_examples=40, deadline=None)
@given(shape=_shapes, spec=st.sampled_from(ALL_SPECS))
def test_torch_tensors_encode_like_numpy_arrays(shape: tuple, spec: str) -> None:
    array = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    assert encode({"t": torch.from_numpy(array.copy())}, spec, seed=1) == encode({"t": array}, spec, seed=1)


@_settings
@given(update=_updates, spec=st.sampled_from(ALL_SPECS), seed=st.integers(0, 2**64 - 1))
def test_compact_framing_decodes_to_the_same_update_in_fewer_bytes(update: dict, spec: str, seed: int) -> None:
    full, stats = encode_with_stats(update, spec, seed=seed)
    compact, compact_stats = encode_with_stats(update, spec, seed=seed, framing="compact")
    layout = SharedLayout.of(update, spec)
    for framed in (full, compact):
        decoded = decode(framed, layout=layout)
        assert list(decoded) == list(update)
    expected = decode(full)
    for name, value in decode(compact, layout=layout).items():
        np.testing.assert_array_equal(value, expected[name])
    assert compact_stats.payload_bytes == len(compact) and compact_stats.stages["format"]["table_bytes"] == 0
    full_format, compact_format = stats.stages["format"], compact_stats.stages["format"]
    if parse_spec(spec).entropy is None:  # the same sections; only the header and the table differ
        sections = len(full) - full_format["header_bytes"] - full_format["table_bytes"]
        assert len(compact) - compact_format["header_bytes"] == sections
    assert compact_format["header_bytes"] <= 4 + 1 + 1 + 8 + 8 + 3  # magic, version, form, seed, digest, length


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=200))
def test_arbitrary_bytes_decode_or_raise_codec_error(data: bytes) -> None:
    layout = SharedLayout((("w", (3,)), ("b", (2, 2))), "rotate:4+randk:0.5+sign")
    for payload in (data, b"FCDC\x01" + data, b"FCDC\x02\x00" + data, b"FCDC\x02\x01" + data):
        for given_layout in (None, layout):
            try:
                decoded = decode(payload, layout=given_layout)
            except CodecError:
                continue
            assert all(np.all(np.isfinite(v)) for v in decoded.values())
