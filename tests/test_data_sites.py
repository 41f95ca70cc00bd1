import numpy as np
import pytest

from fedcompress.data import NOISE_STD_RANGE, SiteProfile, site_profiles


def test_non_iid_zero_gives_identical_sites():
    profiles = site_profiles(6, 0.0, seed=3)
    assert len(profiles) == 6
    assert all(p == profiles[0] for p in profiles)
    assert profiles[0] == SiteProfile()  # the base profile: identity rendering


def test_non_iid_one_spreads_noise_contrast_and_mix():
    profiles = site_profiles(8, 1.0, seed=3)
    stds = sorted(p.noise_std for p in profiles)
    assert stds[0] == pytest.approx(NOISE_STD_RANGE[0]) and stds[-1] == pytest.approx(NOISE_STD_RANGE[1])
    assert min(p.contrast for p in profiles) == pytest.approx(0.6)
    assert len({p.gamma for p in profiles}) == 8
    assert all(max(p.mix) == pytest.approx(0.8) for p in profiles)
    assert len({int(np.argmax(p.mix)) for p in profiles}) == 3  # every phantom kind is some site's favourite


def test_spread_grows_with_non_iid_and_is_deterministic():
    def spread(non_iid):
        stds = [p.noise_std for p in site_profiles(5, non_iid, seed=1)]
        return max(stds) / min(stds)

    assert 1.0 == spread(0.0) < spread(0.3) < spread(0.7) < spread(1.0)
    assert site_profiles(5, 0.5, seed=1) == site_profiles(5, 0.5, seed=1)
    assert site_profiles(5, 0.5, seed=1) != site_profiles(5, 0.5, seed=2)


def test_one_client_sits_at_the_centre_of_every_spread():
    (profile,) = site_profiles(1, 1.0, seed=0)
    assert profile.noise_std == pytest.approx(0.08) and profile.gamma == pytest.approx(1.0)


def test_render_applies_gamma_then_contrast():
    x = np.array([0.0, 0.25, 1.0], dtype=np.float32)
    np.testing.assert_allclose(SiteProfile(contrast=0.5, gamma=2.0).render(x), [0.0, 0.03125, 0.5], rtol=1e-6)
    np.testing.assert_array_equal(SiteProfile().render(x), x)


def test_corrupt_has_the_profile_noise_level_and_stays_in_range():
    clean = np.full((200, 1, 16, 16), 0.5, dtype=np.float32)  # mid-grey: clipping never bites at 0.5 +- 4 sigma
    profile = SiteProfile(noise_std=0.1)
    noisy = profile.corrupt(clean, np.random.default_rng(0))
    residual = (noisy - clean).astype(np.float64)
    n = residual.size
    assert abs(residual.mean()) < 4 * 0.1 / np.sqrt(n)
    assert abs(residual.std() - 0.1) < 4 * 0.1 / np.sqrt(2 * n)  # std of a sample std is sigma / sqrt(2n)
    assert noisy.min() >= 0.0 and noisy.max() <= 1.0
    assert np.all(clean == 0.5)  # input untouched


def test_poisson_part_makes_bright_pixels_noisier():
    profile = SiteProfile(noise_std=0.01, poisson=0.01)
    rng = np.random.default_rng(0)
    dark = profile.corrupt(np.full((4000,), 0.1, dtype=np.float32), rng) - 0.1
    bright = profile.corrupt(np.full((4000,), 0.8, dtype=np.float32), rng) - 0.8
    assert dark.std() == pytest.approx(np.sqrt(0.01**2 + 0.001), rel=0.1)
    assert bright.std() == pytest.approx(np.sqrt(0.01**2 + 0.008), rel=0.1)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"noise_std": -0.1},
        {"contrast": 0.0},
        {"contrast": 1.5},
        {"gamma": 0.0},
        {"poisson": float("nan")},
        {"mix": (1.0, 0.0)},
        {"mix": (0.0, 0.0, 0.0)},
    ],
)
def test_bad_profile_raises(kwargs):
    with pytest.raises(ValueError, match="SiteProfile"):
        SiteProfile(**kwargs)


@pytest.mark.parametrize(("num", "non_iid"), [(0, 0.5), (3, -0.1), (3, 1.5), (3, float("nan"))])
def test_bad_site_arguments_raise(num, non_iid):
    with pytest.raises(ValueError):
        site_profiles(num, non_iid, seed=0)
