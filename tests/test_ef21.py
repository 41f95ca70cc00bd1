"""EF21 error feedback: client and server estimates stay equal, track the update, and resynchronise."""

from __future__ import annotations

import numpy as np
import pytest

from fedcompress.codec import CodecError
from fedcompress.config import RunConfig
from fedcompress.errors import ConfigError
from fedcompress.federation.ef21 import Estimate, ServerEstimates, encode_change
from fedcompress.seeding import numpy_rng

CODECS = ["topk:0.05+q:8:block=256+zstd:3", "ultra", "rotate:256+randk:0.1+sign:scale=mse", "q8"]


def _update(seed: int) -> dict[str, np.ndarray]:
    rng = numpy_rng(seed, "ef21-test")
    return {
        "conv.weight": rng.normal(size=(8, 4, 3, 3)).astype(np.float32),
        "conv.bias": rng.normal(size=8).astype(np.float32),
    }


def _round(est: Estimate, server: ServerEstimates, delta, server_round: int, spec: str, *, framing="self-describing"):
    from fedcompress.codec import SharedLayout, decode

    payload, _, est, basis = encode_change(
        delta,
        est,
        server_basis=server.basis(0),
        server_round=server_round,
        spec=spec,
        seed=server_round,
        framing=framing,
    )
    change = decode(payload, layout=SharedLayout.of(delta, spec))
    return est, server.receive(0, change, basis, server_round), basis


@pytest.mark.parametrize("spec", CODECS)
def test_client_and_server_estimates_stay_bitwise_equal(spec):
    est, server = Estimate(), ServerEstimates()
    for r in range(1, 6):
        est, rebuilt, basis = _round(est, server, _update(r), r, spec)
        assert basis == (0 if r == 1 else r - 1)
        for name, value in est.values.items():
            np.testing.assert_array_equal(value.astype(np.float32), rebuilt[name])


@pytest.mark.parametrize("spec", ["topk:0.05+q:8:block=256+zstd:3", "rotate:256+sign:scale=mse"])
def test_estimate_converges_to_a_steady_update(spec):
    """EF21's point: with a fixed update the error ||delta - g|| falls round after round (a lossy codec alone
    never gets closer than its one-shot error)."""
    delta, est, server = _update(0), Estimate(), ServerEstimates()
    errors = []
    for r in range(1, 31):
        est, _, _ = _round(est, server, delta, r, spec)
        errors.append(np.sqrt(sum(np.sum((delta[k] - est.values[k]) ** 2) for k in delta)))
    norm = np.sqrt(sum(np.sum(v.astype(np.float64) ** 2) for v in delta.values()))
    assert errors[-1] < 0.2 * errors[0] and errors[-1] < 0.2 * norm


def test_a_lost_reply_restarts_both_sides_from_zero():
    est, server = Estimate(), ServerEstimates()
    est, _, _ = _round(est, server, _update(1), 1, "ultra")
    # round 2's reply never reaches the server: the client moved on, the server still holds round 1
    _, _, est, _ = encode_change(
        _update(2), est, server_basis=1, server_round=2, spec="ultra", seed=2, framing="compact"
    )
    assert est.round == 2 and server.basis(0) == 1
    est, rebuilt, basis = _round(est, server, _update(3), 3, "ultra")
    assert basis == 0 and server.basis(0) == 3
    for name, value in est.values.items():
        np.testing.assert_array_equal(value.astype(np.float32), rebuilt[name])


@pytest.mark.parametrize("claimed", [7, -1, "1", None, 1.5])
def test_a_claimed_basis_the_server_does_not_hold_is_refused(claimed):
    server = ServerEstimates()
    server.receive(0, _update(1), 0, 1)
    with pytest.raises(CodecError, match="EF21 basis"):
        server.receive(0, _update(2), claimed, 2)
    assert server.basis(0) == 1  # a refused reply does not move the estimate


def test_state_dicts_round_trip_and_copy():
    est, server = Estimate(), ServerEstimates()
    for r in (1, 2):
        est, _, _ = _round(est, server, _update(r), r, "ultra")
    again = Estimate.from_state_dict(est.state_dict())
    assert again.round == est.round and all(np.array_equal(again.values[k], v) for k, v in est.values.items())
    copy = ServerEstimates()
    copy.load_state_dict(server.state_dict())
    assert copy.basis(0) == 2 and copy.state_dict().keys() == server.state_dict().keys()
    with pytest.raises(ValueError, match="partition"):
        copy.load_state_dict({"x/round": np.array(1)})
    with pytest.raises(ValueError, match="EF21 state keys"):
        Estimate.from_state_dict({"value/a": np.zeros(2)})


def test_setting_accepts_old_booleans_and_refuses_dp_keep():
    assert RunConfig.from_mapping({"error-feedback": True}).error_feedback == "residual"
    assert RunConfig.from_mapping({"error-feedback": "False"}).error_feedback == "off"
    assert RunConfig.from_mapping({"error-feedback": "ef21"}).error_feedback == "ef21"
    with pytest.raises(ConfigError, match="EF21"):
        RunConfig(dp="sample", noise_multiplier=1.0, dp_keep=0.1, codec="q8", error_feedback="ef21")


def test_records_and_checkpoints_from_the_boolean_days_keep_their_identity():
    from fedcompress.config import upgrade_settings
    from simulations.sweep import cell_id

    old = {**RunConfig().to_dict(), "error-feedback": True, "codec": "aggressive"}
    new = {**RunConfig().to_dict(), "codec": "aggressive"}
    assert upgrade_settings(old) == new and upgrade_settings({"error-feedback": False}) == {"error-feedback": "off"}
    assert cell_id("simulate", upgrade_settings(old)) == cell_id("simulate", new)
