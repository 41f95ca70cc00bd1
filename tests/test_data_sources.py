import numpy as np
import pytest
import torch

import fedcompress.data as fd
from fedcompress.data import DenoisingSet, SiteProfile, client_data, proxy_data, site_profiles

ARGS = {"samples_per_client": 24, "image_size": 16, "non_iid": 0.5, "seed": 3}


def _noise_std(ds: DenoisingSet, profile: SiteProfile | None = None) -> float:
    """Std of the noise away from the clipping bounds; in units of the profile's std when one is given."""
    inside = (ds.clean > 0.3) & (ds.clean < 0.7)
    residual = (ds.noisy - ds.clean)[inside]
    if profile is not None:
        residual = residual / np.sqrt(profile.noise_std**2 + profile.poisson * ds.clean[inside])
    return float(residual.std())


def test_client_shard_shapes_and_ranges():
    ds = client_data(0, 4, **ARGS)
    assert len(ds) == 24 and ds.image_shape == (1, 16, 16)
    for array in (ds.noisy, ds.clean):
        assert array.dtype == np.float32 and array.min() >= 0.0 and array.max() <= 1.0
    assert not np.array_equal(ds.noisy, ds.clean)


def test_client_shards_are_deterministic_and_differ_across_clients_and_seeds():
    a, b = client_data(1, 4, **ARGS), client_data(1, 4, **ARGS)
    np.testing.assert_array_equal(a.noisy, b.noisy)
    np.testing.assert_array_equal(a.clean, b.clean)
    assert not np.array_equal(a.clean, client_data(2, 4, **ARGS).clean)
    assert not np.array_equal(a.clean, client_data(1, 4, **(ARGS | {"seed": 4})).clean)


def test_no_image_is_shared_between_clients_test_and_proxy():
    shards = [client_data(k, 4, **ARGS) for k in range(4)]
    test = fd.test_data(40, image_size=16, seed=3, num_partitions=4, non_iid=0.5)
    proxy = proxy_data(40, image_size=16, seed=3)
    images = [s.clean for s in shards] + [test.clean, proxy]
    flat = np.concatenate([x.reshape(len(x), -1) for x in images])
    assert len(np.unique(flat, axis=0)) == len(flat)


def test_non_iid_zero_sites_have_the_same_noise_and_non_iid_one_differ():
    def shards(non_iid):
        return [client_data(k, 4, **(ARGS | {"non_iid": non_iid, "samples_per_client": 64})) for k in range(4)]

    iid = [_noise_std(ds) for ds in shards(0.0)]
    assert max(iid) / min(iid) < 1.1
    skewed = [_noise_std(ds) for ds in shards(1.0)]
    assert max(skewed) / min(skewed) > 2.0
    for ds, profile in zip(shards(1.0), site_profiles(4, 1.0, seed=3), strict=True):
        assert _noise_std(ds, profile) == pytest.approx(1.0, abs=0.08)  # each shard has its own site's noise


def test_test_set_covers_every_site_profile():
    profiles = site_profiles(3, 1.0, seed=5)
    test = fd.test_data(300, image_size=16, seed=5, num_partitions=3, non_iid=1.0)
    assert len(test) == 300
    for k, profile in enumerate(profiles):
        subset = DenoisingSet(noisy=np.array(test.noisy[k::3]), clean=np.array(test.clean[k::3]))
        assert _noise_std(subset, profile) == pytest.approx(1.0, abs=0.08)


def test_proxy_is_noisy_inputs_over_the_whole_noise_range():
    proxy = proxy_data(64, image_size=16, seed=0)
    assert proxy.shape == (64, 1, 16, 16) and proxy.dtype == np.float32
    assert proxy.min() >= 0.0 and proxy.max() <= 1.0
    np.testing.assert_array_equal(proxy, proxy_data(64, image_size=16, seed=0))
    # background pixels (clean 0) show the noise: their spread varies image to image
    corners = proxy[:, 0, :3, :3].reshape(64, -1)
    assert corners.max(axis=1).min() < 0.1 < corners.max(axis=1).max()


def test_denoising_set_is_read_only_and_hands_out_tensor_copies():
    ds = client_data(0, 2, **ARGS)
    with pytest.raises(ValueError):
        ds.noisy[0, 0, 0, 0] = 1.0
    tensors = ds.as_tensor_dataset()
    noisy, _ = tensors[0]
    assert noisy.dtype == torch.float32 and noisy.shape == (1, 16, 16)
    tensors.tensors[0].zero_()
    assert ds.noisy.any()


def test_denoising_set_refuses_bad_arrays():
    good = np.zeros((2, 1, 8, 8), dtype=np.float32)
    with pytest.raises(ValueError, match="same shape"):
        DenoisingSet(noisy=good, clean=np.zeros((3, 1, 8, 8), dtype=np.float32))
    with pytest.raises(ValueError, match="float32"):
        DenoisingSet(noisy=good.astype(np.float64), clean=good)
    with pytest.raises(ValueError, match=r"\[n, C, H, W\]"):
        DenoisingSet(noisy=good[0], clean=good[0])


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: client_data(4, 4, **ARGS), "partition_id"),
        (lambda: client_data(0, 4, **(ARGS | {"samples_per_client": 0})), "samples_per_client"),
        (lambda: client_data(0, 4, **(ARGS | {"dataset": "no-such-data"})), "neither a built-in"),
        (lambda: fd.test_data(0, image_size=16, seed=0, num_partitions=2, non_iid=0.0), "n must"),
        (lambda: proxy_data(5, image_size=16, seed=0, dataset="/no/such/file.npz"), "neither a built-in"),
    ],
)
def test_bad_arguments_raise_value_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_public_names_import():
    for name in fd.__all__:
        assert getattr(fd, name) is not None
    assert len(set(fd.__all__)) == len(fd.__all__)  # ruff (RUF022) keeps the order sorted
