"""A client's state between rounds (error-feedback residuals, PowerSGD memory, privacy accountant, last release).

State is a flat ``dict[str, numpy.ndarray]`` tagged with the round that produced it (key ``"round"``).
It lives in Flower's ``context.state`` and, when the run has an output folder, also on the client's disk,
one file per round with the last two kept. A server restarted from a checkpoint re-runs a round; the client
then has two states (:class:`SavedState`): the one from BEFORE that round, where its codec memory restarts (so a
resumed run equals an uninterrupted one), and its LATEST one, whose privacy accountant never rewinds and which
holds the release it already sent for that round. Nothing secret is stored: no noise seed, only what was sent.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from fedcompress.files import atomic_write_bytes

__all__ = ["ROUND_KEY", "SavedState", "load_state_from_disk", "save_state_to_disk", "select_state", "state_round"]

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
    # The site's own: error-feedback residuals of raw updates, its accountant, the release it sent. Owner only.
    atomic_write_bytes(folder / f"round-{state_round(state):06d}.npz", buffer.getvalue(), mode=0o600)
    for old in sorted(folder.glob("round-*.npz"))[:-_KEEP]:
        old.unlink(missing_ok=True)


def load_state_from_disk(root: Path, partition_id: int, before_round: int | None = None) -> dict[str, np.ndarray]:
    """The newest saved state from a round earlier than ``before_round`` (any round if None; {} if none)."""
    folder = _folder(root, partition_id)
    limit = before_round if before_round is not None else 1 << 62
    candidates = [p for p in sorted(folder.glob("round-*.npz")) if int(p.stem.split("-")[1]) < limit]
    if not candidates:
        return {}
    with np.load(candidates[-1], allow_pickle=False) as data:
        return {k: data[k].copy() for k in data.files}


@dataclasses.dataclass(frozen=True)
class SavedState:
    """What a client starts a round from: its state before the round, and its newest state of all."""

    before: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    latest: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)


def select_state(
    in_memory: Mapping[str, np.ndarray] | None,
    *,
    server_round: int,
    disk_root: Path | None,
    partition_id: int,
) -> SavedState:
    """The state before ``server_round`` (memory if it predates the round, else disk) and the newest state."""
    memory = dict(in_memory or {})
    newest_on_disk = load_state_from_disk(disk_root, partition_id) if disk_root is not None else {}
    latest = memory if state_round(memory) >= state_round(newest_on_disk) else newest_on_disk
    if memory and state_round(memory) < server_round:
        before = memory
    elif disk_root is not None:
        before = load_state_from_disk(disk_root, partition_id, server_round)
    else:
        before = {}
    return SavedState(before=before, latest=latest)
