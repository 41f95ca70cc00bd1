"""The round's reply loop: every reply collected, progress while replies are missing, the timeout kept."""

from types import SimpleNamespace

from server.replies import send_and_collect


class _SlowGrid:
    """Flower's Grid interface (push_messages, pull_messages): reply i arrives at pull number i + 1."""

    def __init__(self, count: int) -> None:
        self.ids = [f"m{i}" for i in range(count)]
        self.pulls = 0

    def push_messages(self, messages):
        assert len(list(messages)) == len(self.ids)
        return list(self.ids)

    def pull_messages(self, message_ids):
        self.pulls += 1
        ready = [i for i in self.ids[: self.pulls] if i in set(message_ids)]
        return [SimpleNamespace(metadata=SimpleNamespace(reply_to_message_id=i)) for i in ready]


def test_every_reply_is_collected_once_and_progress_is_reported_while_waiting():
    seen = []
    replies = send_and_collect(_SlowGrid(3), [object()] * 3, timeout=60, every=0.0, progress=lambda *a: seen.append(a))
    assert sorted(r.metadata.reply_to_message_id for r in replies) == ["m0", "m1", "m2"]
    assert [received for received, _, _ in seen] == [0, 1, 2] and all(sent == 3 for _, sent, _ in seen)


def test_the_timeout_returns_what_arrived():
    class _Silent(_SlowGrid):
        def pull_messages(self, message_ids):
            return []

    assert send_and_collect(_Silent(2), [object()] * 2, timeout=0.5) == []
