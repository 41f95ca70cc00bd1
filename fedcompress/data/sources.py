"""What each party gets: a client's shard, the held-out test set and the server's unlabeled proxy inputs.

Every function is deterministic in its arguments and draws from its own named stream (``derive_seed``),
so: client shards are disjoint from each other, from the test set and from the proxy set; the test set
covers every site's profile (image ``i`` comes from site ``i % num_partitions``); and the proxy set is noisy
inputs only, over the whole range of site noise levels, with no client's records in it.

``dataset`` is ``"phantoms"`` (built in) or a path to user data (see ``fedcompress.data.user``). For user
data the record pools are: clients share ``train`` (split by ``partition_indices`` with mean intensity as the
skew key), the test set is ``test`` and the proxy set is ``val``; a missing ``test`` or ``val`` split is
carved from ``train`` (a fifth each, seeded), so the pools never overlap. When a pool is smaller than asked,
all of it is used.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fedcompress.data.denoising import DenoisingSet
from fedcompress.data.partition import partition_indices
from fedcompress.data.phantoms import generate_phantoms
from fedcompress.data.sites import NOISE_STD_RANGE, SiteProfile, site_profiles
from fedcompress.data.user import load_user_images
from fedcompress.seeding import numpy_rng

if TYPE_CHECKING:
    from fedcompress.config import RunConfig

__all__ = ["BUILTIN_DATASETS", "client_data", "proxy_data", "test_data"]

BUILTIN_DATASETS: tuple[str, ...] = ("phantoms",)
_HOLDOUT_SHARE = 0.2  # share of ``train`` carved out for each missing held-out split


def client_data(
    partition_id: int,
    num_partitions: int,
    *,
    samples_per_client: int,
    image_size: int,
    non_iid: float,
    seed: int,
    dataset: str = "phantoms",
) -> DenoisingSet:
    """Client ``partition_id``'s shard: ``samples_per_client`` pairs rendered and corrupted by its site."""
    if not (isinstance(partition_id, int) and 0 <= partition_id < num_partitions):
        raise ValueError(f"partition_id must be an int in [0, {num_partitions}), got {partition_id!r}")
    _check_count("samples_per_client", samples_per_client)
    profile = site_profiles(num_partitions, non_iid, seed)[partition_id]
    stream = (seed, "client", num_partitions, partition_id)
    if dataset in BUILTIN_DATASETS:
        images = generate_phantoms(
            samples_per_client, image_size=image_size, rng=numpy_rng(*stream, "images"), mix=profile.mix
        )
    else:
        pool = _user_pools(dataset, image_size, seed)["train"]
        if len(pool) < num_partitions:
            raise ValueError(
                f"dataset {dataset!r} has {len(pool)} training images, fewer than {num_partitions} clients"
            )
        keys = pool.mean(axis=(1, 2, 3))
        part = partition_indices(len(pool), num_partitions, non_iid, seed, keys=keys)[partition_id]
        images = pool[_pick(part, samples_per_client, numpy_rng(*stream, "pick"))]
    clean = profile.render(images)
    return DenoisingSet(noisy=profile.corrupt(clean, numpy_rng(*stream, "noise")), clean=clean)


def test_data(
    n: int, *, image_size: int, seed: int, num_partitions: int, non_iid: float, dataset: str = "phantoms"
) -> DenoisingSet:
    """The held-out set: ``n`` pairs, image ``i`` rendered and corrupted by site ``i % num_partitions``."""
    _check_count("n", n)
    profiles = site_profiles(num_partitions, non_iid, seed)
    if dataset not in BUILTIN_DATASETS:
        pool = _user_pools(dataset, image_size, seed)["test"]
        images = pool[_pick(np.arange(len(pool)), n, numpy_rng(seed, "test", "pick"))]
        n = len(images)
    noisy = np.empty((n, 1, image_size, image_size), dtype=np.float32)
    clean = np.empty_like(noisy)
    for k, profile in enumerate(profiles):
        idx = np.arange(k, n, num_partitions)
        stream = (seed, "test", num_partitions, k)
        if dataset in BUILTIN_DATASETS:
            rng = numpy_rng(*stream, "images")
            site_images = generate_phantoms(idx.size, image_size=image_size, rng=rng, mix=profile.mix)
        else:
            site_images = images[idx]
        clean[idx] = profile.render(site_images)
        noisy[idx] = profile.corrupt(clean[idx], numpy_rng(*stream, "noise"))
    return DenoisingSet(noisy=noisy, clean=clean)


test_data.__test__ = False  # type: ignore[attr-defined]  # so pytest never collects it when a test imports it


def proxy_data(n: int, *, image_size: int, seed: int, dataset: str = "phantoms") -> np.ndarray:
    """The server's unlabeled inputs for distillation: ``n`` noisy images, float32 ``[n, 1, S, S]``.

    Drawn from the base profile with each image's noise std log-uniform over ``NOISE_STD_RANGE`` (every site's
    level), from a stream no client or test image uses.
    """
    _check_count("n", n)
    if dataset in BUILTIN_DATASETS:
        images = generate_phantoms(n, image_size=image_size, rng=numpy_rng(seed, "proxy", "images"))
    else:
        pool = _user_pools(dataset, image_size, seed)["val"]
        images = pool[_pick(np.arange(len(pool)), n, numpy_rng(seed, "proxy", "pick"))]
    rng = numpy_rng(seed, "proxy", "noise")
    low, high = (math.log(v) for v in NOISE_STD_RANGE)
    std = np.exp(rng.uniform(low, high, (len(images), 1, 1, 1))).astype(np.float32)
    clean = SiteProfile().render(images)
    noise = rng.standard_normal(clean.shape, dtype=np.float32)
    return np.clip(clean + std * noise, 0.0, 1.0)


def client_data_for(cfg: RunConfig, partition_id: int) -> DenoisingSet:
    """:func:`client_data` with every argument taken from a run's settings."""
    return client_data(
        partition_id,
        cfg.num_clients,
        samples_per_client=cfg.samples_per_client,
        image_size=cfg.image_size,
        non_iid=cfg.non_iid,
        seed=cfg.seed,
        dataset=cfg.dataset,
    )


def test_data_for(cfg: RunConfig) -> DenoisingSet:
    """:func:`test_data` with every argument taken from a run's settings."""
    return test_data(
        cfg.test_samples,
        image_size=cfg.image_size,
        seed=cfg.seed,
        num_partitions=cfg.num_clients,
        non_iid=cfg.non_iid,
        dataset=cfg.dataset,
    )


test_data_for.__test__ = False  # type: ignore[attr-defined]  # not a pytest test, despite the name


def _check_count(name: str, value: int) -> None:
    if not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def _pick(candidates: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """Up to ``count`` of ``candidates`` chosen at random, in a random order."""
    return rng.permutation(candidates)[:count]


def _user_pools(dataset: str, image_size: int, seed: int) -> dict[str, np.ndarray]:
    """Disjoint ``train`` / ``val`` / ``test`` pools of clean images from a user dataset."""
    if not Path(dataset).expanduser().exists():
        raise ValueError(
            f"dataset {dataset!r} is neither a built-in data set {BUILTIN_DATASETS} nor an existing "
            ".npz file or image folder"
        )
    splits = load_user_images(dataset, image_size)
    if "train" not in splits:
        raise ValueError(f"dataset {dataset!r} has no train split (train_images or a train/ folder)")
    train = splits["train"]
    missing = [s for s in ("val", "test") if s not in splits]
    carve = max(1, int(len(train) * _HOLDOUT_SHARE)) if missing else 0
    if len(train) - carve * len(missing) < 1:
        raise ValueError(f"dataset {dataset!r} has {len(train)} training images: too few to carve out {missing}")
    order = numpy_rng(seed, "holdout").permutation(len(train))
    pools = dict(splits)
    for i, split in enumerate(missing):
        pools[split] = train[np.sort(order[i * carve : (i + 1) * carve])]
    pools["train"] = train[np.sort(order[carve * len(missing) :])]
    return pools
