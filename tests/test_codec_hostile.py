"""Hostile payloads: anything malformed, truncated, lying, oversized or non-finite raises CodecError, fast."""

from __future__ import annotations

import json
import struct
import time

import numpy as np
import pytest
import zstandard
from test_codec_support import sample_update

from fedcompress.codec import CodecError, DecodeLimits, SharedLayout, decode, encode
from fedcompress.codec.varint import encode_varint
from fedcompress.codec.wire import MAGIC, TableEntry, write_table

SMALL = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.array([0.5, -1.0], dtype=np.float32)}
CONFIG_NONE: list[dict] = []
CONFIG_ZSTD = [{"id": "zstd", "level": 3}]


def craft(
    config: list[dict] | bytes,
    body: bytes,
    *,
    body_len: int | None = None,
    version: int = 1,
    magic: bytes = MAGIC,
    compress: bool = False,
) -> bytes:
    """A payload with the given stage configs and body, any field of which may lie."""
    raw_config = config if isinstance(config, bytes) else json.dumps(config).encode()
    data = zstandard.ZstdCompressor().compress(body) if compress else body
    head = magic + bytes([version]) + struct.pack("<Q", 0) + encode_varint(len(raw_config)) + raw_config
    return head + encode_varint(len(body) if body_len is None else body_len) + data


def body(entries: list[TableEntry], values: bytes, *, index: bytes = b"", values_len: int | None = None) -> bytes:
    """A body: table, index section, values section (lengths may lie)."""
    table = write_table(entries)
    length = len(values) if values_len is None else values_len
    return table + encode_varint(len(index)) + index + encode_varint(length) + values


def f32(*values: float) -> bytes:
    return np.array(values, dtype="<f4").tobytes()


def refuse(payload: bytes, match: str | None = None, limits: DecodeLimits | None = None) -> None:
    start = time.perf_counter()
    with pytest.raises(CodecError, match=match):
        decode(payload, limits=limits)
    assert time.perf_counter() - start < 1.0


def test_crafting_helpers_make_valid_payloads() -> None:
    entries = [TableEntry("w", (2,), False)]
    decoded = decode(craft(CONFIG_NONE, body(entries, f32(1, 2))))
    np.testing.assert_array_equal(decoded["w"], [1, 2])
    decoded = decode(craft(CONFIG_ZSTD, body(entries, f32(1, 2)), compress=True))
    np.testing.assert_array_equal(decoded["w"], [1, 2])


@pytest.mark.parametrize("spec", ["none", "zstd", "lowrank:1+topk:0.5+q:4+zstd:1", "randk:0.5+q:8:range=2"])
def test_truncation_at_every_offset_is_refused(spec: str) -> None:
    update = {**SMALL, "k": np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)}
    payload = encode(update, spec)
    for end in range(len(payload)):
        refuse(payload[:end])
    refuse(payload + b"\x00")  # and one trailing byte


@pytest.mark.parametrize("spec", ["none", "zstd:1", "lowrank:2+topk:0.2+q:3:block=7+zstd:1", "randk:0.3+q:16"])
def test_random_bit_flips_never_escape_as_another_error(spec: str) -> None:
    payload = bytearray(encode(sample_update(1), spec, seed=2))
    rng = np.random.default_rng(3)
    for _ in range(150):
        flipped = bytearray(payload)
        for position in rng.integers(0, len(payload), rng.integers(1, 4)):
            flipped[position] ^= 1 << int(rng.integers(0, 8))
        try:
            decoded = decode(bytes(flipped))
        except CodecError:
            continue
        assert all(np.all(np.isfinite(v)) for v in decoded.values())  # a flip inside a value is undetectable


def test_wrong_magic_and_version_are_refused_by_name() -> None:
    payload = encode(SMALL, "none")
    refuse(b"PK\x03\x04" + payload[4:], "magic")
    refuse(payload[:4] + bytes([3]) + payload[5:], "version 3")
    refuse(payload[:4] + bytes([0]) + payload[5:], "version 0")
    refuse(payload[:5] + bytes([2]) + payload[6:], "framing form 2")
    refuse(b"", "truncated")
    refuse(b"\x89PNG\r\n\x1a\n" * 4, "magic")


@pytest.mark.parametrize("bad", [object(), "text", 3, None, [1, 2]])
def test_non_bytes_are_refused(bad: object) -> None:
    with pytest.raises(CodecError, match="bytes"):
        decode(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("config", "match"),
    [
        (b"not json", "stage config"),
        (b"\xff\xfe", "stage config"),
        (b"[" * 4000 + b"]" * 4000, "stage config"),
        (b'{"id": "zstd"}', "list"),
        (b'[{"id": "gzip"}]', "unknown codec stage"),
        (b'[{"id": "q", "bits": 9, "block": 256, "range": null}]', "bits"),
        (b'[{"id": "zstd", "level": 3, "extra": 1}]', "unknown keys"),
        (
            b'[{"id": "zstd", "level": 3}, {"id": "q", "bits": 8, "block": 256, "range": null}]',
            "cannot follow",
        ),
    ],
)
def test_bad_stage_configs_are_refused(config: bytes, match: str) -> None:
    refuse(craft(config, body([], b"")), match)


def test_an_oversized_config_is_refused_before_reading_it() -> None:
    refuse(craft(b"[" + b" " * 5000 + b"]", b""), "stage config length")


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        (craft(CONFIG_NONE, body([TableEntry("w", (2,), False)], f32(1, 2)), body_len=999), "body has 999"),
        (craft(CONFIG_NONE, body([TableEntry("w", (3,), False)], f32(1, 2))), "implies 12"),
        (craft(CONFIG_NONE, body([TableEntry("w", (2,), False)], f32(1, 2), values_len=4)), "says 4 bytes"),
        (craft(CONFIG_NONE, body([TableEntry("w", (2,), False)], f32(1, 2), index=b"\x00")), "index section"),
        (craft(CONFIG_NONE, body([TableEntry("w", (2,), True)], f32(1, 2))), "factors"),
        (
            craft(CONFIG_NONE, body([TableEntry("w", (1,), False), TableEntry("w", (1,), False)], f32(1, 2))),
            "twice",
        ),
        (craft(CONFIG_NONE, encode_varint(60000) + b"\x00" * 10), "claims 60000 tensors"),
        (craft(CONFIG_NONE, b"\x01\x01\xff\x01\x00\x00\x00\x00"), "UTF-8"),
        (craft(CONFIG_NONE, b"\x01\x01w\x02\x00\x00\x00\x00"), "dtype code 2"),
        (craft(CONFIG_NONE, b"\x01\x01w\x01\x07\x00\x00\x00"), "kind 7"),
        (craft(CONFIG_NONE, b"\x01\x01w\x01\x00\x40" + b"\x01" * 64 + b"\x00\x00"), "max_ndim"),
        (craft(CONFIG_NONE, b"\x01\x01w\x01\x00\x01\xff\xff\xff\xff\xff\x01\x00\x00"), "longer than"),
    ],
    ids=[
        "body-length",
        "shape-vs-values",
        "values-length",
        "index-without-topk",
        "factors-without-lowrank",
        "duplicate-name",
        "tensor-count",
        "name-utf8",
        "dtype",
        "kind",
        "ndim",
        "varint-too-long",
    ],
)
def test_lying_lengths_and_shapes_are_refused(payload: bytes, match: str) -> None:
    refuse(payload, match)


def test_shapes_beyond_the_element_limit_are_refused_before_allocating() -> None:
    huge = [TableEntry("a", (2**20, 2**20), False)]
    refuse(craft(CONFIG_NONE, body(huge, b"")), "max_elements")
    many = [TableEntry(f"t{i}", (2**18,), False) for i in range(3)]  # each fine, together too many
    refuse(craft(CONFIG_NONE, body(many, b"")), "max_elements", DecodeLimits(max_elements=2**19))
    top = [TableEntry("a", (2**27,), False)]  # a tiny top-k payload that would decode to 512 MiB
    refuse(craft([{"id": "topk", "fraction": 1e-8}], body(top, f32(1.0), index=b"\x00\x05")), "limit",
           DecodeLimits(max_elements=2**20))  # fmt: skip


@pytest.mark.parametrize(
    ("limits", "match"),
    [
        (DecodeLimits(max_payload_bytes=100), "max_payload_bytes"),
        (DecodeLimits(max_tensors=7), "tensor count"),
        (DecodeLimits(max_name_bytes=8), "name length"),
        (DecodeLimits(max_decompressed_bytes=100), "body length"),
        (DecodeLimits(max_ndim=3), "max_ndim"),
        (DecodeLimits(max_elements=100), "max_elements"),
    ],
)
def test_every_limit_is_enforced(limits: DecodeLimits, match: str) -> None:
    payload = encode(sample_update(1), "zstd")
    decode(payload)  # fine with the defaults
    refuse(payload, match, limits)


def test_a_zstd_bomb_is_refused_without_inflating_it() -> None:
    entries = [TableEntry("w", (2**25,), False)]
    big = body(entries, bytes(2**27))  # 128 MiB of zeros: a frame of a few kB
    frame = zstandard.ZstdCompressor(level=1).compress(big)
    assert len(frame) < 2**16
    head_len = len(craft(CONFIG_ZSTD, b"", body_len=len(big)))
    # Declared honestly, but above the limit: refused from the header alone.
    refuse(
        craft(CONFIG_ZSTD, b"", body_len=len(big)) + frame,
        "body length",
        DecodeLimits(max_decompressed_bytes=2**20),
    )
    # Declared small while the frame says 128 MiB: the frame header disagrees.
    refuse(craft(CONFIG_ZSTD, b"", body_len=1000) + frame, "declares")
    # Frame header patched to claim 1000 bytes too: zstd stops at 1000 bytes of output.
    patched = bytearray(frame)
    patched[6:10] = struct.pack("<I", 1000)  # the 4-byte frame content size of this frame
    assert zstandard.frame_content_size(bytes(patched)) == 1000
    refuse(craft(CONFIG_ZSTD, b"", body_len=1000) + bytes(patched), "zstd")
    assert head_len < 64


def test_zstd_frames_must_declare_their_size_and_stand_alone() -> None:
    inner = body([TableEntry("w", (2,), False)], f32(1, 2))
    unsized = zstandard.ZstdCompressor(write_content_size=False).compress(inner)
    refuse(craft(CONFIG_ZSTD, b"", body_len=len(inner)) + unsized, "-1")
    sized = zstandard.ZstdCompressor().compress(inner)
    refuse(craft(CONFIG_ZSTD, b"", body_len=len(inner)) + sized + b"junk", "trailing")
    refuse(craft(CONFIG_ZSTD, b"", body_len=len(inner)) + sized + sized, "trailing")
    refuse(craft(CONFIG_ZSTD, b"", body_len=len(inner)) + b"\x28\xb5\x2f\xfd" + b"\x00" * 8, "zstd")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_in_a_payload_are_refused(bad: float) -> None:
    refuse(craft(CONFIG_NONE, body([TableEntry("w", (2,), False)], f32(1, bad))), "'w' decodes to NaN or Inf")
    quantized = [{"id": "q", "bits": 8, "block": 256, "range": None}]
    scales = f32(0.0, bad)  # lo = 0, step = bad
    refuse(craft(quantized, body([TableEntry("w", (2,), False)], scales + b"\x01\x02")), "NaN or Inf")


def test_products_that_overflow_are_refused() -> None:
    lowrank = [{"id": "lowrank", "rank": 1, "method": "power"}]
    values = f32(3e38, 3e38, 3e38, 10.0, 10.0, 10.0)  # P (3x1) times Q^T (1x3) overflows float32
    refuse(craft(lowrank, body([TableEntry("w", (3, 3), True)], values)), "NaN or Inf")


def test_bad_top_k_indices_are_refused() -> None:
    topk = [{"id": "topk", "fraction": 0.5}]
    entries = [TableEntry("w", (8,), False)]
    cases = [
        (b"\x02\x00", "mode byte"),  # unknown mode
        (b"\x00\x00\x00\x00\x00\x00", "varint"),  # five gaps for four kept values
        (b"\x00\x00\x00\x00\x09", "past the end"),  # a gap beyond the tensor
        (b"\x01\x0f\x00", "bitmap has 2 bytes"),  # bitmap of the wrong size
        (b"\x01\x07", "marks 3"),  # bitmap with 3 bits for 4 kept values
        (b"\x00\x80", "varint"),  # unterminated
    ]
    for index, match in cases:
        refuse(craft(topk, body(entries, f32(1, 2, 3, 4), index=index)), match)
    refuse(craft([{"id": "randk", "fraction": 0.5}], body(entries, f32(1, 2, 3, 4), index=b"\x00")), "index")


# ---- format version 2: rotate, sign, compact framing -----------------------------------------------------

NEW_SPECS = ["rotate:8+q:4:block=4", "rotate:16+randk:0.5+sign", "ultra", "lowrank:1+rotate:4+sign:scale=unbiased"]
UPDATE = {**SMALL, "k": np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)}


def craft_v2(config: list[dict], body: bytes, *, form: int = 0, digest: bytes = b"") -> bytes:
    """A version 2 payload: self-describing (form 0, with the config) or compact (form 1, with a digest)."""
    raw_config = json.dumps(config).encode()
    middle = encode_varint(len(raw_config)) + raw_config if form == 0 else digest
    return MAGIC + bytes([2, form]) + struct.pack("<Q", 0) + middle + encode_varint(len(body)) + body


@pytest.mark.parametrize("spec", NEW_SPECS)
@pytest.mark.parametrize("framing", ["self-describing", "compact"])
def test_v2_truncation_at_every_offset_is_refused(spec: str, framing: str) -> None:
    payload, layout = encode(UPDATE, spec, seed=1, framing=framing), SharedLayout.of(UPDATE, spec)
    decode(payload, layout=layout)
    for end in range(len(payload)):
        with pytest.raises(CodecError):
            decode(payload[:end], layout=layout)
    with pytest.raises(CodecError):
        decode(payload + b"\x00", layout=layout)


@pytest.mark.parametrize("spec", NEW_SPECS)
@pytest.mark.parametrize("framing", ["self-describing", "compact"])
def test_v2_random_bit_flips_never_escape_as_another_error(spec: str, framing: str) -> None:
    payload = bytearray(encode(sample_update(1), spec, seed=2, framing=framing))
    layout = SharedLayout.of(sample_update(1), spec)
    rng = np.random.default_rng(4)
    for _ in range(100):
        flipped = bytearray(payload)
        for position in rng.integers(0, len(payload), rng.integers(1, 4)):
            flipped[position] ^= 1 << int(rng.integers(0, 8))
        try:
            decoded = decode(bytes(flipped), layout=layout)
        except CodecError:
            continue
        assert list(decoded) == list(layout.tensors[i][0] for i in range(len(layout.tensors)))
        assert all(np.all(np.isfinite(v)) for v in decoded.values())


def test_a_compact_payload_needs_the_layout_it_was_made_for() -> None:
    payload = encode(UPDATE, "ultra", seed=1, framing="compact")
    decode(payload, layout=SharedLayout.of(UPDATE, "ultra"))
    refuse(payload, "compact framing")
    others = [
        SharedLayout.of({**UPDATE, "b": np.zeros(3, np.float32)}, "ultra"),  # another shape
        SharedLayout.of(dict(reversed(list(UPDATE.items()))), "ultra"),  # another order
        SharedLayout.of({("v" if k == "w" else k): v for k, v in UPDATE.items()}, "ultra"),  # another name
        SharedLayout.of(UPDATE, "aggressive"),  # another codec
        SharedLayout.of(UPDATE, "topk:0.008+sign+zstd:4"),  # the same stages at another setting
    ]
    for layout in others:
        with pytest.raises(CodecError, match="digest"):
            decode(payload, layout=layout)
    flipped = bytearray(payload)
    flipped[14] ^= 1  # inside the digest
    with pytest.raises(CodecError, match="digest"):
        decode(bytes(flipped), layout=SharedLayout.of(UPDATE, "ultra"))


def test_a_self_describing_payload_must_match_a_layout_given_to_decode() -> None:
    payload = encode(UPDATE, "q8", seed=1)
    np.testing.assert_array_equal(decode(payload, layout=SharedLayout.of(UPDATE, "q8"))["b"], decode(payload)["b"])
    with pytest.raises(CodecError, match="differ from the layout"):
        decode(payload, layout=SharedLayout.of({**UPDATE, "b": np.zeros(3, np.float32)}, "q8"))
    with pytest.raises(CodecError, match="differ from the layout"):
        decode(payload, layout=SharedLayout.of(UPDATE, "q:8:block=128+zstd:3"))
    with pytest.raises(ValueError, match="SharedLayout"):
        decode(payload, layout={"w": (2, 3)})  # type: ignore[arg-type]


def test_the_receivers_layout_is_held_to_the_limits_too() -> None:
    layout = SharedLayout.of(UPDATE, "none")
    payload = encode(UPDATE, "none", framing="compact")
    for limits, match in [
        (DecodeLimits(max_elements=10), "max_elements"),
        (DecodeLimits(max_tensors=2), "max_tensors"),
        (DecodeLimits(max_ndim=1), "max_ndim"),
    ]:
        with pytest.raises(CodecError, match=match):
            decode(payload, limits=limits, layout=layout)
    named = {"a.rather.long.tensor.name": np.zeros(2, np.float32)}
    with pytest.raises(CodecError, match="max_name_bytes"):
        decode(encode(named, "none", framing="compact"), limits=DecodeLimits(max_name_bytes=8),
               layout=SharedLayout.of(named, "none"))  # fmt: skip
    huge = SharedLayout((("a", (2**20, 2**20)),), "none")  # a compact payload of a few bytes, 4 TiB decoded
    refuse(craft_v2([], encode_varint(0) + encode_varint(0), form=1, digest=huge.digest), "compact framing")
    with pytest.raises(CodecError, match="max_elements"):
        decode(craft_v2([], b"\x00\x00", form=1, digest=huge.digest), layout=huge)


def test_a_lying_compact_body_is_refused() -> None:
    layout = SharedLayout.of({"w": np.zeros(5, np.float32)}, "rotate:4+sign")
    good = encode({"w": np.arange(5, dtype=np.float32)}, "rotate:4+sign", framing="compact")
    decode(good, layout=layout)
    body = good[23:]  # magic 4, version 1, form 1, seed 8, digest 8, body length 1: 23 header bytes
    assert good == craft_v2([], body, form=1, digest=layout.digest)
    for lie, match in [
        (body[:-1], "implies|section"),  # one byte short of what the layout implies
        (body + b"\x00", "implies|section"),
        (b"\x01\x00" + body[1:], "index section"),  # an index section random-k does not have
    ]:
        with pytest.raises(CodecError, match=match):
            decode(craft_v2([], lie, form=1, digest=layout.digest), layout=layout)


def test_rotated_values_must_be_the_padded_count() -> None:
    config = [{"id": "rotate", "chunk": 4}]
    entries = [TableEntry("w", (5,), False)]  # 5 values rotate into a chunk of 4 and a padded chunk of 1
    decode(craft_v2(config, body(entries, f32(1, 2, 3, 4, 5))))
    refuse(craft_v2(config, body(entries, f32(1, 2, 3, 4))), "implies 20")
    refuse(craft_v2(config, body(entries, f32(1, 2, 3, 4, 5, 6, 7, 8))), "implies 20")
    refuse(craft_v2([{"id": "rotate", "chunk": 3}], body(entries, f32(1, 2, 3, 4, 5))), "power of two")
    refuse(craft_v2([{"id": "rotate", "chunk": 4}], body(entries, f32(3e38, 3e38, 3e38, 3e38, 0))), "NaN or Inf")


def test_bad_sign_sections_are_refused() -> None:
    config = [{"id": "sign", "scale": "mse"}]
    entries = [TableEntry("w", (3,), False)]
    decode(craft_v2(config, body(entries, f32(0.5) + b"\x05")))
    refuse(craft_v2(config, body(entries, f32(-0.5) + b"\x05")), "negative")
    refuse(craft_v2(config, body(entries, f32(np.inf) + b"\x05")), "NaN or Inf")
    refuse(craft_v2(config, body(entries, f32(np.nan) + b"\x05")), "NaN or Inf|negative")
    refuse(craft_v2(config, body(entries, f32(0.5) + b"\x0d")), "past the last")
    refuse(craft_v2(config, body(entries, f32(0.5))), "implies 5")
    refuse(craft_v2([{"id": "sign", "scale": "max"}], body(entries, f32(0.5) + b"\x05")), "scale")
    unbiased_topk = [{"id": "topk", "fraction": 0.5}, {"id": "sign", "scale": "unbiased"}]
    refuse(craft_v2(unbiased_topk, body(entries, f32(0.5) + b"\x01", index=b"\x00\x00\x00")), "cannot follow")
