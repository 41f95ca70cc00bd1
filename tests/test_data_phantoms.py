import time

import numpy as np
import pytest

from fedcompress.data import PHANTOM_KINDS, generate_phantoms


def test_shape_dtype_and_range():
    images = generate_phantoms(50, image_size=24, rng=np.random.default_rng(0))
    assert images.shape == (50, 1, 24, 24)
    assert images.dtype == np.float32
    assert images.min() >= 0.0 and images.max() <= 1.0
    assert images.std(axis=(1, 2, 3)).min() > 0.01  # no blank images


def test_same_generator_state_gives_same_images_and_another_differs():
    a = generate_phantoms(20, rng=np.random.default_rng(7))
    b = generate_phantoms(20, rng=np.random.default_rng(7))
    c = generate_phantoms(20, rng=np.random.default_rng(8))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("kind", range(len(PHANTOM_KINDS)))
def test_each_kind_alone_differs_from_the_others(kind):
    mix = [0.0] * len(PHANTOM_KINDS)
    mix[kind] = 1.0
    images = generate_phantoms(40, image_size=32, rng=np.random.default_rng(kind), mix=mix)
    assert images.shape == (40, 1, 32, 32)
    # the ellipse phantoms have a bright rim at the edge of the body; other kinds fade out there
    rim_share = np.mean(images.max(axis=(1, 2, 3)) > 0.75)
    assert (rim_share == 1.0) if kind == 0 else (rim_share < 1.0)


def test_background_corners_are_empty_like_a_scan():
    images = generate_phantoms(30, image_size=32, rng=np.random.default_rng(1))
    assert np.all(images[:, :, :2, :2] == 0.0)


def test_zero_images_and_large_sizes():
    assert generate_phantoms(0, rng=np.random.default_rng(0)).shape == (0, 1, 32, 32)
    assert generate_phantoms(3, image_size=96, rng=np.random.default_rng(0)).shape == (3, 1, 96, 96)


def test_thousand_images_take_well_under_a_second():
    # CPU time of this process, not wall time, so other jobs on a shared machine do not make it flaky
    generate_phantoms(10, rng=np.random.default_rng(0))  # warm up imports and caches
    best = min(_cpu_seconds(lambda: generate_phantoms(1000, rng=np.random.default_rng(0))) for _ in range(2))
    assert best < 0.6


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n": -1}, "n must be"),
        ({"image_size": 4}, "image_size"),
        ({"mix": (1.0, 0.0)}, "mix"),
        ({"mix": (0.0, 0.0, 0.0)}, "positive sum"),
        ({"mix": (1.0, -0.5, 0.5)}, "non-negative"),
    ],
)
def test_bad_arguments_raise_value_error(kwargs, message):
    args = {"n": 2, "image_size": 16, "rng": np.random.default_rng(0)} | kwargs
    with pytest.raises(ValueError, match=message):
        generate_phantoms(args.pop("n"), **args)


def _cpu_seconds(fn):
    start = time.process_time()
    fn()
    return time.process_time() - start
