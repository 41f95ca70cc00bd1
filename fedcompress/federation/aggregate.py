"""Server side of a round, free of Flower: count bytes, decode strictly, aggregate.

A reply that does not decode, or decodes to the wrong tensors, makes that client a counted failure with a reason;
it never stops the round. Bytes are counted from the payload as received, before decoding.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np

from fedcompress.codec import CodecError, DecodeLimits, decode
from fedcompress.config import RunConfig
from fedcompress.privacy import central_aggregate
from fedcompress.seeding import numpy_rng

__all__ = ["ClientUpdate", "DecodedRound", "aggregate_updates", "decode_updates", "limits_for"]


@dataclasses.dataclass(frozen=True)
class ClientUpdate:
    """One client's reply as plain data."""

    partition_id: int
    payload: bytes
    metrics: Mapping[str, float | int]


@dataclasses.dataclass
class DecodedRound:
    """Decoded updates of a round, and what failed."""

    updates: list[tuple[int, dict[str, np.ndarray], float]]  # (partition id, delta, weight)
    failures: dict[int, str]
    uplink_bytes: int


def limits_for(reference: Mapping[str, np.ndarray]) -> DecodeLimits:
    """Decode limits that admit exactly a model of this size, with room for headers, and nothing larger."""
    elements = sum(int(v.size) for v in reference.values())
    return DecodeLimits(
        max_tensors=len(reference),
        max_elements=elements,
        max_decompressed_bytes=16 * elements + 1_048_576,
        max_payload_bytes=16 * elements + 1_048_576,
    )


def _check_matches(update: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray]) -> None:
    if list(update) != list(reference):
        missing = sorted(set(reference) - set(update))[:3]
        extra = sorted(set(update) - set(reference))[:3]
        raise CodecError(f"tensor names do not match the model (missing {missing}, unexpected {extra})")
    for name, value in update.items():
        if value.shape != reference[name].shape:
            raise CodecError(f"tensor {name!r} has shape {value.shape}, the model has {reference[name].shape}")


def decode_updates(
    replies: Sequence[ClientUpdate], reference: Mapping[str, np.ndarray], *, uniform_weights: bool
) -> DecodedRound:
    """Decode every reply against the model's names and shapes; bad ones become failures."""
    limits = limits_for(reference)
    result = DecodedRound(updates=[], failures={}, uplink_bytes=0)
    for reply in sorted(replies, key=lambda r: r.partition_id):  # a fixed order makes float sums reproducible
        result.uplink_bytes += len(reply.payload)
        try:
            update = decode(reply.payload, limits=limits)
            _check_matches(update, reference)
        except CodecError as e:
            result.failures[reply.partition_id] = f"bad payload: {e}"
            continue
        weight = 1.0 if uniform_weights else float(reply.metrics.get("num-examples", 0))
        if not (np.isfinite(weight) and weight > 0):
            result.failures[reply.partition_id] = f"bad num-examples {reply.metrics.get('num-examples')!r}"
            continue
        result.updates.append((reply.partition_id, update, weight))
    return result


def aggregate_updates(
    decoded: DecodedRound,
    cfg: RunConfig,
    *,
    noise_multiplier: float,
    server_round: int,
    reference: Mapping[str, np.ndarray],
) -> dict[str, np.ndarray]:
    """Combine decoded deltas into one: weighted mean, or central client-level DP (clip, sum, noise).

    Central DP divides by the EXPECTED number of clients (fraction x N), not the realised count, so the
    sensitivity of the average is C / (qN) whatever Poisson sampling drew. ``reference`` gives the shapes.
    """
    updates = [u for _, u, _ in decoded.updates]
    if cfg.dp == "client" and cfg.dp_noise == "central":
        # A zero update adds nothing to the clipped sum; it only gives the noise its shapes when no one replied.
        zero = {k: np.zeros_like(v, dtype=np.float32) for k, v in reference.items()}
        return central_aggregate(
            updates or [zero],
            clip_norm=cfg.clip_norm,
            noise_multiplier=noise_multiplier,
            expected_clients=cfg.fraction_train * cfg.num_clients,
            generator=numpy_rng(cfg.seed, "central-noise", server_round),
        )
    weights = np.array([w for _, _, w in decoded.updates], dtype=np.float64)
    weights /= weights.sum()
    return {
        name: sum((w * u[name].astype(np.float64) for w, u in zip(weights, updates, strict=True))).astype(np.float32)
        for name in updates[0]
    }
