"""Real CT/MR patches from pydicom's own test slices: an evaluation set beside the phantoms."""

import numpy as np

from fedcompress.config import RunConfig
from fedcompress.data.real import real_slices, real_test_data
from fedcompress.federation.evaluation import Evaluator
from fedcompress.federation.weights import initial_weights


def test_the_slices_are_real_ct_and_mr_windowed_to_the_unit_range():
    ct, mr = real_slices()
    assert ct.shape == (128, 128) and mr.shape == (64, 64)
    for image in (ct, mr):
        assert image.dtype == np.float32 and image.min() == 0.0 and image.max() == 1.0
        assert 0.1 < float(image.std()) < 0.5  # anatomy, not a flat or binary image


def test_patches_are_corrupted_site_by_site_from_the_public_seed():
    a = real_test_data(image_size=32, seed=0, num_partitions=4, non_iid=0.5)
    b = real_test_data(image_size=32, seed=0, num_partitions=4, non_iid=0.5)
    c = real_test_data(image_size=32, seed=1, num_partitions=4, non_iid=0.5)
    assert a is not None and b is not None and c is not None
    assert len(a) >= 30 and a.noisy.shape[1:] == (1, 32, 32)
    assert np.array_equal(a.noisy, b.noisy) and not np.array_equal(a.noisy, c.noisy)
    assert np.all(a.clean.reshape(len(a), -1).std(axis=1) > 0.02)  # air-only patches dropped
    assert real_test_data(image_size=256, seed=0, num_partitions=4, non_iid=0.5) is None  # nothing fits


def test_every_evaluation_scores_the_real_patches_beside_the_test_set():
    cfg = RunConfig(num_clients=2, test_samples=8, width=4)
    scores = Evaluator(cfg)(initial_weights(cfg))
    assert {"psnr", "real_psnr", "real_ssim", "real_psnr_noisy"} <= set(scores)
    assert 10.0 < scores["real_psnr_noisy"] < 40.0
    assert "real_psnr" not in Evaluator(cfg.replace(image_size=256))(initial_weights(cfg.replace(image_size=256)))
