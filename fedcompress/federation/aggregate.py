"""Server side of a round, free of Flower: count bytes and decode strictly.

A reply that does not decode, or decodes to the wrong tensors, makes that client a counted failure with a reason;
it never stops the round. Bytes are counted from the payload as received, before decoding. Aggregation itself
belongs to the privacy mechanism (``ServerMechanism.aggregate``: a weighted mean, or central DP's noisy sum).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np

from fedcompress.codec import CodecError, DecodeLimits, SharedLayout, decode
from fedcompress.federation.robust import capped_weight

__all__ = ["ClientUpdate", "DecodedRound", "check_matches", "decode_updates", "limits_for"]


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


def check_matches(update: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray]) -> None:
    """Raise ``CodecError`` unless ``update`` has exactly the model's tensor names (in order) and shapes."""
    if list(update) != list(reference):
        missing = sorted(set(reference) - set(update))[:3]
        extra = sorted(set(update) - set(reference))[:3]
        raise CodecError(f"tensor names do not match the model (missing {missing}, unexpected {extra})")
    for name, value in update.items():
        if value.shape != reference[name].shape:
            raise CodecError(f"tensor {name!r} has shape {value.shape}, the model has {reference[name].shape}")


def decode_updates(
    replies: Sequence[ClientUpdate],
    reference: Mapping[str, np.ndarray],
    *,
    weight_cap: int | None,
    layout: SharedLayout | None = None,
) -> DecodedRound:
    """Decode every reply against the model's names and shapes; bad ones become failures.

    Weights are the claimed ``num-examples`` capped at ``weight_cap`` (the public samples-per-client), or
    uniform when ``weight_cap`` is None: a client's claim is never used uncapped. ``layout`` (the model and the
    uplink codec) lets compact payloads decode and holds self-describing ones to the same layout.
    """
    limits = limits_for(reference)
    result = DecodedRound(updates=[], failures={}, uplink_bytes=0)
    for reply in sorted(replies, key=lambda r: r.partition_id):  # a fixed order makes float sums reproducible
        result.uplink_bytes += len(reply.payload)
        try:
            update = decode(reply.payload, limits=limits, layout=layout)
            check_matches(update, reference)
        except CodecError as e:
            result.failures[reply.partition_id] = f"bad payload: {e}"
            continue
        weight = 1.0 if weight_cap is None else capped_weight(reply.metrics.get("num-examples"), weight_cap)
        result.updates.append((reply.partition_id, update, weight))
    return result
