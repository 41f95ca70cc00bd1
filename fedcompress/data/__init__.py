"""Data for the denoising task: built-in phantoms, user images, sites and their shards.

One concept per module: ``phantoms`` (the synthetic images), ``sites`` (how scanners differ), ``denoising``
(the noisy/clean pairs), ``partition`` (splitting records across clients), ``user`` (loading ``.npz`` and
image folders) and ``sources`` (what each client, the test set and the server's proxy set receive).
"""

from fedcompress.data.denoising import DenoisingSet
from fedcompress.data.partition import partition_indices
from fedcompress.data.phantoms import PHANTOM_KINDS, generate_phantoms
from fedcompress.data.sites import BASE_NOISE_STD, NOISE_STD_RANGE, SiteProfile, site_profiles
from fedcompress.data.sources import (
    BUILTIN_DATASETS,
    client_data,
    client_data_for,
    proxy_data,
    test_data,
    test_data_for,
)
from fedcompress.data.user import IMAGE_SUFFIXES, SPLITS, load_user_images

__all__ = [
    "BASE_NOISE_STD",
    "BUILTIN_DATASETS",
    "IMAGE_SUFFIXES",
    "NOISE_STD_RANGE",
    "PHANTOM_KINDS",
    "SPLITS",
    "DenoisingSet",
    "SiteProfile",
    "client_data",
    "client_data_for",
    "generate_phantoms",
    "load_user_images",
    "partition_indices",
    "proxy_data",
    "site_profiles",
    "test_data",
    "test_data_for",
]
