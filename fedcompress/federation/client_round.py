"""One client's round, free of Flower: receive weights, train, privatise, compress, reply.

Order (see DESIGN.md and notes/opacus-and-dp.md):

1. the privacy mechanism admits the request (the site's floor and its own budget) before any work;
2. rebuild the global weights from the downlink payload;
3. train E local epochs: plain SGD, or DP-SGD (``dp = "sample"``) with secret batches and noise;
4. delta = w_local - w_global;
5. client-level DP with local noise: data-independent ``pre-noise`` stages, clip to C, secret N(0, (zC)^2);
6. codec with error feedback (under ``dp-keep``: the round's public mask as ``randk``, so only the kept values
   travel): the residual form keeps what was dropped, EF21 (:mod:`fedcompress.federation.ef21`) sends the
   change of an estimate the server also keeps; either memory persists in the state. After step 3's DP-SGD
   or step 5's noise every codec stage is post-processing, so adaptive stages are safe there.

Replays: when the server re-runs a round this client already released (it resumed from a checkpoint) and sends
the same global model, a private client re-sends the release it stored, so the same data is never released
twice with fresh noise for free. If the model differs, it trains afresh and its accountant charges it again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping

import numpy as np
import torch

from fedcompress.codec import CodecState, encode_with_stats
from fedcompress.config import RunConfig
from fedcompress.data import client_data_for
from fedcompress.data.denoising import DenoisingSet
from fedcompress.devices import resolve_device
from fedcompress.federation import downlink
from fedcompress.federation.attacks import attack_of
from fedcompress.federation.client_state import ROUND_KEY, SavedState, state_round
from fedcompress.federation.ef21 import BASIS_KEY, Estimate, encode_change
from fedcompress.models import build_model
from fedcompress.privacy.masking import uplink_seed
from fedcompress.privacy.mechanisms import client_mechanism
from fedcompress.privacy.policy import ClientPolicy
from fedcompress.seeding import numpy_rng

__all__ = ["ClientReply", "run_client_round"]

_CODEC = "codec/"
_DP = "dp/"
_EF21 = "ef21/"
_RELEASE = "release/"  # the last payload sent, its metrics and the digest of the model it was trained from


@dataclasses.dataclass(frozen=True)
class ClientReply:
    """What a client sends back (payload, metrics) and keeps (state for its next round)."""

    payload: bytes
    metrics: dict[str, float | int]
    state: dict[str, np.ndarray]


def _split(state: Mapping[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    return {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}


def _bytes(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype=np.uint8).copy()


def _stored_release(latest: Mapping[str, np.ndarray], server_round: int, digest: bytes) -> ClientReply | None:
    """The reply already sent for ``server_round`` from this same global model, if this client keeps one."""
    release = _split(latest, _RELEASE)
    if state_round(latest) != server_round or set(release) != {"payload", "metrics", "downlink"}:
        return None
    if release["downlink"].tobytes() != digest:
        return None
    metrics = json.loads(release["metrics"].tobytes().decode())
    return ClientReply(payload=release["payload"].tobytes(), metrics=metrics, state=dict(latest))


def run_client_round(
    cfg: RunConfig,
    *,
    partition_id: int,
    server_round: int,
    downlink_payload: bytes,
    noise_multiplier: float,
    saved: SavedState | None = None,
    policy: ClientPolicy | None = None,
    data: DenoisingSet | None = None,
    ef21_basis: int = 0,
) -> ClientReply:
    """Run one round for ``partition_id``; ``saved`` is not modified.

    ``ef21_basis`` is the round of the EF21 estimate the server holds for this client (``error-feedback =
    "ef21"``; 0: none).

    ``policy`` is the site's privacy floor (the defaults when None); ``data`` replaces the partition's shard
    (the audit trains the real client round on data it chose). Raises ``PrivacyPolicyError`` when the
    request is below the floor.
    """
    torch.set_num_threads(1)  # Ray actors share the cores; more threads only add contention
    saved = saved or SavedState()
    mechanism = client_mechanism(cfg, partition_id=partition_id, noise_multiplier=noise_multiplier, policy=policy)
    digest = hashlib.sha256(downlink_payload).digest()
    if mechanism.private and (replay := _stored_release(saved.latest, server_round, digest)) is not None:
        return replay
    # The accountant continues from the newest state (it never rewinds); codec memory from before this round.
    mechanism.load_state_dict(_split(saved.latest if mechanism.private else saved.before, _DP))
    mechanism.admit()

    global_weights = downlink.receive(downlink_payload, cfg)
    model = build_model(cfg.model, width=cfg.width)
    model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in global_weights.items()})
    model.to(resolve_device(cfg.device))
    data = client_data_for(cfg, partition_id) if data is None else data
    loss = mechanism.train(model, data, server_round)
    local = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    delta = {k: (local[k] - global_weights[k]).astype(np.float32) for k in global_weights}
    if not all(np.all(np.isfinite(v)) for v in delta.values()):
        raise FloatingPointError(f"client {partition_id}: local training diverged (NaN/Inf in the update)")
    delta = mechanism.privatise(delta, server_round)
    attack = attack_of(cfg, partition_id)  # research knob: a lying client (attack-clients)
    if attack is not None:
        delta = attack.update(delta, numpy_rng(cfg.seed, "attack", server_round, partition_id))

    seed = uplink_seed(cfg, server_round, partition_id)
    codec_state, estimate, feedback_metrics = None, None, {}
    if cfg.error_feedback == "ef21":
        estimate = Estimate.from_state_dict(_split(saved.before, _EF21))
        payload, stats, estimate, basis = encode_change(
            delta,
            estimate,
            server_basis=ef21_basis,
            server_round=server_round,
            spec=cfg.uplink_codec,
            seed=seed,
            framing=cfg.codec_framing,
        )
        feedback_metrics = {BASIS_KEY: basis}
    else:
        if cfg.error_feedback == "residual":
            codec_part = _split(saved.before, _CODEC)
            codec_state = CodecState.from_state_dict(codec_part) if codec_part else CodecState()
        payload, stats = encode_with_stats(delta, cfg.uplink_codec, codec_state, seed=seed, framing=cfg.codec_framing)

    metrics: dict[str, float | int] = {
        "payload-bytes": len(payload),
        "dense-bytes": int(stats.dense_bytes),
        **feedback_metrics,
        **mechanism.public_metrics(),
    }
    if not cfg.minimal_release:  # quantities of private data, not covered by the epsilon (see NOT_COVERED)
        metrics.update(
            {
                "num-examples": len(data),
                "train-loss": float(loss),
                "codec-rel-error": float(stats.rel_l2_error),
                **mechanism.private_metrics(),
            }
        )
    if attack is not None:
        metrics = attack.report(metrics)
    state: dict[str, np.ndarray] = {ROUND_KEY: np.array(server_round)}
    if codec_state is not None:
        state.update({_CODEC + k: v for k, v in codec_state.state_dict().items()})
    if estimate is not None:
        state.update({_EF21 + k: v for k, v in estimate.state_dict().items()})
    state.update({_DP + k: v for k, v in mechanism.state_dict().items()})
    if mechanism.private:
        release = {"payload": payload, "metrics": json.dumps(metrics).encode(), "downlink": digest}
        state.update({_RELEASE + k: _bytes(v) for k, v in release.items()})
    return ClientReply(payload=payload, metrics=metrics, state=state)
