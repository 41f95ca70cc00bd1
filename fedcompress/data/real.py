"""Real anatomy beside the phantoms: CT and MR slices that ship inside pydicom's wheel, as an evaluation set.

A denoiser trained on synthetic phantoms should be checked on real images. pydicom ships small real slices with
its test data (``CT_small.dcm``: a 128 x 128 CT slice; ``MR_small.dcm``: a 64 x 64 MR slice), so this set needs
no download and no patient data of ours. Each slice is windowed to ``[0, 1]`` (its 0.5th to 99.5th intensity
percentiles) and cut into ``image_size`` patches at half-patch stride; patches that are mostly air (standard
deviation under 0.05) are dropped. Patch ``i`` is rendered and corrupted by site ``i % num_partitions``, exactly as
the phantom test set is, from the public seed. Evaluation only: no client ever trains on it.
"""

from __future__ import annotations

import functools

import numpy as np

from fedcompress.data.denoising import DenoisingSet
from fedcompress.data.sites import site_profiles
from fedcompress.seeding import numpy_rng

__all__ = ["REAL_FILES", "real_slices", "real_test_data"]

REAL_FILES = ("CT_small.dcm", "MR_small.dcm")  # in pydicom's wheel: get_testdata_file never downloads them
_AIR_STD = 0.05


@functools.cache
def real_slices() -> tuple[np.ndarray, ...]:
    """The slices of :data:`REAL_FILES`, windowed to float32 ``[0, 1]``."""
    import pydicom
    from pydicom.data import get_testdata_file

    slices = []
    for name in REAL_FILES:
        path = get_testdata_file(name)
        if path is None:
            raise FileNotFoundError(f"pydicom {pydicom.__version__} does not ship {name}; the real-image set needs it")
        pixels = pydicom.dcmread(path).pixel_array.astype(np.float64)
        low, high = np.percentile(pixels, [0.5, 99.5])
        slices.append(np.clip((pixels - low) / max(high - low, 1e-12), 0.0, 1.0).astype(np.float32))
    return tuple(slices)


def _patches(image: np.ndarray, size: int) -> list[np.ndarray]:
    stride = max(size // 2, 1)
    rows, cols = image.shape
    return [
        image[r : r + size, c : c + size]
        for r in range(0, rows - size + 1, stride)
        for c in range(0, cols - size + 1, stride)
        if float(image[r : r + size, c : c + size].std()) >= _AIR_STD
    ]


def real_test_data(*, image_size: int, seed: int, num_partitions: int, non_iid: float) -> DenoisingSet | None:
    """Noisy/clean patch pairs of the real slices, corrupted site by site; None when no slice fits a patch."""
    patches = [patch for image in real_slices() for patch in _patches(image, image_size)]
    if not patches:
        return None
    images = np.stack(patches)[:, None].astype(np.float32)
    noisy, clean = np.empty_like(images), np.empty_like(images)
    for k, profile in enumerate(site_profiles(num_partitions, non_iid, seed)):
        idx = np.arange(k, len(images), num_partitions)
        clean[idx] = profile.render(images[idx])
        noisy[idx] = profile.corrupt(clean[idx], numpy_rng(seed, "real", num_partitions, k))
    return DenoisingSet(noisy=noisy, clean=clean)
