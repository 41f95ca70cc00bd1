"""A client's state between rounds (error-feedback residuals, PowerSGD memory, privacy accountant).

State is a flat ``dict[str, numpy.ndarray]`` tagged with the round that produced it (key ``"round"``).
It lives in Flower's ``context.state`` and, when the run has an output folder, also on the client's disk,
one file per round with the last two kept, so a server restarted from a checkpoint can re-run a round and the
client starts again from the state it had BEFORE that round: a resumed run equals an uninterrupted one.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from fedcompress.files import atomic_write_bytes

__all__ = ["ROUND_KEY", "load_state_from_disk", "save_state_to_disk", "select_state"]

ROUND_KEY = "round"
_KEEP = 2


def _folder(root: Path, partition_id: int) -> Path:
    return root / "client-state" / f"partition-{partition_id}"


def state_round(state: Mapping[str, np.ndarray] | None) -> int:
    """The round that produced ``state`` (0 for no state)."""
    if not state or ROUND_KEY not in state:
        return 0
    return int(np.asarray(state[ROUND_KEY]))


def save_state_to_disk(root: Path, partition_id: int, state: Mapping[str, np.ndarray]) -> None:
    """Write ``state`` as ``round-NNNNNN.npz`` (atomic) and drop files older than the last two."""
    folder = _folder(root, partition_id)
    buffer = io.BytesIO()
    np.savez(buffer, **{k: np.asarray(v) for k, v in state.items()})  # type: ignore[arg-type]
    atomic_write_bytes(folder / f"round-{state_round(state):06d}.npz", buffer.getvalue())
    for old in sorted(folder.glob("round-*.npz"))[:-_KEEP]:
        old.unlink(missing_ok=True)


def load_state_from_disk(root: Path, partition_id: int, before_round: int) -> dict[str, np.ndarray]:
    """The newest saved state from a round earlier than ``before_round`` (empty dict if none)."""
    folder = _folder(root, partition_id)
    candidates = [p for p in sorted(folder.glob("round-*.npz")) if int(p.stem.split("-")[1]) < before_round]
    if not candidates:
        return {}
    with np.load(candidates[-1], allow_pickle=False) as data:
        return {k: data[k].copy() for k in data.files}


def select_state(
    in_memory: Mapping[str, np.ndarray] | None,
    *,
    server_round: int,
    disk_root: Path | None,
    partition_id: int,
) -> dict[str, np.ndarray]:
    """Pick the state to start ``server_round`` from: memory if it predates the round, else disk, else empty."""
    if in_memory and state_round(in_memory) < server_round:
        return dict(in_memory)
    if disk_root is not None:
        return load_state_from_disk(disk_root, partition_id, server_round)
    return {}
