"""Collect a round's replies from the Grid, saying how many are in while a long round runs.

Flower's ``Grid.send_and_receive`` is silent until every reply is in or the timeout passes (28 s of silence in a
round of the main job, minutes on a real federation). This is the same push-then-pull loop, with a progress line
every ``every`` seconds that the round is still waiting: replies in, sampled, elapsed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from flwr.app import Message
from flwr.serverapp import Grid

__all__ = ["send_and_collect"]

_PULL_INTERVAL = 0.2  # seconds between pulls: the in-memory Grid answers at once, a SuperLink in milliseconds


def send_and_collect(
    grid: Grid,
    messages: Iterable[Message],
    *,
    timeout: float,
    every: float = 15.0,
    progress: Callable[[int, int, float], None] | None = None,
) -> list[Message]:
    """Push ``messages``, pull replies until all are in or ``timeout`` seconds pass; return the replies.

    ``progress(received, sent, elapsed)`` is called every ``every`` seconds while replies are missing.
    """
    pending = set(grid.push_messages(messages))
    sent, replies = len(pending), list[Message]()
    start = time.monotonic()
    next_report = start + every
    while pending:
        now = time.monotonic()
        if now - start >= timeout:
            break
        if progress is not None and now >= next_report:
            progress(len(replies), sent, now - start)
            next_report = now + every
        pulled = list(grid.pull_messages(pending))
        replies.extend(pulled)
        pending.difference_update(message.metadata.reply_to_message_id for message in pulled)
        if pending:
            time.sleep(_PULL_INTERVAL)
    return replies
