"""Compact framing in the federation: both ends share the model's layout, so a payload carries a digest only."""

import numpy as np

from fedcompress.codec import SharedLayout, decode
from fedcompress.config import RunConfig
from fedcompress.federation import downlink
from fedcompress.federation.aggregate import ClientUpdate, decode_updates
from fedcompress.federation.client_round import run_client_round
from fedcompress.federation.weights import initial_weights

CFG = RunConfig(num_clients=2, samples_per_client=16, test_samples=16, width=4, local_epochs=1, codec="ultra")


def _payload(cfg: RunConfig) -> bytes:
    down = downlink.broadcast(initial_weights(cfg), cfg, 1)
    return run_client_round(cfg, partition_id=0, server_round=1, downlink_payload=down, noise_multiplier=0.0).payload


def test_compact_uplink_is_smaller_and_the_server_decodes_it_with_the_models_layout():
    compact, described = _payload(CFG.replace(codec_framing="compact")), _payload(CFG)
    assert len(compact) < len(described) - 200  # the tensor table (names, shapes) no longer travels
    reference = initial_weights(CFG)
    replies = [ClientUpdate(0, compact, {}), ClientUpdate(1, described, {})]
    layout = SharedLayout.of(reference, CFG.codec)
    decoded = decode_updates(replies, reference, weight_cap=None, layout=layout)
    assert decoded.failures == {} and decoded.uplink_bytes == len(compact) + len(described)
    (_, a, _), (_, b, _) = decoded.updates
    assert all(np.array_equal(a[k], b[k]) for k in a)  # same update, two framings
    other = SharedLayout.of(reference, "balanced")  # another codec: the digest does not match
    assert "bad payload" in decode_updates(replies[:1], reference, weight_cap=None, layout=other).failures[0]


def test_compact_downlink_round_trips_on_the_clients_own_model():
    cfg = CFG.replace(codec_framing="compact", downlink_codec="q8")
    weights = initial_weights(cfg)
    payload = downlink.broadcast(weights, cfg, 1)
    assert len(payload) < len(downlink.broadcast(weights, cfg.replace(codec_framing="self-describing"), 1))
    received = downlink.receive(payload, cfg)
    assert list(received) == list(weights) and max(np.abs(received[k] - weights[k]).max() for k in weights) < 0.05
    assert decode(downlink.broadcast(weights, CFG, 1))  # self-describing needs no layout
