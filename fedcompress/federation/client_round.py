"""One client's round, free of Flower: receive weights, train, privatise, compress, reply.

Order (see DESIGN.md and notes/opacus-and-dp.md):

1. rebuild the global weights from the downlink payload;
2. train E local epochs: plain SGD, or Opacus DP-SGD (``dp = "sample"``) whose accountant persists in the state;
3. delta = w_local - w_global;
4. client-level DP with local noise: optional data-independent ``pre-noise`` stages, clip to C, add N(0, (zC)^2);
5. codec with error feedback (residuals persist in the state). After step 2's DP-SGD or step 4's noise every
   codec stage is post-processing, so adaptive stages are safe there.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from fedcompress.codec import CodecState, decode, encode, encode_with_stats
from fedcompress.config import RunConfig
from fedcompress.data import client_data_for
from fedcompress.federation import downlink
from fedcompress.federation.client_state import ROUND_KEY
from fedcompress.models import build_model
from fedcompress.privacy import SampleLevelDP, clip_and_noise
from fedcompress.seeding import derive_seed, numpy_rng, torch_generator
from fedcompress.training import make_loader, make_optimizer, train_epochs

__all__ = ["ClientReply", "run_client_round"]

_CODEC = "codec/"
_DP = "dp/"


@dataclasses.dataclass(frozen=True)
class ClientReply:
    """What a client sends back (payload, metrics) and keeps (state for its next round)."""

    payload: bytes
    metrics: dict[str, float | int]
    state: dict[str, np.ndarray]


def _split(state: Mapping[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    return {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}


def _train(
    cfg: RunConfig, model: torch.nn.Module, partition_id: int, server_round: int, noise: float, state: Any
) -> tuple[float, int, dict[str, np.ndarray], dict[str, float]]:
    """Local training; returns (loss, num_examples, dp state, dp metrics)."""
    data = client_data_for(cfg, partition_id)
    generator = torch_generator(cfg.seed, "train", server_round, partition_id)
    loader = make_loader(data, cfg.batch_size, generator)
    optimizer: torch.optim.Optimizer = make_optimizer(model, cfg.lr, cfg.momentum)
    if cfg.dp != "sample":
        return train_epochs(model, loader, optimizer, cfg.local_epochs), len(data), {}, {}
    engine = SampleLevelDP(noise_multiplier=noise, clip_norm=cfg.clip_norm, accountant=cfg.accountant)
    if state:
        engine.load_state_dict(state)
    private_model, optimizer, loader = engine.make_private(model, optimizer, loader, generator=generator)
    loss = train_epochs(private_model, loader, optimizer, cfg.local_epochs)
    metrics = {"epsilon": engine.epsilon(cfg.delta), "dp-steps": float(engine.steps)}
    return loss, len(data), engine.state_dict(), metrics


def _local_noise(
    cfg: RunConfig, delta: dict[str, np.ndarray], noise: float, server_round: int, partition_id: int
) -> dict[str, np.ndarray]:
    """Client-level DP, untrusted server: data-independent pre-noise stages, then clip and noise."""
    if cfg.pre_noise:
        delta = decode(encode(delta, cfg.pre_noise, seed=derive_seed(cfg.seed, "pre", server_round, partition_id)))
    rng = numpy_rng(cfg.seed, "client-noise", server_round, partition_id)
    noised, _ = clip_and_noise(delta, clip_norm=cfg.clip_norm, noise_multiplier=noise, generator=rng)
    return noised


def run_client_round(
    cfg: RunConfig,
    *,
    partition_id: int,
    server_round: int,
    downlink_payload: bytes,
    noise_multiplier: float,
    state: Mapping[str, np.ndarray],
) -> ClientReply:
    """Run one round for ``partition_id`` starting from ``state``; the input state is not modified."""
    torch.set_num_threads(1)  # Ray actors share the cores; more threads only add contention
    global_weights = downlink.receive(downlink_payload, cfg)
    model = build_model(cfg.model, width=cfg.width)
    model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in global_weights.items()})

    loss, num_examples, dp_state, dp_metrics = _train(
        cfg, model, partition_id, server_round, noise_multiplier, _split(state, _DP)
    )
    local = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    delta = {k: (local[k] - global_weights[k]).astype(np.float32) for k in global_weights}
    if not all(np.all(np.isfinite(v)) for v in delta.values()):
        raise FloatingPointError(f"client {partition_id}: local training diverged (NaN/Inf in the update)")
    if cfg.dp == "client" and cfg.dp_noise == "local":
        delta = _local_noise(cfg, delta, noise_multiplier, server_round, partition_id)

    codec_state = None
    if cfg.error_feedback:
        codec_part = _split(state, _CODEC)
        codec_state = CodecState.from_state_dict(codec_part) if codec_part else CodecState()
    seed = derive_seed(cfg.seed, "uplink", server_round, partition_id)
    payload, stats = encode_with_stats(delta, cfg.codec, codec_state, seed=seed)

    new_state: dict[str, np.ndarray] = {ROUND_KEY: np.array(server_round)}
    if codec_state is not None:
        new_state.update({_CODEC + k: v for k, v in codec_state.state_dict().items()})
    new_state.update({_DP + k: v for k, v in dp_state.items()})

    metrics: dict[str, float | int] = {"payload-bytes": len(payload), "dense-bytes": int(stats.dense_bytes)}
    if cfg.release == "all":  # quantities of private data; release="minimal" withholds them (see NOT_COVERED)
        metrics.update(
            {
                "num-examples": num_examples,
                "train-loss": float(loss),
                "codec-rel-error": float(stats.rel_l2_error),
                **dp_metrics,
            }
        )
    return ClientReply(payload=payload, metrics=metrics, state=new_state)
