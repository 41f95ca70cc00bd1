"""EF21 error feedback for federated rounds, both sides.

Richtarik, Sokolov, Fatkhullin, "EF21: A New, Simpler, Theoretically Better, and Practically Faster Error
Feedback", NeurIPS 2021 (https://arxiv.org/abs/2106.05203). Client ``i`` and the server each keep the same
estimate ``g_i`` of the client's update::

    c_i  = C(delta_i - g_i)     # the client compresses only how its update moved away from the estimate
    g_i += decode(c_i)          # both sides, from the same payload bytes, so the two copies stay equal
    server aggregates the g_i   # not the messages: the guard, robust aggregators and central DP see whole updates

Unlike the residual form (``error-feedback = "residual"``, EF14: ``C(delta + e)``, ``e = delta + e - sent``) nothing
piles up unsent: the error is ``delta_i - g_i`` and shrinks as the estimate catches up.

Staying in step: each train message tells the client the round of the estimate the server holds for it
(``ef21-basis``, 0 = none). A client whose own estimate is from another round (a reply that was lost, a server
resumed from a checkpoint) starts from zero and reports basis 0; the server then restarts its copy from zero too.
A claimed basis the server does not hold makes that reply a counted failure. The basis is a round number, public.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

from fedcompress.codec import CodecError, EncodeStats, SharedLayout, decode, encode_with_stats

__all__ = ["BASIS_KEY", "Estimate", "ServerEstimates", "encode_change"]

BASIS_KEY = "ef21-basis"  # train config (server -> client) and reply metric (client -> server)
_ROUND, _VALUE = "round", "value/"


@dataclasses.dataclass(frozen=True)
class Estimate:
    """One client's estimate ``g_i`` (float64 tensors) and the round whose payload last moved it (0: none)."""

    round: int = 0
    values: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)

    def state_dict(self) -> dict[str, np.ndarray]:
        """Flat ``str -> array`` copies: ``round`` and ``value/<name>``."""
        return {_ROUND: np.array(self.round)} | {_VALUE + k: v.copy() for k, v in self.values.items()}

    @classmethod
    def from_state_dict(cls, state: Mapping[str, np.ndarray]) -> Estimate:
        """Rebuild from :meth:`state_dict` (an empty mapping is the zero estimate); copies."""
        if not state:
            return cls()
        values = {k[len(_VALUE) :]: np.array(v, dtype=np.float64) for k, v in state.items() if k.startswith(_VALUE)}
        if _ROUND not in state or len(values) != len(state) - 1:
            raise ValueError(f"EF21 state keys must be {_ROUND!r} and '{_VALUE}<name>', got {sorted(state)[:4]}")
        return cls(round=int(state[_ROUND]), values=values)

    def moved(self, change: Mapping[str, np.ndarray], server_round: int, *, from_zero: bool) -> Estimate:
        """``g + change`` (or ``change`` alone when ``from_zero``), as of ``server_round``."""
        base = {} if from_zero else self.values
        values = {k: base[k] + v if k in base else v.astype(np.float64) for k, v in change.items()}
        return Estimate(round=server_round, values=values)


def encode_change(
    delta: Mapping[str, np.ndarray],
    estimate: Estimate,
    *,
    server_basis: int,
    server_round: int,
    spec: str,
    seed: int,
    framing: str,
) -> tuple[bytes, EncodeStats, Estimate, int]:
    """The client's half: encode ``delta - g``; return payload, stats, the moved estimate and the basis used.

    The basis is ``server_basis`` when this client's estimate is from that round, else 0 (start from zero).
    """
    basis = server_basis if server_basis and estimate.round == server_basis and estimate.values else 0
    base = estimate.values if basis else {}
    change = {k: (v - base[k]).astype(np.float32) if k in base else v for k, v in delta.items()}
    payload, stats = encode_with_stats(change, spec, None, seed=seed, framing=framing)
    sent = decode(payload, layout=SharedLayout.of(delta, spec))  # exactly what the server will rebuild
    return payload, stats, estimate.moved(sent, server_round, from_zero=not basis), basis


class ServerEstimates:
    """The server's copies of every client's estimate (only mean-compatible memory: one model per client)."""

    def __init__(self) -> None:
        self._by_client: dict[int, Estimate] = {}

    def basis(self, partition: int) -> int:
        """The round of the estimate held for ``partition`` (0: none): sent to the client as ``ef21-basis``."""
        return self._by_client.get(partition, Estimate()).round

    def receive(
        self, partition: int, change: Mapping[str, np.ndarray], claimed_basis: object, server_round: int
    ) -> dict[str, np.ndarray]:
        """Move ``partition``'s estimate by a decoded ``change`` and return it as float32 (the client's update).

        Raises ``CodecError`` when the claimed basis is neither 0 nor the round the server holds.
        """
        held = self._by_client.get(partition, Estimate())
        if not isinstance(claimed_basis, int | float) or claimed_basis not in (0, held.round):
            raise CodecError(
                f"EF21 basis {claimed_basis!r} does not match the estimate this server holds (round {held.round})"
            )
        moved = held.moved(change, server_round, from_zero=claimed_basis == 0)
        self._by_client[partition] = moved
        return {k: v.astype(np.float32) for k, v in moved.values.items()}

    def state_dict(self) -> dict[str, np.ndarray]:
        """``<partition>/round`` and ``<partition>/value/<name>`` for every client, copies."""
        return {f"{p}/{k}": v for p, est in self._by_client.items() for k, v in est.state_dict().items()}

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Replace every estimate with those in ``state`` (from :meth:`state_dict`); validates and copies."""
        grouped: dict[int, dict[str, np.ndarray]] = {}
        for key, value in state.items():
            partition, _, rest = key.partition("/")
            if not partition.isdigit() or not rest:
                raise ValueError(f"EF21 server state key {key!r} is not '<partition>/<key>'")
            grouped.setdefault(int(partition), {})[rest] = value
        self._by_client = {p: Estimate.from_state_dict(s) for p, s in grouped.items()}
