import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fedcompress.metrics import MSE_FLOOR, mse, psnr, ssim


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Tiny convolutions gain nothing from threads, and on a busy shared machine spinning threads cost 5x."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def test_known_mse_gives_exact_psnr():
    target = np.zeros((2, 1, 8, 8), dtype=np.float32)
    pred = target + np.float32(0.1)  # mse 0.01 -> 20 dB
    assert mse(pred, target) == pytest.approx(0.01, rel=1e-6)
    assert psnr(pred, target) == pytest.approx(20.0, abs=1e-5)
    assert psnr(pred * 2, target, data_range=2.0) == pytest.approx(20.0, abs=1e-5)


def test_psnr_is_the_mean_of_per_image_values():
    target = torch.zeros(2, 1, 4, 4)
    pred = torch.stack([torch.full((1, 4, 4), 0.1), torch.full((1, 4, 4), 0.01)])  # 20 dB and 40 dB
    assert psnr(pred, target) == pytest.approx(30.0, abs=1e-4)
    assert psnr(pred, target) != pytest.approx(10 * math.log10(1 / mse(pred, target)), abs=0.1)


def test_identical_images_give_finite_psnr_and_ssim_one():
    x = np.random.default_rng(0).random((3, 1, 16, 16)).astype(np.float32)
    assert psnr(x, x) == pytest.approx(10 * math.log10(1 / MSE_FLOOR))  # 120 dB, not inf
    assert ssim(x, x) == pytest.approx(1.0, abs=1e-12)
    assert mse(x, x) == 0.0


def test_ssim_of_constant_images_has_the_closed_form():
    a, b = 0.3, 0.6
    pred, target = np.full((1, 1, 16, 16), a), np.full((1, 1, 16, 16), b)
    c1 = 0.01**2
    assert ssim(pred, target) == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1), rel=1e-9)


def test_ssim_matches_a_direct_window_by_window_computation():
    rng = np.random.default_rng(1)
    x, y = rng.random((1, 1, 13, 12)), rng.random((1, 1, 13, 12))
    g = np.exp(-((np.arange(11) - 5) ** 2) / (2 * 1.5**2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = 0.01**2, 0.03**2
    values = []
    for i in range(13 - 10):
        for j in range(12 - 10):
            px, py = x[0, 0, i : i + 11, j : j + 11], y[0, 0, i : i + 11, j : j + 11]
            mx, my = (w * px).sum(), (w * py).sum()
            vx, vy = (w * px * px).sum() - mx**2, (w * py * py).sum() - my**2
            cov = (w * px * py).sum() - mx * my
            values.append((2 * mx * my + c1) * (2 * cov + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2)))
    assert ssim(x, y) == pytest.approx(np.mean(values), rel=1e-9)


def test_ssim_falls_as_noise_grows_and_is_symmetric():
    rng = np.random.default_rng(2)
    clean = np.clip(rng.random((4, 1, 32, 32)).cumsum(axis=3) / 32, 0, 1)
    scores = [ssim(clean + s * rng.standard_normal(clean.shape), clean) for s in (0.01, 0.05, 0.2)]
    assert 1.0 > scores[0] > scores[1] > scores[2]
    noisy = clean + 0.1 * rng.standard_normal(clean.shape)
    assert ssim(noisy, clean) == pytest.approx(ssim(clean, noisy), rel=1e-12)


def test_small_images_use_a_smaller_window():
    x = np.random.default_rng(3).random((2, 1, 8, 6))
    assert ssim(x, x) == pytest.approx(1.0)
    assert -1.0 <= ssim(x, 1 - x) < 0.5


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), channels=st.integers(1, 3))
def test_numpy_and_torch_inputs_agree_and_ssim_stays_in_bounds(seed, channels):
    rng = np.random.default_rng(seed)
    a = rng.random((2, channels, 12, 12)).astype(np.float32)
    b = rng.random((2, channels, 12, 12)).astype(np.float32)
    for fn in (mse, psnr, ssim):
        assert fn(a, b) == pytest.approx(fn(torch.from_numpy(a), torch.from_numpy(b)), rel=1e-12)
    assert -1.0 <= ssim(a, b) <= 1.0


@pytest.mark.parametrize(
    ("pred", "target", "kwargs", "message"),
    [
        (np.zeros((2, 1, 8, 8)), np.zeros((2, 1, 8, 7)), {}, "same shape|one shape"),
        (np.zeros((1, 8, 8)), np.zeros((1, 8, 8)), {}, r"\[n, C, H, W\]"),
        (np.zeros((0, 1, 8, 8)), np.zeros((0, 1, 8, 8)), {}, "non-empty"),
        ([[0.0]], np.zeros((1, 1, 1, 1)), {}, "torch.Tensor or numpy"),
        (np.zeros((1, 1, 8, 8)), np.zeros((1, 1, 8, 8)), {"data_range": 0.0}, "data_range"),
    ],
)
def test_bad_inputs_raise_value_error(pred, target, kwargs, message):
    fn = psnr if kwargs else mse
    with pytest.raises(ValueError, match=message):
        fn(pred, target, **kwargs)
    if not kwargs:
        with pytest.raises(ValueError):
            ssim(pred, target)
