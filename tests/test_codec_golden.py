"""Golden payloads from tests/golden/ (format version 1) decode to their committed arrays in every run."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from fedcompress.codec import CodecError, decode, encode
from fedcompress.codec.limits import DecodeLimits
from fedcompress.codec.wire import FORMAT_VERSION, Reader, read_header

GOLDEN = Path(__file__).resolve().parent / "golden"
MANIFEST = json.loads((GOLDEN / "codec_v1.json").read_text())


def _golden_update() -> dict[str, np.ndarray]:
    spec = importlib.util.spec_from_file_location("make_codec_golden", GOLDEN / "make_codec_golden.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.golden_update()


@pytest.mark.parametrize("case", MANIFEST["payloads"], ids=lambda case: case["name"])
def test_golden_payload_decodes_to_its_committed_arrays(case: dict) -> None:
    payload = (GOLDEN / f"codec_v1_{case['name']}.bin").read_bytes()
    assert len(payload) == case["bytes"]
    with np.load(GOLDEN / f"codec_v1_{case['name']}.npz", allow_pickle=False) as expected:
        decoded = decode(payload)
        assert list(decoded) == list(expected.files)
        for name in expected.files:
            assert decoded[name].dtype == np.float32
            np.testing.assert_array_equal(decoded[name], expected[name])
    spec, seed, _ = read_header(Reader(payload), DecodeLimits())
    assert spec.canonical() == case["spec"] and seed == 7


def test_lossless_golden_payloads_hold_the_original_update() -> None:
    original = _golden_update()
    for name in ("none", "zstd"):
        decoded = decode((GOLDEN / f"codec_v1_{name}.bin").read_bytes())
        for key, value in original.items():
            np.testing.assert_array_equal(decoded[key], value)


def test_lossy_golden_payloads_are_near_the_original_update() -> None:
    original = np.concatenate([v.ravel() for v in _golden_update().values()])
    for case in MANIFEST["payloads"]:
        decoded = decode((GOLDEN / f"codec_v1_{case['name']}.bin").read_bytes())
        flat = np.concatenate([v.ravel() for v in decoded.values()])
        assert np.linalg.norm(flat - original) <= np.linalg.norm(original)


def test_the_encoder_still_writes_format_one_byte_for_byte() -> None:
    assert MANIFEST["format_version"] == FORMAT_VERSION == 1
    assert encode(_golden_update(), "none", seed=7) == (GOLDEN / "codec_v1_none.bin").read_bytes()


def test_a_golden_payload_with_another_version_is_refused_by_number() -> None:
    payload = bytearray((GOLDEN / "codec_v1_q4.bin").read_bytes())
    payload[4] = 2
    with pytest.raises(CodecError, match="version 2 is not supported"):
        decode(bytes(payload))
