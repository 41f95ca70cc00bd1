"""The downlink: how the global model travels to clients, optionally compressed.

A lossless codec (``none``, ``zstd``) sends the weights themselves. A lossy codec sends the change since the
round-0 model, which every client can rebuild from the seed, so a client that skipped rounds needs no history
and no per-client state on either side. The error of a lossy broadcast does not accumulate: every round
re-encodes the whole difference. Clients train from the decoded view; the server keeps the exact weights.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from fedcompress.codec import SharedLayout, decode, encode, parse_spec
from fedcompress.config import RunConfig
from fedcompress.federation.aggregate import check_matches, limits_for
from fedcompress.federation.weights import initial_weights
from fedcompress.seeding import derive_seed

__all__ = ["broadcast", "is_lossless", "receive"]


def is_lossless(spec: str) -> bool:
    """True when a codec spec only serialises and entropy-codes (decode(encode(x)) == x)."""
    return all(stage.codec_id == "zstd" for stage in parse_spec(spec).stages)


def _reference(cfg: RunConfig) -> dict[str, np.ndarray] | None:
    return None if is_lossless(cfg.downlink_codec) else initial_weights(cfg)


def broadcast(weights: Mapping[str, np.ndarray], cfg: RunConfig, server_round: int) -> bytes:
    """Encode the global weights for round ``server_round`` with the configured downlink codec."""
    reference = _reference(cfg)
    message = dict(weights) if reference is None else {k: weights[k] - reference[k] for k in weights}
    seed = derive_seed(cfg.seed, "downlink", server_round)
    return encode(message, cfg.downlink_codec, seed=seed, framing=cfg.codec_framing)


def receive(payload: bytes, cfg: RunConfig) -> dict[str, np.ndarray]:
    """Rebuild the weights a client trains from (raises ``CodecError`` on a bad payload).

    The payload is decoded with limits sized to the client's own model and must hold exactly its tensors, so a
    hostile server cannot make a client allocate more than its model (a 1 KB random-k payload declaring 2^28
    values is refused before anything is allocated).
    """
    model = initial_weights(cfg)  # the model's names and shapes (and the lossy codec's reference), built here
    decoded = decode(payload, limits=limits_for(model), layout=SharedLayout.of(model, cfg.downlink_codec))
    check_matches(decoded, model)
    if is_lossless(cfg.downlink_codec):
        return decoded
    return {k: (model[k] + decoded[k]).astype(np.float32) for k in model}
