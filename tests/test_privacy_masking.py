"""``dp-keep``: client-level DP on a public random mask, so noise and bytes live on k of d coordinates only."""

import numpy as np
import pytest

from fedcompress.codec import SharedLayout, decode, encode
from fedcompress.config import DP_KEEP_WHOLE, RunConfig
from fedcompress.errors import ConfigError
from fedcompress.federation import downlink
from fedcompress.federation.aggregate import ClientUpdate, decode_updates
from fedcompress.federation.client_round import run_client_round
from fedcompress.federation.weights import initial_weights
from fedcompress.privacy.masking import PublicMask
from fedcompress.privacy.mechanisms import server_mechanism
from fedcompress.tensors import flatten

TINY = {"num_clients": 4, "samples_per_client": 16, "test_samples": 16, "width": 4, "local_epochs": 1}
LOCAL = RunConfig(
    dp="client", dp_noise="local", noise_multiplier=1.0, dp_keep=0.05, codec="q:8:block=256+zstd:3", **TINY
)


def _update(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"conv.weight": rng.normal(size=(8, 4, 3, 3)).astype(np.float32), "conv.bias": rng.normal(size=8)}


def _reply(cfg: RunConfig, partition: int = 0, server_round: int = 1) -> bytes:
    down = downlink.broadcast(initial_weights(cfg), cfg, server_round)
    return run_client_round(
        cfg, partition_id=partition, server_round=server_round, downlink_payload=down, noise_multiplier=1.0
    ).payload


def test_the_mask_is_the_codecs_random_k_with_the_masks_seed():
    mask = PublicMask.of(LOCAL, 3)
    assert mask is not None and PublicMask.of(LOCAL.replace(dp_keep=1.0), 3) is None
    update = _update()
    restricted = mask.restrict(update)
    sent = decode(encode(update, f"randk:0.05:whole={DP_KEEP_WHOLE}", seed=mask.seed))
    assert all(np.array_equal(sent[k], restricted[k]) for k in update)
    assert PublicMask.of(LOCAL, 4) != mask  # a fresh mask every round, the same for every client
    assert np.array_equal(restricted["conv.bias"], update["conv.bias"].astype(np.float32))  # small: kept whole
    assert np.count_nonzero(restricted["conv.weight"]) == round(0.05 * update["conv.weight"].size)


def test_local_noise_goes_on_the_kept_coordinates_only_and_only_they_travel():
    reference = initial_weights(LOCAL)
    dense_bytes = 4 * sum(v.size for v in reference.values())
    payloads = [_reply(LOCAL, partition) for partition in range(2)]
    assert all(len(p) < 0.05 * dense_bytes + 400 for p in payloads)  # k one-byte values, a header, no indices
    layout = SharedLayout.of(reference, LOCAL.uplink_codec)
    decoded = decode_updates(
        [ClientUpdate(i, p, {}) for i, p in enumerate(payloads)], reference, weight_cap=None, layout=layout
    )
    assert decoded.failures == {}
    kept = PublicMask.of(LOCAL, 1).indices([v.size for v in reference.values()])
    for _, update, _ in decoded.updates:
        flat, _ = flatten(update)
        outside = np.ones(flat.size, dtype=bool)
        outside[kept] = False
        assert not flat[outside].any()  # no noise where nothing was kept: those values carry no data
        # z C = 0.05 per kept value: the noise is there, at the calibrated scale
        assert 0.03 < float(np.std(flat[kept])) < 0.08
    dense = _reply(LOCAL.replace(dp_keep=1.0))
    assert len(dense) > 5 * len(payloads[0])  # same codec, all d values noised and sent (header included)


def test_the_server_restricts_every_update_to_the_mask_and_central_noise_stays_on_it():
    cfg = RunConfig(
        dp="client",
        dp_noise="central",
        client_sampling="poisson",
        noise_multiplier=1.0,
        dp_keep=0.1,
        codec="none",
        **TINY,
    )
    mechanism = server_mechanism(cfg)
    reference = {k: np.zeros_like(v) for k, v in _update().items()}
    hostile = {k: np.full_like(v, 100.0) for k, v in reference.items()}  # writes everywhere, far past the clip
    out = mechanism.aggregate([hostile], [1.0], server_round=2, reference=reference)
    flat, _ = flatten(out)
    kept = PublicMask.of(cfg, 2).indices([v.size for v in reference.values()])
    outside = np.ones(flat.size, dtype=bool)
    outside[kept] = False
    assert not flat[outside].any() and flat[kept].all()
    # clipped to C over the kept values, then noised there: nowhere near the 100 the client sent
    assert np.abs(flat[kept]).max() < 1.0
    local = server_mechanism(LOCAL)
    restricted = local.aggregate([hostile], [1.0], server_round=2, reference=reference)
    assert np.count_nonzero(flatten(restricted)[0]) == 8 + round(0.05 * 288)  # the bias whole, 5% of the weight


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"dp": "none", "noise_multiplier": 0.0}, "applies to private runs"),
        ({"codec": "balanced"}, "'topk:0.1'"),
        ({"codec": "rotate+sign"}, "'rotate"),
        ({"pre_noise": "randk:0.1"}, "replaces pre-noise"),
        ({"dp_keep": 0.0}, "dp-keep"),
    ],
)
def test_dp_keep_is_refused_where_it_would_not_hold(changes, message):
    with pytest.raises(ConfigError, match=message):
        LOCAL.replace(**changes)


def test_the_uplink_codec_is_the_mask_then_the_codecs_quantizer_and_entropy_stages():
    assert LOCAL.uplink_codec == "randk:0.05:whole=64+q:8:block=256+zstd:3"
    assert LOCAL.replace(codec="none").uplink_codec == "randk:0.05:whole=64"
    assert RunConfig().uplink_codec == RunConfig().codec == "balanced"


def test_sample_level_trains_only_the_rounds_mask_and_sends_only_it():
    cfg = RunConfig(dp="sample", noise_multiplier=1.0, dp_keep=0.05, codec="q:8:block=256+zstd:3", **TINY)
    reference = initial_weights(cfg)
    payload = _reply(cfg, server_round=2)
    layout = SharedLayout.of(reference, cfg.uplink_codec)
    decoded = decode_updates([ClientUpdate(0, payload, {})], reference, weight_cap=None, layout=layout)
    assert decoded.failures == {}
    flat, _ = flatten(decoded.updates[0][1])
    kept = PublicMask.of(cfg, 2).indices([v.size for v in reference.values()])
    outside = np.ones(flat.size, dtype=bool)
    outside[kept] = False
    assert not flat[outside].any()  # frozen: DP-SGD's noise there is discarded, nothing moved
    assert np.count_nonzero(flat[kept]) > 0.9 * kept.size  # the kept coordinates trained (noise and signal)
    dense_bytes = 4 * flat.size
    assert len(payload) < 0.05 * dense_bytes + 400
