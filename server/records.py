"""The wire contract between ServerApp and ClientApp: codec bytes as the single uint8 array of an ArrayRecord.

Light on purpose (Flower and numpy only): a SuperNode starts a fresh ClientApp process for every message, so
the handshake must not pay for torch.
"""

from __future__ import annotations

import numpy as np
from flwr.app import Array, ArrayRecord

__all__ = ["payload_from_record", "payload_record"]


def payload_record(payload: bytes) -> ArrayRecord:
    """Wrap codec bytes as the single uint8 array of an ArrayRecord."""
    return ArrayRecord({"payload": Array(np.frombuffer(payload, dtype=np.uint8))})


def payload_from_record(record: ArrayRecord) -> bytes:
    """The codec bytes of an ArrayRecord made by ``payload_record`` (ValueError if it is not one)."""
    if list(record.keys()) != ["payload"]:
        raise ValueError(f"expected one array named 'payload', got {list(record.keys())}")
    array = record["payload"]
    if array.dtype != "uint8" or len(array.shape) != 1:
        raise ValueError(f"payload must be a 1-D uint8 array, got {array.dtype} {array.shape}")
    return array.numpy().tobytes()
