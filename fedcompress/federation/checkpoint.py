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
from fedcompress.files import atomic_write_json

__all__ = [
    "CHECKPOINT_FILE",
    "PRIVACY_STATE_FILE",
    "Checkpoint",
    "load_checkpoint",
    "load_privacy_state",
    "save_checkpoint",
    "save_privacy_state",
]

CHECKPOINT_FILE = "checkpoint.pt"
#: The privacy mechanism's charges as of the last round SENT (the checkpoint holds those of the last finished
#: round): a crash between sending and checkpointing must not forget releases that already left.
PRIVACY_STATE_FILE = "privacy-state.json"
_SCHEMA = 1


@dataclasses.dataclass
class Checkpoint:
    """Everything the server needs to continue after ``round``."""

    round: int
    weights: dict[str, np.ndarray]
    optimizer: dict[str, np.ndarray]
    meta: dict[str, Any]
    feedback: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)  # EF21 estimates, by client


def save_checkpoint(out_dir: Path, checkpoint: Checkpoint) -> None:
    """Write the checkpoint atomically (a crash leaves the previous one intact)."""
    meta = {"schema": _SCHEMA, "round": checkpoint.round, **checkpoint.meta}
    arrays = {f"weights/{k}": v for k, v in checkpoint.weights.items()}
    arrays.update({f"optimizer/{k}": np.asarray(v) for k, v in checkpoint.optimizer.items()})
    arrays.update({f"feedback/{k}": np.asarray(v) for k, v in checkpoint.feedback.items()})
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8).copy()
    save_arrays(out_dir / CHECKPOINT_FILE, arrays)


def load_checkpoint(out_dir: Path) -> Checkpoint:
    """Read the checkpoint of a run folder.

    Raises
    ------
    FileNotFoundError
        When the folder has no checkpoint.
    ValueError
        Saying the checkpoint is corrupt (truncated, garbage, or not a fedcompress checkpoint), or of a schema
        this version does not read.
    """
    path = out_dir / CHECKPOINT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint in {out_dir} ({CHECKPOINT_FILE} is missing)")
    try:
        arrays = load_arrays(path)
    except ValueError as e:
        raise _corrupt(path, _innermost(e)) from e
    try:
        meta = json.loads(arrays.pop("meta").tobytes().decode())
        round_done = int(meta["round"])
    except KeyError as e:
        raise _corrupt(path, f"it has no {e} entry") from e
    except (ValueError, TypeError, UnicodeDecodeError) as e:  # metadata that is not our JSON object
        raise _corrupt(path, f"unreadable metadata ({_innermost(e)})") from e
    if meta.get("schema") != _SCHEMA:
        raise ValueError(f"checkpoint schema {meta.get('schema')} is not supported (expected {_SCHEMA})")

    def part(prefix: str) -> dict[str, np.ndarray]:
        return {k.removeprefix(prefix): v for k, v in arrays.items() if k.startswith(prefix)}

    return Checkpoint(
        round=round_done,
        weights=part("weights/"),
        optimizer=part("optimizer/"),
        meta=meta,
        feedback=part("feedback/"),
    )


def _corrupt(path: Path, reason: str) -> ValueError:
    return ValueError(f"checkpoint {path} is corrupt (truncated, overwritten or not a checkpoint): {reason}")


def _innermost(error: BaseException) -> str:
    """The innermost cause of a load error, short and on one line.

    Only the first sentence of it: torch's own messages can be empty, span lines, or go on to suggest loading
    the file with ``weights_only=False``, which is never the fix for a damaged file.
    """
    while error.__cause__ is not None:
        error = error.__cause__
    text = " ".join(str(error).split()).split(". ")[0][:120]
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def save_privacy_state(out_dir: Path, server_round: int, state: dict[str, Any]) -> None:
    """Write the mechanism's accounting state as of ``server_round``'s send (atomic JSON; counts only)."""
    atomic_write_json(out_dir / PRIVACY_STATE_FILE, {"round": server_round, "state": state})


def load_privacy_state(out_dir: Path) -> dict[str, Any] | None:
    """What :func:`save_privacy_state` wrote, or None when the run never sent a round."""
    path = out_dir / PRIVACY_STATE_FILE
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    if not isinstance(data, dict) or not isinstance(data.get("round"), int) or not isinstance(data.get("state"), dict):
        raise ValueError(f"{path} is not a fedcompress privacy state")
    return data
