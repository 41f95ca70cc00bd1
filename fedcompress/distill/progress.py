"""Progress lines of the edge pipeline: epochs, loss and ETA while a student trains, and each stage as it ends.

Lines go to the ``fedcompress.distill`` logger at INFO (``fedcompress distill`` prints them on stderr with a
timestamp); a library caller sees nothing unless it configures that logger.
"""

from __future__ import annotations

import logging
import time

__all__ = ["LOGGER_NAME", "EpochProgress", "format_seconds"]

LOGGER_NAME = "fedcompress.distill"
log = logging.getLogger(LOGGER_NAME)


def format_seconds(seconds: float) -> str:
    """``"42 s"``, ``"3 min 05 s"`` or ``"1 h 02 min"``."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


class EpochProgress:
    """Logs ``label: epoch e/E, loss L, elapsed, ETA`` at most every ``every_s`` seconds, and at the last epoch.

    The ETA is the mean time per finished epoch times the epochs left.
    """

    def __init__(self, label: str, epochs: int, *, every_s: float = 10.0) -> None:
        self.label, self.epochs, self.every_s = label, epochs, every_s
        self.started = self.last = time.monotonic()

    def update(self, epoch: int, loss: float) -> None:
        """Report that ``epoch`` (1-based) has finished with mean training ``loss``."""
        now = time.monotonic()
        if epoch < self.epochs and now - self.last < self.every_s:
            return
        self.last = now
        elapsed = now - self.started
        eta = elapsed / epoch * (self.epochs - epoch)
        log.info(
            "%s: epoch %d/%d, loss %.3g, %s elapsed, ETA %s",
            self.label,
            epoch,
            self.epochs,
            loss,
            format_seconds(elapsed),
            format_seconds(eta),
        )
