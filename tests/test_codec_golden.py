"""Golden payloads from tests/golden/ (format versions 1 and 2) decode to their committed arrays in every run."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from fedcompress.codec import CodecError, SharedLayout, decode, encode
from fedcompress.codec.limits import DecodeLimits
from fedcompress.codec.wire import FORMAT_VERSION, MAGIC, Reader, read_header

GOLDEN = Path(__file__).resolve().parent / "golden"
MANIFEST = json.loads((GOLDEN / "codec_v1.json").read_text())
MANIFEST_V2 = json.loads((GOLDEN / "codec_v2.json").read_text())


def _golden_update() -> dict[str, np.ndarray]:
    spec = importlib.util.spec_from_file_location("make_codec_golden", GOLDEN / "make_codec_golden.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.golden_update()


def _assert_decodes_to_npz(decoded: dict[str, np.ndarray], npz: Path) -> None:
    with np.load(npz, allow_pickle=False) as expected:
        assert list(decoded) == list(expected.files)
        for name in expected.files:
            assert decoded[name].dtype == np.float32
            np.testing.assert_array_equal(decoded[name], expected[name])


@pytest.mark.parametrize("case", MANIFEST["payloads"], ids=lambda case: case["name"])
def test_golden_payload_decodes_to_its_committed_arrays(case: dict) -> None:
    payload = (GOLDEN / f"codec_v1_{case['name']}.bin").read_bytes()
    assert len(payload) == case["bytes"]
    _assert_decodes_to_npz(decode(payload), GOLDEN / f"codec_v1_{case['name']}.npz")
    header = read_header(Reader(payload), DecodeLimits())
    assert header.version == 1 and header.spec is not None and header.spec.canonical() == case["spec"]
    assert header.seed == 7 and header.digest is None


@pytest.mark.parametrize("case", MANIFEST_V2["payloads"], ids=lambda case: case["name"])
def test_golden_v2_payload_decodes_to_its_committed_arrays(case: dict) -> None:
    payload = (GOLDEN / f"codec_v2_{case['name']}.bin").read_bytes()
    assert len(payload) == case["bytes"]
    layout = SharedLayout.of(_golden_update(), case["spec"])
    _assert_decodes_to_npz(decode(payload, layout=layout), GOLDEN / f"codec_v2_{case['name']}.npz")
    header = read_header(Reader(payload), DecodeLimits())
    assert header.version == 2 and header.seed == 7
    if case["framing"] == "compact":
        assert header.spec is None and header.digest is not None and header.digest.hex() == case["digest"]
        assert layout.digest.hex() == case["digest"]  # the digest of a layout never changes either
        with pytest.raises(CodecError, match="compact framing"):
            decode(payload)
    else:
        assert header.spec is not None and header.spec.canonical() == case["spec"] and header.digest is None
        _assert_decodes_to_npz(decode(payload), GOLDEN / f"codec_v2_{case['name']}.npz")


def test_lossless_golden_payloads_hold_the_original_update() -> None:
    original = _golden_update()
    for path in ("codec_v1_none.bin", "codec_v1_zstd.bin", "codec_v2_none.bin", "codec_v2_compact_none.bin"):
        layout = SharedLayout.of(original, "zstd" if "zstd" in path else "none")
        decoded = decode((GOLDEN / path).read_bytes(), layout=layout)
        for key, value in original.items():
            np.testing.assert_array_equal(decoded[key], value)


def test_lossy_golden_payloads_are_near_the_original_update() -> None:
    update = _golden_update()
    original = np.concatenate([v.ravel() for v in update.values()])
    cases = [(f"codec_v1_{c['name']}.bin", c["spec"]) for c in MANIFEST["payloads"]]
    cases += [(f"codec_v2_{c['name']}.bin", c["spec"]) for c in MANIFEST_V2["payloads"]]
    for path, spec in cases:
        if "scale=unbiased" in spec:
            continue  # unbiased but not a contraction: its error may exceed the input (see codec/sign.py)
        decoded = decode((GOLDEN / path).read_bytes(), layout=SharedLayout.of(update, spec))
        flat = np.concatenate([v.ravel() for v in decoded.values()])
        assert np.linalg.norm(flat - original) <= np.linalg.norm(original), path


def test_the_encoder_writes_format_two_byte_for_byte() -> None:
    assert MANIFEST["format_version"] == 1 and MANIFEST_V2["format_version"] == FORMAT_VERSION == 2
    update = _golden_update()
    for case in MANIFEST_V2["payloads"]:
        payload = encode(update, case["spec"], seed=7, framing=case["framing"])
        assert payload == (GOLDEN / f"codec_v2_{case['name']}.bin").read_bytes(), case["name"]


def test_a_golden_payload_with_another_version_is_refused_by_number() -> None:
    payload = bytearray((GOLDEN / "codec_v1_q4.bin").read_bytes())
    payload[4] = 3
    with pytest.raises(CodecError, match="version 3 is not supported"):
        decode(bytes(payload))


def test_version_one_payloads_know_only_the_version_one_stages() -> None:
    """A v1 header naming a stage that came with v2 is refused by name (no v1 encoder could have written it)."""
    v2 = (GOLDEN / "codec_v2_rotate_sign.bin").read_bytes()
    assert v2[:6] == MAGIC + bytes([2, 0])
    with pytest.raises(CodecError, match="version 1 has no stage 'rotate'"):
        decode(MAGIC + bytes([1]) + v2[6:])
