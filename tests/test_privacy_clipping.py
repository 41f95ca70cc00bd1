"""Client-level mechanism: the clip bound (property test), noise scale, central aggregation (statistics)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fedcompress.privacy import central_aggregate, clip_and_noise, clip_update
from fedcompress.tensors import flatten, global_norm


def _chi_square_band(n: int, sigmas: float = 5.0) -> float:
    """Relative tolerance on a sample variance of n normals: its std is sigma^2 * sqrt(2 / (n - 1))."""
    return sigmas * math.sqrt(2.0 / (n - 1))


_shapes = st.lists(hnp.array_shapes(min_dims=1, max_dims=3, max_side=6), min_size=1, max_size=4)
_scales = st.sampled_from([1e-30, 1e-6, 1.0, 1e6, 1e30])


@st.composite
def _updates(draw: st.DrawFn) -> dict[str, np.ndarray]:
    shapes, scale = draw(_shapes), draw(_scales)
    elements = st.floats(-1.0, 1.0, width=32, allow_nan=False)
    return {
        f"t{i}": draw(hnp.arrays(np.float32, shape, elements=elements)) * np.float32(scale)
        for i, shape in enumerate(shapes)
    }


@settings(max_examples=200, deadline=None)
@given(update=_updates(), clip_norm=st.floats(1e-6, 1e6))
def test_clip_bound_holds_and_direction_is_kept(update, clip_norm):
    before = {k: v.copy() for k, v in update.items()}
    clipped, norm = clip_update(update, clip_norm)
    assert global_norm(clipped) <= clip_norm
    assert norm == global_norm(update)
    for name in update:  # the input is not modified
        np.testing.assert_array_equal(update[name], before[name])
    if norm <= clip_norm:
        for name in update:
            np.testing.assert_array_equal(clipped[name], update[name])
    else:  # scaled, not reshaped: same direction
        a, b = (flatten(u)[0].astype(np.float64) for u in (update, clipped))
        assert np.dot(a, b) == pytest.approx(np.linalg.norm(a) * np.linalg.norm(b), rel=1e-5)


def test_clip_accepts_torch_and_refuses_nan():
    clipped, norm = clip_update({"w": torch.full((4,), 3.0)}, 1.0)
    assert norm == pytest.approx(6.0)
    assert global_norm(clipped) == pytest.approx(1.0, rel=1e-6)
    with pytest.raises(ValueError, match="'w'"):
        clip_update({"w": np.array([1.0, np.nan])}, 1.0)
    with pytest.raises(ValueError, match="clip_norm"):
        clip_update({"w": np.ones(3)}, 0.0)


def test_noise_has_std_z_times_c_on_every_coordinate():
    z, c, shapes = 1.3, 0.05, {"a": (300, 300), "b": (7,), "c": (4, 5, 6)}
    update = {name: np.zeros(shape, dtype=np.float32) for name, shape in shapes.items()}
    noised, stats = clip_and_noise(update, clip_norm=c, noise_multiplier=z, generator=np.random.default_rng(7))
    assert stats == {"norm": 0.0, "clipped": False, "noise_std": pytest.approx(z * c)}
    assert {k: v.shape for k, v in noised.items()} == shapes
    assert all(v.dtype == np.float32 for v in noised.values())
    values = flatten(noised)[0].astype(np.float64)
    n, std = values.size, z * c
    assert abs(values.mean()) <= 5 * std / math.sqrt(n)
    assert values.var() / std**2 == pytest.approx(1.0, abs=_chi_square_band(n))
    assert np.count_nonzero(noised["b"]) == 7  # small tensors are noised too


def test_clip_and_noise_clips_first_then_adds_centred_noise():
    update = {"w": np.full(40_000, 0.1, dtype=np.float32)}  # norm 20
    noised, stats = clip_and_noise(update, clip_norm=2.0, noise_multiplier=0.5, generator=np.random.default_rng(1))
    assert stats["clipped"] and stats["norm"] == pytest.approx(20.0, rel=1e-6)
    residual = noised["w"].astype(np.float64) - 0.01  # the clipped value of every coordinate
    assert abs(residual.mean()) <= 5 * 1.0 / math.sqrt(residual.size)
    assert residual.var() == pytest.approx(1.0, abs=_chi_square_band(residual.size))


def test_noise_comes_only_from_the_generator():
    update = {"w": np.ones(100, dtype=np.float32)}
    first, _ = clip_and_noise(update, clip_norm=1.0, noise_multiplier=1.0, generator=np.random.default_rng(3))
    np.random.seed(123)  # the global RNG plays no part
    again, _ = clip_and_noise(update, clip_norm=1.0, noise_multiplier=1.0, generator=np.random.default_rng(3))
    other, _ = clip_and_noise(update, clip_norm=1.0, noise_multiplier=1.0, generator=np.random.default_rng(4))
    np.testing.assert_array_equal(first["w"], again["w"])
    assert not np.array_equal(first["w"], other["w"])
    with pytest.raises(ValueError, match="generator"):
        clip_and_noise(update, clip_norm=1.0, noise_multiplier=1.0, generator=np.random.RandomState(0))


def _client_updates(rng: np.random.Generator, count: int) -> list[dict[str, np.ndarray]]:
    sizes = [0.1, 5.0, 0.3, 20.0, 1.0][:count]  # some inside the clip ball, some far outside
    return [
        {
            "a": (s * rng.standard_normal((200, 100)) / 141.4).astype(np.float32),
            "b": np.full(3, s, np.float32),
        }
        for s in sizes
    ]


def test_central_aggregate_mean_and_std():
    rng = np.random.default_rng(0)
    updates, c, z, expected = _client_updates(rng, 5), 0.5, 1.2, 10.0
    exact = central_aggregate(updates, clip_norm=c, noise_multiplier=0.0, expected_clients=expected, generator=rng)
    clipped_sum = {k: sum(clip_update(u, c)[0][k].astype(np.float64) for u in updates) for k in updates[0]}
    for name in exact:  # without noise: the sum of clipped updates over the FIXED denominator, not len(updates)
        np.testing.assert_allclose(exact[name], clipped_sum[name] / expected, rtol=1e-5, atol=1e-9)
    noisy = central_aggregate(
        updates,
        clip_norm=c,
        noise_multiplier=z,
        expected_clients=expected,
        generator=np.random.default_rng(9),
    )
    residual = np.concatenate([(noisy[k] - clipped_sum[k] / expected).ravel() for k in noisy]).astype(np.float64)
    std = z * c / expected
    assert abs(residual.mean()) <= 5 * std / math.sqrt(residual.size)
    assert residual.var() / std**2 == pytest.approx(1.0, abs=_chi_square_band(residual.size))


def test_central_aggregate_checks_its_inputs():
    rng = np.random.default_rng(0)
    updates = _client_updates(rng, 2)
    kwargs = {"clip_norm": 1.0, "noise_multiplier": 1.0, "generator": rng}
    with pytest.raises(ValueError, match="empty"):
        central_aggregate([], expected_clients=2.0, **kwargs)
    with pytest.raises(ValueError, match="expected_clients"):
        central_aggregate(updates, expected_clients=0.0, **kwargs)
    with pytest.raises(ValueError, match=r"updates\[1\]"):
        central_aggregate([updates[0], {"a": updates[1]["a"]}], expected_clients=2.0, **kwargs)
    before = [{k: v.copy() for k, v in u.items()} for u in updates]
    central_aggregate(updates, expected_clients=2.0, **kwargs)
    for update, copy in zip(updates, before, strict=True):
        for name in update:
            np.testing.assert_array_equal(update[name], copy[name])
