"""Shared test set-up: one torch thread (the CI machine has 2 cores shared by pytest and Ray workers)."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    torch.set_num_threads(1)
    yield
