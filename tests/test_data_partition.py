import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedcompress.data import partition_indices


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 300),
    parts=st.integers(1, 20),
    non_iid=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**31 - 1),
    with_keys=st.booleans(),
)
def test_parts_cover_every_record_once_with_near_equal_sizes(n, parts, non_iid, seed, with_keys):
    if n < parts:
        with pytest.raises(ValueError, match="no part is empty"):
            partition_indices(n, parts, non_iid, seed)
        return
    keys = np.random.default_rng(seed).random(n) if with_keys else None
    result = partition_indices(n, parts, non_iid, seed, keys=keys)
    assert len(result) == parts
    np.testing.assert_array_equal(np.sort(np.concatenate(result)), np.arange(n))
    sizes = [len(p) for p in result]
    assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 1
    assert all(np.all(np.diff(p) > 0) and p.dtype == np.int64 for p in result)


def test_deterministic_in_its_arguments():
    a = partition_indices(100, 4, 0.5, 1)
    b = partition_indices(100, 4, 0.5, 1)
    c = partition_indices(100, 4, 0.5, 2)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_non_iid_one_gives_each_part_a_band_of_keys():
    keys = np.random.default_rng(0).random(400)
    parts = partition_indices(400, 4, 1.0, 0, keys=keys)
    ranges = [(keys[p].min(), keys[p].max()) for p in parts]
    for (_, high), (low, _) in itertools.pairwise(ranges):
        assert high < low  # bands do not overlap


def test_skew_grows_with_non_iid():
    keys = np.random.default_rng(0).random(800)

    def spread_of_means(non_iid):
        return np.std([keys[p].mean() for p in partition_indices(800, 8, non_iid, 0, keys=keys)])

    assert spread_of_means(0.0) < 0.03 < spread_of_means(0.5) < spread_of_means(1.0)


@pytest.mark.parametrize(
    ("args", "keys", "message"),
    [
        ((10, 0, 0.5, 0), None, "num_partitions"),
        ((10, 2, 1.5, 0), None, "non_iid"),
        ((10, 2, 0.5, 0), np.zeros(9), "keys"),
        ((10, 2, 0.5, 0), np.full(10, np.nan), "keys"),
    ],
)
def test_bad_arguments_raise(args, keys, message):
    with pytest.raises(ValueError, match=message):
        partition_indices(*args, keys=keys)
