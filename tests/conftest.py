"""Shared test set-up: one thread per process (CI has 2 cores shared by pytest, Ray workers and SuperNodes).

Set before torch loads, and inherited by every subprocess the tests start, so threads never spin against
each other on a busy machine.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    torch.set_num_threads(1)
    yield
