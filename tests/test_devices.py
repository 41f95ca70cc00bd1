"""The device setting: CUDA when this process sees it, the CPU otherwise, a clear error for cuda without one."""

import numpy as np
import pytest
import torch

from fedcompress.config import RunConfig
from fedcompress.devices import resolve_device
from fedcompress.errors import ConfigError, RunError
from fedcompress.federation import downlink
from fedcompress.federation.client_round import run_client_round
from fedcompress.federation.weights import initial_weights

CUDA = torch.cuda.is_available()
TINY = {"num_clients": 2, "samples_per_client": 16, "test_samples": 8, "width": 4, "local_epochs": 1, "codec": "none"}


def _round(cfg: RunConfig, noise: float = 0.0):
    down = downlink.broadcast(initial_weights(cfg), cfg, 1)
    return run_client_round(cfg, partition_id=0, server_round=1, downlink_payload=down, noise_multiplier=noise)


def test_auto_takes_cuda_only_where_it_is_visible_and_cpu_is_always_cpu():
    assert resolve_device("auto").type == ("cuda" if CUDA else "cpu")
    assert resolve_device("cpu").type == "cpu"
    with pytest.raises(ConfigError, match="device"):
        RunConfig(device="tpu")


@pytest.mark.skipif(CUDA, reason="this machine has CUDA")
def test_cuda_without_a_device_is_one_clear_error_naming_the_fix():
    with pytest.raises(RunError, match="--gpus-per-client"):
        resolve_device("cuda")
    with pytest.raises(RunError, match="no CUDA device"):
        _round(RunConfig(**TINY, device="cuda"))
    assert _round(RunConfig(**TINY, device="auto")).payload  # nothing breaks without CUDA


@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
def test_a_dp_sgd_round_trains_on_cuda_with_the_noise_drawn_there():
    cfg = RunConfig(**TINY, device="cuda", dp="sample", noise_multiplier=1.0)
    reply = _round(cfg, noise=1.0)
    assert reply.payload and np.isfinite(reply.metrics["payload-bytes"])
