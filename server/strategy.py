"""CompressedFedAvg: a Flower strategy whose messages carry codec payloads instead of dense weights.

It owns the Flower side of a round (messages in, messages out) and hands plain bytes and arrays to
``fedcompress.federation`` (decoding) and to the privacy mechanism (aggregation: a weighted mean, or central
DP's noisy sum, which wraps it). Clients are addressed by partition id, learned once by a handshake; the loop
samples them with the mechanism's generator (Flower's own sampler uses the global RNG and waits for nodes
without a timeout). :meth:`CompressedFedAvg.aggregate_replies` returns a typed :class:`RoundOutcome`.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterable

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fedcompress.codec import CodecError, SharedLayout
from fedcompress.config import RunConfig
from fedcompress.errors import RunError
from fedcompress.federation.aggregate import ClientUpdate, DecodedRound, decode_updates
from fedcompress.federation.ef21 import BASIS_KEY, ServerEstimates
from fedcompress.federation.robust import GuardVerdicts, UpdateGuard, build_aggregator
from fedcompress.privacy.mechanisms import ServerMechanism
from server.records import payload_from_record

__all__ = ["CompressedFedAvg", "RoundOutcome"]

log = logging.getLogger("fedcompress")
_SIMULATION_WAIT_S = 10.0


def _short_reason(reason: str | None, limit: int = 400) -> str:
    """The client's own message from an error reply (Ray wraps it in two tracebacks), at most ``limit`` chars."""
    reason = reason or ""
    text = reason.rsplit("Message: ", 1)[-1] if "Message: " in reason else reason
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    message = (lines[0] if "Message: " in reason else lines[-1]) if lines else "no reason given"
    return message.rstrip("'>")[:limit]


@dataclasses.dataclass(frozen=True)
class RoundOutcome:
    """A round's replies: the aggregated delta (None when skipped), what decoded, what the guard did, the metrics."""

    delta: dict[str, np.ndarray] | None
    decoded: DecodedRound
    client_metrics: dict[int, dict[str, float | int]]
    guard: GuardVerdicts

    @property
    def aggregated(self) -> int:
        """How many updates went into the aggregate (decoded and passed by the guard)."""
        return len(self.decoded.updates) - sum(v.startswith("rejected") for v in self.guard.verdicts.values())

    @property
    def skipped(self) -> bool:
        """True when too few replies were usable and the model stays as it was."""
        return self.delta is None


def _to_estimates(
    estimates: ServerEstimates,
    decoded: DecodedRound,
    client_metrics: dict[int, dict[str, float | int]],
    server_round: int,
) -> None:
    """EF21: replace each decoded change by the client's moved estimate; a basis out of step is a failure."""
    kept = []
    for partition, change, weight in decoded.updates:
        try:
            claimed = client_metrics[partition].get(BASIS_KEY)
            kept.append((partition, estimates.receive(partition, change, claimed, server_round), weight))
        except CodecError as e:
            decoded.failures[partition] = f"bad payload: {e}"
    decoded.updates = kept


class CompressedFedAvg(Strategy):
    """FedAvg over compressed updates; aggregation itself lives in ``fedcompress.federation.aggregate``.

    Parameters
    ----------
    cfg : RunConfig
        The run's settings; sent to every client in each train message so all run modes agree.
    mechanism : ServerMechanism
        The privacy mechanism's server half; it aggregates the decoded updates.
    """

    def __init__(self, cfg: RunConfig, mechanism: ServerMechanism) -> None:
        self.cfg = cfg
        self.mechanism = mechanism
        self.aggregator = build_aggregator(cfg)
        # Central DP clips every update to C itself; a bound relative to other clients would change its sensitivity.
        mode = "off" if mechanism.bounds_updates else cfg.guard
        self.guard = UpdateGuard(mode=mode, absolute=cfg.guard_norm, median_factor=cfg.guard_median_factor)
        self.node_of_partition: dict[int, int] = {}
        self._selected: list[int] = []
        self._reference: dict[str, np.ndarray] = {}
        # EF21: the server's copy of each client's estimate; the decoded message is only its change.
        self.estimates = ServerEstimates() if cfg.error_feedback == "ef21" else None

    def summary(self) -> None:
        """Log the strategy's settings."""
        log.info(
            "CompressedFedAvg codec=%s downlink=%s dp=%s",
            self.cfg.uplink_codec,
            self.cfg.downlink_codec,
            self.cfg.dp,
        )

    # ------------------------------------------------------------------ handshake
    def discover(self, grid: Grid, *, expected: int, timeout: float) -> dict[int, int]:
        """Wait for ``expected`` nodes and ask each its partition id (bounded by ``timeout`` seconds).

        A partition id must be an int in ``[0, num-clients)`` and claimed by one node only: a second claimant is
        refused (the first keeps it), and nodes beyond the federation are ignored; each is logged.
        """
        deadline = time.monotonic() + timeout
        # Flower's simulation engine registers every virtual node before the ServerApp starts: no point waiting.
        wait = min(timeout, _SIMULATION_WAIT_S) if type(grid).__name__ == "InMemoryGrid" else timeout
        give_up = time.monotonic() + wait
        while len(node_ids := list(grid.get_node_ids())) < expected:
            if time.monotonic() > give_up:
                raise RunError(
                    f"only {len(node_ids)} of num-clients={expected} clients connected within {wait:.0f} s. With "
                    f'`flwr run . local` pass --federation-config "num-supernodes={expected}"; in a deployment '
                    f"start {expected} SuperNodes (partition-id 0..{expected - 1}) or lower num-clients"
                )
            time.sleep(0.5)
        unknown = [n for n in node_ids if n not in self.node_of_partition.values()]
        messages = [Message(RecordDict(), dst_node_id=n, message_type=MessageType.QUERY) for n in unknown]
        problems: list[str] = []
        for reply in grid.send_and_receive(messages, timeout=max(deadline - time.monotonic(), 5.0)):
            problem = self._register(reply)
            if problem:
                problems.append(problem)
                log.warning("handshake: %s", problem)
        if len(self.node_of_partition) < expected:
            raise RunError(
                f"only {len(self.node_of_partition)} of {expected} clients answered the handshake; "
                f"problems: {'; '.join(problems[:3]) or 'none (timed out)'}"
            )
        return self.node_of_partition

    def _register(self, reply: Message) -> str:
        """Record the partition a handshake reply claims; return why it was refused ('' when registered)."""
        node = reply.metadata.src_node_id
        if reply.has_error():
            return f"node {node}: {_short_reason(reply.error.reason)}"
        try:
            claimed = reply.content.config_records["config"]["partition-id"]
        except KeyError:
            return f"node {node} sent no partition-id"
        if isinstance(claimed, bool) or not isinstance(claimed, int) or not 0 <= claimed < self.cfg.num_clients:
            return f"node {node} claims partition-id {claimed!r}, not an int in [0, {self.cfg.num_clients}): ignored"
        holder = self.node_of_partition.get(claimed)
        if holder is not None and holder != node:
            return f"node {node} claims partition {claimed}, already held by node {holder}: refused"
        self.node_of_partition[claimed] = node
        return ""

    # ------------------------------------------------------------------ train
    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """One train message per partition given to ``prepare_round`` (with its EF21 basis under EF21)."""

        def record(partition: int) -> RecordDict:
            extra = {} if self.estimates is None else {BASIS_KEY: self.estimates.basis(partition)}
            settings = ConfigRecord({**config, "server-round": server_round, **extra})
            return RecordDict({"arrays": arrays, "config": settings})

        return [
            Message(record(partition), dst_node_id=self.node_of_partition[partition], message_type=MessageType.TRAIN)
            for partition in self._selected
        ]

    def collect(self, replies: Iterable[Message], selected: list[int]) -> tuple[list[ClientUpdate], dict[int, str]]:
        """Turn replies into ``ClientUpdate``s; errors and missing replies become named failures.

        A reply counts only if it comes from a node selected this round, and only its first reply.
        """
        selected_node = {self.node_of_partition[p]: p for p in selected}
        updates: list[ClientUpdate] = []
        failures: dict[int, str] = {}
        seen: set[int] = set()
        for reply in replies:
            node = reply.metadata.src_node_id
            partition = selected_node.get(node)
            if partition is None or partition in seen:
                why = "a second reply" if partition in seen else "a reply from a node not selected this round"
                log.warning("ignored %s (node %s)", why, node)
                continue
            seen.add(partition)
            if reply.has_error():
                failures[partition] = f"client error: {_short_reason(reply.error.reason)}"
                continue
            try:
                payload = payload_from_record(reply.content.array_records["arrays"])
                metrics = {
                    k: v for k, v in reply.content.metric_records["metrics"].items() if isinstance(v, int | float)
                }
            except (KeyError, ValueError, TypeError) as e:
                failures[partition] = f"malformed reply: {e}"
                continue
            updates.append(ClientUpdate(partition_id=partition, payload=payload, metrics=metrics))
        for partition in selected:
            if partition not in seen:
                failures[partition] = f"no reply within round-timeout={self.cfg.round_timeout:.0f} s"
        return updates, failures

    def aggregate_replies(self, server_round: int, replies: Iterable[Message]) -> RoundOutcome:
        """Count bytes, decode strictly, guard, and let the mechanism aggregate (needs ``prepare_round`` first)."""
        cfg = self.cfg
        updates, failures = self.collect(replies, self._selected)
        cap = None if cfg.minimal_release else cfg.samples_per_client
        layout = SharedLayout.of(self._reference, cfg.uplink_codec)
        decoded = decode_updates(updates, self._reference, weight_cap=cap, layout=layout)
        decoded.failures.update(failures)
        client_metrics = {u.partition_id: dict(u.metrics) for u in updates}
        if self.estimates is not None:
            _to_estimates(self.estimates, decoded, client_metrics, server_round)
        kept, guard = self.guard.apply(decoded.updates)
        if self.mechanism.skips(len(kept)):
            return RoundOutcome(None, decoded, client_metrics, guard)
        delta = self.mechanism.aggregate(
            [u for _, u, _ in kept],
            [w for _, _, w in kept],
            server_round=server_round,
            reference=self._reference,
            base=self.aggregator,
        )
        return RoundOutcome(delta, decoded, client_metrics, guard)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Flower's interface to :meth:`aggregate_replies`: the delta as an ArrayRecord (None if skipped)."""
        outcome = self.aggregate_replies(server_round, replies)
        metrics = MetricRecord(
            {"clients-ok": len(outcome.decoded.updates), "clients-failed": len(outcome.decoded.failures)}
        )
        if outcome.delta is None:
            return None, metrics
        return ArrayRecord({k: Array(v) for k, v in outcome.delta.items()}), metrics

    def prepare_round(self, selected: list[int], reference: dict[str, np.ndarray]) -> None:
        """Tell the strategy what the coming round sent, so replies can be checked against it."""
        self._selected = selected
        self._reference = reference

    # ------------------------------------------------------------------ evaluate (central only)
    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """No client-side evaluation: the server evaluates centrally on the held-out set."""
        return []

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        """No client-side evaluation."""
        return None
