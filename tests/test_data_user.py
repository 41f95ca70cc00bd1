import matplotlib.image
import numpy as np
import pytest

import fedcompress.data as fd
from fedcompress.data import client_data, load_user_images, proxy_data, site_profiles


def _ids(images: np.ndarray) -> set[int]:
    """Images written by ``_tagged`` carry their index in the top-left pixel."""
    return {round(float(v) * 255) for v in images[:, 0, 0, 0]}


def _tagged(n: int, size: int = 8, start: int = 0) -> np.ndarray:
    """uint8 [n, size, size] images whose top-left pixel is their id and the rest varies."""
    rng = np.random.default_rng(start)
    images = rng.integers(0, 256, (n, size, size), dtype=np.uint8)
    images[:, 0, 0] = np.arange(start, start + n, dtype=np.uint8)
    return images


def _npz(tmp_path, **arrays):
    path = tmp_path / "data.npz"
    np.savez(path, **arrays)
    return str(path)


def test_npz_splits_load_as_gray_floats_in_unit_range(tmp_path):
    path = _npz(tmp_path, train_images=_tagged(10), test_images=_tagged(4, start=100), train_labels=np.zeros(10))
    splits = load_user_images(path, 8)
    assert set(splits) == {"train", "test"}
    assert splits["train"].shape == (10, 1, 8, 8) and splits["train"].dtype == np.float32
    np.testing.assert_allclose(splits["train"][:, 0], _tagged(10) / 255.0, atol=1e-6)
    with pytest.raises(ValueError):
        splits["train"][0, 0, 0, 0] = 0.0  # cached and shared: read-only
    del splits["train"]
    assert "train" in load_user_images(path, 8)  # the cache hands out a fresh dict each time


def test_rgb_becomes_luma_and_images_are_resized_with_antialiasing(tmp_path):
    rgb = np.zeros((3, 16, 16, 3), dtype=np.uint8)
    rgb[..., 1] = 255  # pure green
    rgb[:, :, ::2] = 0  # stripes one pixel wide: antialiased downsizing averages them
    splits = load_user_images(_npz(tmp_path, train_images=rgb), 8)
    assert splits["train"].shape == (3, 1, 8, 8)
    np.testing.assert_allclose(splits["train"][..., 1:-1], 0.587 / 2, atol=1e-3)  # edge columns see one stripe


def test_png_folder_flat_and_with_split_subfolders(tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    for i, image in enumerate(_tagged(5)):
        matplotlib.image.imsave(flat / f"img{i}.png", image, cmap="gray", vmin=0, vmax=255)
    (flat / "notes.txt").write_text("not an image")
    splits = load_user_images(flat, 8)
    assert set(splits) == {"train"} and splits["train"].shape == (5, 1, 8, 8)
    np.testing.assert_allclose(splits["train"][:, 0], _tagged(5) / 255.0, atol=0.01)

    nested = tmp_path / "nested"
    for split, n in (("train", 6), ("test", 2)):
        (nested / split).mkdir(parents=True)
        for i, image in enumerate(_tagged(n, size=12)):
            matplotlib.image.imsave(nested / split / f"{i}.png", image, cmap="gray", vmin=0, vmax=255)
    splits = load_user_images(nested, 8)
    assert {k: v.shape for k, v in splits.items()} == {"train": (6, 1, 8, 8), "test": (2, 1, 8, 8)}


def test_clients_test_and_proxy_get_disjoint_records_from_a_user_file(tmp_path):
    train = _tagged(60, size=16)
    path = _npz(tmp_path, train_images=train, test_images=_tagged(10, size=16, start=200))
    kwargs = {"samples_per_client": 100, "image_size": 16, "non_iid": 0.0, "seed": 1, "dataset": path}
    shards = [client_data(k, 3, **kwargs) for k in range(3)]
    ids = [_ids(s.clean) for s in shards]
    assert sum(len(i) for i in ids) == sum(len(s) for s in shards)  # no duplicates within or across clients
    assert not (ids[0] & ids[1] or ids[1] & ids[2] or ids[0] & ids[2])
    test = fd.test_data(50, image_size=16, seed=1, num_partitions=3, non_iid=0.0, dataset=path)
    assert _ids(test.clean) == set(range(200, 210))  # the file's own test split, all of it
    # the proxy set is noisy: identify each image as its nearest file image (random patterns are far apart)
    proxy = proxy_data(50, image_size=16, seed=1, dataset=path).reshape(-1, 1, 256)
    distances = np.linalg.norm(proxy - train.reshape(1, 60, 256) / 255.0, axis=2)
    nearest = np.sort(distances, axis=1)
    assert np.all(nearest[:, 0] < 0.5 * nearest[:, 1])
    proxy_ids = set(np.argmin(distances, axis=1).tolist())
    assert len(proxy_ids) == 12  # val is carved out of train: a fifth of 60 ...
    assert not proxy_ids & set().union(*ids)  # ... away from every client


def test_user_client_shard_is_capped_and_skewed_by_intensity(tmp_path):
    images = np.repeat(np.arange(0, 240, 4, dtype=np.uint8)[:, None, None], 8, axis=1).repeat(8, axis=2)
    path = _npz(tmp_path, train_images=images, val_images=images[:2], test_images=images[:2])
    kwargs = {"image_size": 8, "non_iid": 1.0, "seed": 0, "dataset": path}
    shards = [client_data(k, 3, samples_per_client=20, **kwargs) for k in range(3)]
    profiles = site_profiles(3, 1.0, seed=0)
    # undo each site's rendering to get the file's images back
    raw = [(s.clean / p.contrast) ** (1 / p.gamma) for s, p in zip(shards, profiles, strict=True)]
    # non-iid 1 sorts by intensity: each client's brightest image is below the next client's darkest
    means = [r.mean(axis=(1, 2, 3)) for r in raw]
    assert means[0].max() < means[1].min() and means[1].max() < means[2].min()
    assert len(client_data(0, 3, samples_per_client=5, **kwargs)) == 5


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"x_train": np.zeros((3, 8, 8), dtype=np.uint8)}, "none of the keys"),
        ({"train_images": np.zeros((3, 8), dtype=np.uint8)}, r"expected images \[n, H, W\]"),
        ({"train_images": np.zeros((3, 8, 8, 2), dtype=np.uint8)}, "C in 1, 3, 4"),
        ({"train_images": np.zeros((0, 8, 8), dtype=np.uint8)}, "holds no images"),
        ({"train_images": np.full((3, 8, 8), 2.0)}, r"must lie in \[0, 1\]"),
        ({"train_images": np.zeros((3, 8, 8), dtype=np.int64)}, "not supported"),
        ({"train_images": np.array([{"a": 1}] * 3, dtype=object)}, "cannot read"),
    ],
)
def test_bad_npz_contents_raise_clear_errors(tmp_path, arrays, message):
    with pytest.raises(ValueError, match=message):
        load_user_images(_npz(tmp_path, **arrays), 8)


def test_bad_paths_raise_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_user_images(tmp_path / "missing.npz", 8)
    (tmp_path / "data.csv").write_text("1,2,3")
    with pytest.raises(ValueError, match=r"not a \.npz"):
        load_user_images(tmp_path / "data.csv", 8)
    (tmp_path / "broken.npz").write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="cannot read"):
        load_user_images(tmp_path / "broken.npz", 8)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no"):
        load_user_images(tmp_path / "empty", 8)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="cannot read image"):
        load_user_images(tmp_path / "bad", 8)


def test_too_few_records_for_the_clients_raise(tmp_path):
    path = _npz(tmp_path, train_images=_tagged(4), val_images=_tagged(2), test_images=_tagged(2))
    with pytest.raises(ValueError, match="fewer than 5 clients"):
        client_data(0, 5, samples_per_client=1, image_size=8, non_iid=0.0, seed=0, dataset=path)
    only_test = _npz(tmp_path, test_images=_tagged(4))
    with pytest.raises(ValueError, match="no train split"):
        proxy_data(2, image_size=8, seed=0, dataset=only_test)


def test_a_missing_test_split_is_carved_from_train_away_from_the_clients(tmp_path):
    path = _npz(tmp_path, train_images=_tagged(40))
    kwargs = {"samples_per_client": 100, "image_size": 8, "non_iid": 0.0, "seed": 2, "dataset": path}
    client_ids = set().union(*(_ids(client_data(k, 2, **kwargs).clean) for k in range(2)))
    test = fd.test_data(100, image_size=8, seed=2, num_partitions=2, non_iid=0.0, dataset=path)
    assert len(_ids(test.clean)) == len(test) == 8  # a fifth of 40
    assert not _ids(test.clean) & client_ids
    assert len(client_ids) == 40 - 8 - 8  # val carved too
