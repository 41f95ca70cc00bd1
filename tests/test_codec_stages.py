"""Each lossy stage meets the bound that follows from its definition; the packing helpers round-trip."""

from __future__ import annotations

import numpy as np
import pytest
from test_codec_support import sample_update

from fedcompress.codec import CodecError, SharedLayout, decode, encode, encode_with_stats, parse_spec
from fedcompress.codec.bitpack import pack_codes, packed_size, unpack_codes
from fedcompress.codec.hadamard import fwht
from fedcompress.codec.lowrank import LowRank, orthonormalize
from fedcompress.codec.quantize import ALLOWED_BITS, Quantize
from fedcompress.codec.randk import random_mask
from fedcompress.codec.rotate import Rotate
from fedcompress.codec.sign import Sign
from fedcompress.codec.topk import decode_indices, encode_indices, largest_indices
from fedcompress.codec.varint import decode_varints, encode_varint, encode_varints

# ---- packing ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bits", ALLOWED_BITS)
@pytest.mark.parametrize("count", [0, 1, 7, 9, 1001])
def test_bitpack_round_trips_every_width(bits: int, count: int) -> None:
    rng = np.random.default_rng(bits * 1000 + count)
    codes = rng.integers(0, 1 << bits, count).astype(np.uint16 if bits == 16 else np.uint8)
    packed = pack_codes(codes, bits)
    assert len(packed) == packed_size(count, bits) == (count * bits + 7) // 8
    np.testing.assert_array_equal(unpack_codes(packed, count, bits), codes)


def test_four_bit_codes_take_half_a_byte_each() -> None:
    assert pack_codes(np.array([1, 2, 15, 0], dtype=np.uint8), 4) == bytes([0x21, 0x0F])


def test_varints_round_trip_and_reject_malformed_input() -> None:
    values = np.array([0, 1, 127, 128, 300, 16383, 16384, 2**28, 2**35 - 1], dtype=np.uint64)
    data = encode_varints(values)
    assert data == b"".join(encode_varint(int(v)) for v in values)
    np.testing.assert_array_equal(decode_varints(data, values.size), values.astype(np.int64))
    with pytest.raises(CodecError, match="expected"):
        decode_varints(data[:-1], values.size)  # last value unterminated
    with pytest.raises(CodecError, match="expected"):
        decode_varints(data, values.size + 1)
    with pytest.raises(CodecError, match="longer than"):
        decode_varints(b"\x80\x80\x80\x80\x80\x01", 1)


# ---- quantization -------------------------------------------------------------------------------------


def _block_ranges(values: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Per entry, the scale (max - min) of the block it belongs to."""
    starts = np.cumsum(lengths) - lengths
    scale = np.maximum.reduceat(values, starts) - np.minimum.reduceat(values, starts)
    return np.repeat(scale.astype(np.float64), lengths)


@pytest.mark.parametrize("bits", ALLOWED_BITS)
@pytest.mark.parametrize("block", [1, 7, 256])
def test_quantization_error_is_below_one_step_per_block(bits: int, block: int) -> None:
    rng = np.random.default_rng(bits + block)
    segments = np.array([5, 0, 300, 1, 64], dtype=np.int64)
    values = (rng.standard_normal(int(segments.sum())) * rng.choice([1e-3, 1.0, 50.0], segments.sum())).astype(
        np.float32
    )
    stage = Quantize(bits=bits, block=block)
    section, decoded = stage.encode(values, np.random.default_rng(1), segments)
    assert len(section) == stage.section_size(segments)
    np.testing.assert_array_equal(stage.decode(section, segments), decoded)
    # Definition: scale = block max - block min, levels 2**B - 1 steps apart; rounding picks a neighbour.
    step = _block_ranges(values, stage.block_lengths(segments)) / (2**bits - 1)
    error = np.abs(decoded.astype(np.float64) - values)
    assert np.all(error <= step * (1 + 1e-5) + 1e-12 * np.abs(values))


def test_quantization_blocks_restart_at_segment_boundaries() -> None:
    stage = Quantize(bits=4, block=4)
    np.testing.assert_array_equal(stage.block_lengths(np.array([6, 0, 3, 8])), [4, 2, 3, 4, 4])


def test_constant_blocks_are_exact() -> None:
    values = np.array([2.5] * 10 + [0.0] * 10, dtype=np.float32)
    _, decoded = Quantize(bits=1, block=10).encode(values, np.random.default_rng(0), np.array([20]))
    np.testing.assert_array_equal(decoded, values)


@pytest.mark.parametrize("bits", [1, 3, 8])
def test_fixed_range_clamps_then_rounds_within_one_step(bits: int) -> None:
    stage = Quantize(bits=bits, range=0.5)
    values = np.linspace(-0.8, 0.8, 101, dtype=np.float32)
    section, decoded = stage.encode(values, np.random.default_rng(2), np.array([values.size]))
    assert len(section) == packed_size(values.size, bits)  # no scales travel
    clamped = np.clip(values, -0.5, 0.5)
    assert np.all(np.abs(decoded - clamped) <= 1.0 / (2**bits - 1) * (1 + 1e-5))
    assert stage.data_independent and not Quantize(bits=bits).data_independent


def test_stochastic_rounding_is_unbiased() -> None:
    """The mean of many independent decodes converges to the input at the rate its variance predicts."""
    rng = np.random.default_rng(3)
    update = {"w": rng.standard_normal(64).astype(np.float32)}
    runs = 1000
    total = np.zeros(64)
    for seed in range(runs):
        total += decode(encode(update, "q:2:block=64", seed=seed))["w"]
    mean = total / runs
    x = update["w"].astype(np.float64)
    step = (x.max() - x.min()) / 3  # one block: scale / (2**2 - 1)
    frac = ((x - x.min()) / step) % 1.0
    sigma = step * np.sqrt(frac * (1 - frac) / runs)  # std of the mean of Bernoulli rounding
    assert np.all(np.abs(mean - x) <= 5 * sigma + 1e-6)
    assert np.abs(mean - x).max() > 0  # it really is random


# ---- sparsification -----------------------------------------------------------------------------------


@pytest.mark.parametrize("fraction", [0.01, 0.1, 0.5, 1.0])
def test_topk_keeps_exactly_the_k_largest_magnitudes(fraction: float) -> None:
    rng = np.random.default_rng(4)
    update = {
        "a": rng.standard_normal((30, 40)).astype(np.float32),
        "b": 10 * rng.standard_normal(50).astype(np.float32),
    }
    decoded = decode(encode(update, f"topk:{fraction}"))
    flat_in = np.concatenate([v.ravel() for v in update.values()])
    flat_out = np.concatenate([v.ravel() for v in decoded.values()])
    kept = flat_out != 0
    assert kept.sum() == max(1, round(fraction * flat_in.size))
    np.testing.assert_array_equal(flat_out[kept], flat_in[kept])  # no quantizer: kept values exact
    if not kept.all():
        assert np.abs(flat_in[kept]).min() >= np.abs(flat_in[~kept]).max()


def test_topk_with_ties_keeps_exactly_k() -> None:
    magnitudes = np.array([1, 3, 3, 3, 2, 3, 0], dtype=np.float32)
    np.testing.assert_array_equal(largest_indices(magnitudes, 3), [1, 2, 3])


@pytest.mark.parametrize(("size", "count"), [(1000, 5), (1000, 900), (9, 9), (0, 0), (1, 1)])
def test_topk_indices_use_the_smaller_encoding(size: int, count: int) -> None:
    indices = np.sort(np.random.default_rng(size).choice(size, count, replace=False)).astype(np.int64)
    section = encode_indices(indices, size)
    gaps = encode_varints(np.diff(indices, prepend=-1) - 1)
    assert len(section) == 1 + min(len(gaps), (size + 7) // 8)
    np.testing.assert_array_equal(decode_indices(section, count, size), indices)


def test_random_k_mask_is_reproducible_from_the_seed_and_ignores_the_data() -> None:
    a = {"w": np.random.default_rng(5).standard_normal(1000).astype(np.float32)}
    b = {"w": np.random.default_rng(6).standard_normal(1000).astype(np.float32)}
    kept = [decode(encode(u, "randk:0.1", seed=seed))["w"] != 0 for u, seed in [(a, 7), (b, 7), (a, 8)]]
    np.testing.assert_array_equal(kept[0], kept[1])  # same seed, other data: same mask
    assert not np.array_equal(kept[0], kept[2])  # other seed: other mask
    assert kept[0].sum() == 100
    np.testing.assert_array_equal(np.flatnonzero(kept[0]), random_mask(1000, 100, 7))


def test_random_k_sends_no_indices() -> None:
    update = {"w": np.ones(4000, dtype=np.float32)}
    assert len(encode(update, "randk:0.25")) - len(encode({"w": np.ones(1000, np.float32)}, "none")) < 64


# ---- low rank -----------------------------------------------------------------------------------------


def test_exact_svd_error_is_the_tail_singular_energy() -> None:
    matrix = np.random.default_rng(9).standard_normal((40, 60)).astype(np.float32)
    decoded = decode(encode({"w": matrix}, "lowrank:5:svd"))["w"]
    singular = np.linalg.svd(matrix.astype(np.float64), compute_uv=False)
    error_sq = np.sum((decoded.astype(np.float64) - matrix) ** 2)
    assert error_sq == pytest.approx(np.sum(singular[5:] ** 2), rel=1e-4)


def test_conv_kernels_are_factored_as_out_by_in_times_kernel() -> None:
    rng = np.random.default_rng(10)
    kernel = (rng.standard_normal((8, 2)) @ rng.standard_normal((2, 36))).astype(np.float32).reshape(8, 4, 3, 3)
    decoded = decode(encode({"k": kernel}, "lowrank:2:svd"))["k"]  # the 8 x 36 view has rank 2
    np.testing.assert_allclose(decoded, kernel, atol=1e-4)
    _, stats = encode_with_stats({"k": kernel}, "lowrank:2")
    assert stats.stages["lowrank:2:power"]["values_out"] == 2 * (8 + 36)


def test_tensors_where_factors_save_nothing_pass_through() -> None:
    update = {
        "bias": np.arange(5, dtype=np.float32),
        "tiny": np.ones((2, 2), np.float32),
        "one": np.ones((1, 9), np.float32),
    }
    decoded = decode(encode(update, "lowrank:1"))
    for name, value in update.items():
        np.testing.assert_array_equal(decoded[name], value)


def test_power_iteration_with_warm_start_converges_to_the_svd() -> None:
    rng = np.random.default_rng(11)
    matrix = (rng.standard_normal((50, 2)) @ np.diag([5.0, 2.0]) @ rng.standard_normal((2, 70))).astype(np.float32)
    matrix += 0.01 * rng.standard_normal(matrix.shape).astype(np.float32)
    stage, q = LowRank(rank=2), None
    errors = []
    for _ in range(6):
        p, q = stage.encode(matrix, q, rng)
        errors.append(np.linalg.norm(LowRank.decode(p, q) - matrix))
    tail = np.sqrt(np.sum(np.linalg.svd(matrix.astype(np.float64), compute_uv=False)[2:] ** 2))
    assert errors[-1] <= errors[0] and errors[-1] == pytest.approx(tail, rel=1e-3)


def test_orthonormalize_gives_orthonormal_or_zero_columns() -> None:
    columns = np.random.default_rng(12).standard_normal((20, 3))
    columns[:, 2] = columns[:, 0] * 2  # dependent
    out = orthonormalize(columns)
    gram = out.T @ out
    np.testing.assert_allclose(gram, np.diag([1.0, 1.0, 0.0]), atol=1e-12)


# ---- rotation -----------------------------------------------------------------------------------------


def _sylvester(n: int) -> np.ndarray:
    """The Sylvester Hadamard matrix H_n by its definition: entry (i, j) is (-1)^popcount(i & j)."""
    i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    return np.where(np.vectorize(lambda v: bin(v).count("1") % 2)(i & j), -1.0, 1.0)


@pytest.mark.parametrize("n", [1, 2, 4, 8, 32, 128, 512])
def test_fwht_multiplies_by_the_hadamard_matrix(n: int) -> None:
    rows = np.random.default_rng(n).standard_normal((3, n)).astype(np.float32)
    expected = rows.astype(np.float64) @ _sylvester(n)
    np.testing.assert_allclose(fwht(rows), expected, rtol=0, atol=1e-5 * np.sqrt(n))
    in_place = rows.copy()
    assert fwht(in_place, overwrite=True) is in_place
    np.testing.assert_array_equal(in_place, fwht(rows))


@pytest.mark.parametrize(("chunk", "size"), [(8, 0), (8, 1), (8, 5), (8, 16), (8, 17), (4096, 5000), (1, 3)])
def test_rotation_is_orthonormal_and_inverted_chunk_by_chunk(chunk: int, size: int) -> None:
    stage = Rotate(chunk=chunk)
    full, rest = divmod(size, chunk)
    assert stage.chunk_lengths(size).tolist() == [chunk] * full + ([1 << (rest - 1).bit_length()] if rest else [])
    x = np.random.default_rng(size).standard_normal(size).astype(np.float32)
    y = stage.encode(x, seed=3)
    assert y.size == int(stage.chunk_lengths(size).sum()) and y.dtype == np.float32
    assert np.linalg.norm(y.astype(np.float64)) == pytest.approx(np.linalg.norm(x.astype(np.float64)), rel=1e-6)
    np.testing.assert_allclose(stage.decode(y, size, seed=3), x, atol=1e-6)
    with pytest.raises(ValueError, match="values"):
        stage.decode(y[:-1], size, seed=3) if size else stage.decode(np.ones(1, np.float32), size, seed=3)


def test_rotation_spreads_a_spike_over_its_chunk_and_depends_on_the_seed() -> None:
    spike = np.zeros(256, np.float32)
    spike[17] = 3.0
    y = Rotate(chunk=256).encode(spike, seed=1)
    np.testing.assert_allclose(np.abs(y), 3.0 / 16, rtol=1e-6)  # |H e_i| / sqrt(n) = 1 / sqrt(256) everywhere
    assert not np.array_equal(y, Rotate(chunk=256).encode(spike, seed=2))
    np.testing.assert_array_equal(y, Rotate(chunk=256).encode(spike, seed=1))


def test_a_rotated_update_is_lossless_up_to_float32_rounding() -> None:
    update = sample_update(3)
    _, stats = encode_with_stats(update, "rotate:64", seed=1)
    assert stats.rel_l2_error < 1e-6
    size = int(stats.stages["rotate:64"]["values_in"])  # 5403 = 84 chunks of 64 + 27, padded to 32
    assert stats.stages["rotate:64"]["values_out"] == 64 * (size // 64) + 32 == 5408


# ---- one-bit signs ------------------------------------------------------------------------------------


def test_sign_mse_scale_is_the_least_squares_fit_per_segment() -> None:
    rng = np.random.default_rng(20)
    segments = np.array([5, 0, 40, 1], dtype=np.int64)
    values = rng.standard_normal(int(segments.sum())).astype(np.float32)
    section, decoded = Sign().encode(values, rng, segments)
    assert len(section) == Sign().section_size(segments) == 4 * 3 + (46 + 7) // 8
    np.testing.assert_array_equal(Sign().decode(section, segments), decoded)
    start = 0
    for count in segments[segments > 0]:
        part, fit = values[start : start + count].astype(np.float64), decoded[start : start + count]
        scale = np.abs(part).sum() / count
        np.testing.assert_allclose(fit, np.where(part < 0, -scale, scale), rtol=1e-6)
        error = np.sum((fit - part) ** 2)
        assert error == pytest.approx(np.sum(part**2) - np.abs(part).sum() ** 2 / count, rel=1e-4, abs=1e-9)
        start += count


def test_sign_unbiased_scale_keeps_the_projection_and_corrects_for_what_was_dropped() -> None:
    rng = np.random.default_rng(21)
    kept = rng.standard_normal(30).astype(np.float32)
    _, full = Sign(scale="unbiased").encode(kept, rng, np.array([30]))
    x = kept.astype(np.float64)
    assert float(np.dot(full, x)) == pytest.approx(float(np.dot(x, x)), rel=1e-6)  # <x_hat, x> = ||x||^2
    _, sampled = Sign(scale="unbiased").encode(kept, rng, np.array([30]), totals=np.array([300]))
    np.testing.assert_allclose(sampled, 10 * full, rtol=1e-6)  # n / k = 300 / 30


def test_rotated_sign_unbiased_has_exact_projection_on_the_input() -> None:
    """DRIVE's unbiased scale ||x||^2 / ||R x||_1: the decoded vector's projection on x is x itself."""
    x = np.random.default_rng(22).standard_normal(1024).astype(np.float32)
    decoded = decode(encode({"w": x}, "rotate:256+sign:scale=unbiased", seed=4))["w"].astype(np.float64)
    x64 = x.astype(np.float64)
    assert float(np.dot(decoded, x64)) == pytest.approx(float(np.dot(x64, x64)), rel=1e-5)


def test_rotated_random_k_signs_are_unbiased() -> None:
    """The mean of decodes over seeds (rotation and mask) converges to the input at the rate of its spread."""
    x = np.random.default_rng(23).standard_normal(64).astype(np.float32)
    runs = 1000
    samples = np.stack(
        [decode(encode({"w": x}, "rotate:64+randk:0.25+sign:scale=unbiased", seed=s))["w"] for s in range(runs)]
    ).astype(np.float64)
    standard_error = samples.std(axis=0) / np.sqrt(runs)
    assert np.all(np.abs(samples.mean(axis=0) - x) <= 5 * standard_error)
    biased = np.stack([decode(encode({"w": x}, "rotate:64+randk:0.25+sign", seed=s))["w"] for s in range(200)]).mean(
        axis=0
    )
    assert np.linalg.norm(biased) < 0.5 * np.linalg.norm(x)  # the MSE scale shrinks: not unbiased


def test_sub_bit_budgets_cost_under_a_tenth_of_a_bit_per_value() -> None:
    update = {"w": np.random.default_rng(24).standard_normal(1 << 16).astype(np.float32)}
    spec = "rotate+randk:0.05+sign"
    payload, stats = encode_with_stats(update, spec, seed=5, framing="compact")
    assert 8 * len(payload) / update["w"].size < 0.1
    assert stats.stages["sign:scale=mse"]["values"] == round(0.05 * (1 << 16))
    decoded = decode(payload, layout=SharedLayout.of(update, spec))["w"]
    assert np.count_nonzero(decoded) > 0.9 * update["w"].size  # the inverse rotation spreads the kept values


def test_sign_refuses_malformed_sections() -> None:
    segments = np.array([3, 9], dtype=np.int64)
    section, _ = Sign().encode(np.arange(-6, 6, dtype=np.float32), np.random.default_rng(0), segments)
    with pytest.raises(ValueError, match="bytes"):
        Sign().decode(section[:-1], segments)
    negative = np.array([-1.0], dtype="<f4").tobytes() + section[4:]
    with pytest.raises(ValueError, match="negative"):
        Sign().decode(negative, segments)
    padded = section[:-1] + bytes([section[-1] | 0x80])
    with pytest.raises(ValueError, match="past the last"):
        Sign().decode(padded, segments)


def test_randk_whole_keeps_small_tensors_whole_and_a_random_fraction_of_the_rest():
    rng = np.random.default_rng(0)
    update = {"w": rng.normal(size=(50, 20)).astype(np.float32), "b": rng.normal(size=20).astype(np.float32)}
    stage = parse_spec("randk:0.1:whole=32").sparsifier
    assert stage.spec() == "randk:0.1:whole=32" and stage.get_config() == {"id": "randk", "fraction": 0.1, "whole": 32}
    assert parse_spec("randk:0.1").sparsifier.get_config() == {"id": "randk", "fraction": 0.1}  # old payloads' bytes
    out = decode(encode(update, "randk:0.1:whole=32", seed=5))
    np.testing.assert_array_equal(out["b"], update["b"])
    kept = np.flatnonzero(out["w"])
    assert kept.size == 100 and np.array_equal(out["w"].ravel()[kept], update["w"].ravel()[kept])
    again = decode(encode({k: v * 2 for k, v in update.items()}, "randk:0.1:whole=32", seed=5))
    assert np.array_equal(np.flatnonzero(again["w"]), kept)  # data-independent: the same mask for other values
    with pytest.raises(ValueError, match="after 'rotate'"):
        parse_spec("rotate+randk:0.1:whole=32")
    with pytest.raises(ValueError, match="whole"):
        parse_spec("randk:0.1:wholes=3")
