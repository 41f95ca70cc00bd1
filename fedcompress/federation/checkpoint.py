"""Server checkpoints: one atomic file per run folder, rewritten after every round.

The file is a tensors-only torch file (read with ``weights_only=True``) holding the global weights, the server
optimizer state and a JSON metadata blob (round, rows so far, privacy ledger) stored as a uint8 tensor, so the
weights and the round they belong to can never be torn apart by a crash.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

from fedcompress.federation.weights import load_arrays, save_arrays

__all__ = ["CHECKPOINT_FILE", "Checkpoint", "load_checkpoint", "save_checkpoint"]

CHECKPOINT_FILE = "checkpoint.pt"
_SCHEMA = 1


@dataclasses.dataclass
class Checkpoint:
    """Everything the server needs to continue after ``round``."""

    round: int
    weights: dict[str, np.ndarray]
    optimizer: dict[str, np.ndarray]
    meta: dict[str, Any]


def save_checkpoint(out_dir: Path, checkpoint: Checkpoint) -> None:
    """Write the checkpoint atomically (a crash leaves the previous one intact)."""
    meta = {"schema": _SCHEMA, "round": checkpoint.round, **checkpoint.meta}
    arrays = {f"weights/{k}": v for k, v in checkpoint.weights.items()}
    arrays.update({f"optimizer/{k}": np.asarray(v) for k, v in checkpoint.optimizer.items()})
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8).copy()
    save_arrays(out_dir / CHECKPOINT_FILE, arrays)


def load_checkpoint(out_dir: Path) -> Checkpoint:
    """Read the checkpoint of a run folder; a missing or foreign file raises ``FileNotFoundError``/``ValueError``."""
    arrays = load_arrays(out_dir / CHECKPOINT_FILE)
    if "meta" not in arrays:
        raise ValueError(f"{out_dir / CHECKPOINT_FILE} has no metadata: not a fedcompress checkpoint")
    meta = json.loads(arrays.pop("meta").tobytes().decode())
    if meta.get("schema") != _SCHEMA:
        raise ValueError(f"checkpoint schema {meta.get('schema')} is not supported (expected {_SCHEMA})")

    def part(prefix: str) -> dict[str, np.ndarray]:
        return {k.removeprefix(prefix): v for k, v in arrays.items() if k.startswith(prefix)}

    return Checkpoint(round=int(meta["round"]), weights=part("weights/"), optimizer=part("optimizer/"), meta=meta)
