"""A sweep's progress: the ETA over its pending cells, in seconds per federation round measured so far."""

from __future__ import annotations

import re
import time
from collections.abc import Sequence

from simulations.sweep.grid import Cell

__all__ = ["ROUND_LINE", "Progress", "duration"]

ROUND_LINE = re.compile(r"^\[round (\d+)/(\d+)\]\s*(.*)$")  # a run's progress line (RunRecorder.record_round)


def duration(seconds: float | None) -> str:
    """``1h02m`` or ``3m05s`` (``?`` when unknown)."""
    if seconds is None:
        return "?"
    seconds = max(0, round(seconds))
    return (
        f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"
    )


class Progress:
    """ETA over the sweep, in seconds per federation round measured on the cells run so far."""

    def __init__(self, pending: Sequence[Cell]) -> None:
        self.total_rounds = sum(c.config.num_rounds for c in pending)
        self.done_rounds = 0
        self.spent = 0.0
        self.cell_started = time.monotonic()
        self.cell_rounds = 0

    def start_cell(self) -> None:
        self.cell_started, self.cell_rounds = time.monotonic(), 0

    def round_done(self, k: int) -> None:
        self.cell_rounds = k

    def finish_cell(self, cell: Cell) -> None:
        self.spent += time.monotonic() - self.cell_started
        self.done_rounds += cell.config.num_rounds
        self.start_cell()  # nothing of the next cell has run yet

    def eta(self) -> float | None:
        elapsed = time.monotonic() - self.cell_started
        rounds, seconds = self.done_rounds + self.cell_rounds, self.spent + elapsed
        if rounds == 0:
            return None
        return seconds / rounds * (self.total_rounds - rounds)
