"""The server half of each privacy mode: accounting, the budget, and the aggregation it wraps.

=====================  ==========================================================================================
class                  what it owns
=====================  ==========================================================================================
ServerMechanism        nothing to account; client sampling and the weighted mean from the public seed
SampleLevelServer      the per-client ledger of DP-SGD steps (public schedule), max over clients
LocalNoiseServer       the per-client ledger of noised releases (sample rate 1), max over clients
CentralNoiseServer     the aggregation (clip, sum, secret noise, fixed denominator), secret Poisson client
                       sampling, one accountant step per released round, and what result.json may not publish
=====================  ==========================================================================================

Every release is charged when it is SENT (:meth:`ServerMechanism.charge`, called before the train messages
leave): a client that was sent work has spent budget whether or not its reply arrives, decodes or is used,
and whether or not the round is skipped. A replayed round is charged again. So the ledger never trails a
client's own accountant; :meth:`ServerMechanism.check_reported` fails the run if a client says otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from fedcompress.config import RunConfig
from fedcompress.errors import RunError
from fedcompress.privacy.accountant import epsilon
from fedcompress.privacy.client_level import central_aggregate
from fedcompress.privacy.ledger import LedgerEntry
from fedcompress.privacy.masking import PublicMask
from fedcompress.privacy.policy import ClientPolicy
from fedcompress.privacy.randomness import NoiseSource
from fedcompress.seeding import numpy_rng
from fedcompress.tensors import weighted_mean

if TYPE_CHECKING:
    from fedcompress.federation.records import RoundRow

__all__ = ["CentralNoiseServer", "LocalNoiseServer", "SampleLevelServer", "ServerMechanism"]

_SCHEMA = 1
_TOLERANCE = 1e-9  # relative slack when comparing a client's epsilon with the ledger's (float round-off)


class ServerMechanism:
    """No privacy: nothing is charged; sampling and weighting come from the public seed and the replies."""

    private = False
    bounds_updates = False  # True when the mechanism clips every update itself (central DP)
    level = "none"
    trust: str | None = None
    noise_multiplier = 0.0
    sample_rate = 0.0
    steps_per_round = 0

    def __init__(self, cfg: RunConfig, source: NoiseSource | None = None) -> None:
        self.cfg = cfg
        self.source = source or NoiseSource(cfg.dp_randomness, cfg.seed)

    def restrict(self, updates: Sequence[Mapping[str, np.ndarray]], server_round: int) -> list[dict[str, np.ndarray]]:
        """The updates on the round's public ``dp-keep`` mask only (as sent), so no client writes outside it."""
        mask = PublicMask.of(self.cfg, server_round)
        return [dict(u) if mask is None else mask.restrict(u) for u in updates]

    # ------------------------------------------------------------------ the round
    def sampling_generator(self, server_round: int) -> np.random.Generator:
        """Randomness for choosing this round's clients (public: no epsilon is amplified by it)."""
        return numpy_rng(self.cfg.seed, "sample", server_round)

    def skips(self, usable: int) -> bool:
        """Whether a round with ``usable`` decoded updates is skipped (fewer than ``min-clients``)."""
        return usable < self.cfg.min_clients

    def aggregate(
        self,
        updates: Sequence[Mapping[str, np.ndarray]],
        weights: Sequence[float],
        *,
        server_round: int,
        reference: Mapping[str, np.ndarray],
        base: Callable[[Sequence[Mapping[str, np.ndarray]], Sequence[float]], dict[str, np.ndarray]] = weighted_mean,
    ) -> dict[str, np.ndarray]:
        """The round's update from the decoded ones (at least one): ``base``, the configured aggregator."""
        return base(self.restrict(updates, server_round), weights)

    # ------------------------------------------------------------------ accounting
    def charge(self, sent: Iterable[int]) -> None:
        """Charge one release to every client in ``sent`` (call BEFORE the messages leave)."""

    def predict(self, selected: Iterable[int]) -> float:
        """The federation's epsilon after a round sent to ``selected``."""
        return 0.0

    def would_exceed_budget(self, selected: Iterable[int]) -> bool:
        """True when ``max-epsilon`` is set and a round sent to ``selected`` would pass it."""
        return self.cfg.max_epsilon > 0 and self.predict(selected) > self.cfg.max_epsilon

    def entry(self, server_round: int) -> LedgerEntry | None:
        """The ledger line after ``server_round`` (None without privacy)."""
        return None

    def check_reported(self, metrics: Mapping[int, Mapping[str, float]]) -> None:
        """Fail (``RunError``) if a client reports having spent more than the ledger says."""

    def public_row(self, row: RoundRow) -> RoundRow:
        """What ``result.json`` may publish of a round's row."""
        return row

    def start_lines(self) -> list[str]:
        """What the terminal says at start (threat model, randomness, warnings)."""
        return []

    def state_dict(self) -> dict[str, Any]:
        """JSON-safe accounting state (written before each round's messages leave)."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output."""


class _AccountedServer(ServerMechanism):
    """Shared by the private modes: one noise multiplier for the horizon, an epsilon cache, start lines."""

    private = True
    _library = "numpy"  # which generator draws the noise (the ledger names it)

    def __init__(self, cfg: RunConfig, source: NoiseSource | None = None) -> None:
        super().__init__(cfg, source)
        self._cache: dict[int, float] = {}

    def _epsilon_at(self, steps: int) -> float:
        if steps <= 0:
            return 0.0
        if steps not in self._cache:
            cfg = self.cfg
            self._cache[steps] = epsilon(self.noise_multiplier, self.sample_rate, steps, cfg.delta, cfg.accountant)
        return self._cache[steps]

    def _entry(self, server_round: int, steps: int, rounds: int, max_over: tuple[int, ...]) -> LedgerEntry:
        cfg = self.cfg
        return LedgerEntry(
            round=server_round,
            epsilon=self._epsilon_at(steps),
            delta=cfg.delta,
            noise_multiplier=self.noise_multiplier,
            clip_norm=cfg.clip_norm,
            sample_rate=self.sample_rate,
            steps=steps,
            rounds=rounds,
            accountant=cfg.accountant,
            level=self.level,
            trust=self.trust,
            max_over=max_over,
            randomness=self.source.describe(self._library),
        )

    def start_lines(self) -> list[str]:
        """Threat model, randomness, and a warning when delta is large for the population it protects."""
        cfg = self.cfg
        entry = self._entry(0, 0, 0, ())
        lines = [f"privacy: {entry.level}-level DP; threat model: {entry.threat_model}", f"noise: {entry.randomness}"]
        n, what = cfg.delta_population
        if cfg.delta > 1.0 / (10 * n):
            lines.append(
                f"warning: delta={cfg.delta:g} is above 1/(10 n) = {0.1 / n:g} for n={n} {what}; a smaller delta "
                "is the usual choice"
            )
        return lines


class _PerClientServer(_AccountedServer):
    """Each client's data enters only its own releases: per-client counts, the federation's epsilon is the max."""

    def __init__(self, cfg: RunConfig, source: NoiseSource | None = None) -> None:
        super().__init__(cfg, source)
        self.charged: dict[int, int] = {}  # partition id -> releases charged

    def charge(self, sent: Iterable[int]) -> None:
        """One more release for each client sent work."""
        for partition in sent:
            self.charged[partition] = self.charged.get(partition, 0) + 1

    def client_epsilon(self, partition: int) -> float:
        """What the ledger says ``partition`` has spent."""
        return self._epsilon_at(self.charged.get(partition, 0) * self.steps_per_round)

    def predict(self, selected: Iterable[int]) -> float:
        """The max over clients after one more release for each of ``selected``."""
        counts = dict(self.charged)
        for partition in selected:
            counts[partition] = counts.get(partition, 0) + 1
        return self._epsilon_at(max(counts.values(), default=0) * self.steps_per_round)

    def entry(self, server_round: int) -> LedgerEntry:
        """The max over clients, naming the clients that attain it."""
        most = max(self.charged.values(), default=0)
        attained = tuple(sorted(p for p, n in self.charged.items() if n == most)) if most else ()
        return self._entry(server_round, most * self.steps_per_round, most, attained)

    def start_lines(self) -> list[str]:
        """Also warn when the horizon passes the default client floor's budget (those clients will refuse)."""
        lines = super().start_lines()
        horizon = self._epsilon_at(self.cfg.num_rounds * self.steps_per_round)
        floor = ClientPolicy().max_epsilon
        if horizon > floor:
            lines.append(
                f"warning: {self.cfg.num_rounds} rounds take a client to epsilon {horizon:.3g}, past the default "
                f"client floor's max-epsilon {floor:g}; clients without their own max-epsilon refuse rounds past it"
            )
        return lines

    def check_reported(self, metrics: Mapping[int, Mapping[str, float]]) -> None:
        """A client's release count or epsilon above the ledger's means the ledger trails: stop the run."""
        for partition, values in sorted(metrics.items()):
            releases, charged = values.get("dp-releases"), self.charged.get(partition, 0)
            if releases is not None and releases > charged:
                raise RunError(
                    f"client {partition} reports {releases:g} DP releases but the ledger charged {charged}: "
                    "the ledger would understate its epsilon; stopping the run"
                )
            reported, ledger = values.get("epsilon"), self.client_epsilon(partition)
            if reported is not None and reported > ledger * (1 + _TOLERANCE) + _TOLERANCE:
                raise RunError(
                    f"client {partition} reports epsilon {reported:.6g}, the ledger has {ledger:.6g} for it: the "
                    "clients do not spend what the server planned; stopping the run"
                )

    def state_dict(self) -> dict[str, Any]:
        """Releases charged per client, and the noise multiplier they were charged at."""
        return {
            "schema_version": _SCHEMA,
            "charged": {str(k): v for k, v in self.charged.items()},
            "noise_multiplier": self.noise_multiplier,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore charges made with the same noise multiplier (else ``ValueError``)."""
        _same_noise(state, self.noise_multiplier)
        self.charged = {int(k): int(v) for k, v in state.get("charged", {}).items()}


class SampleLevelServer(_PerClientServer):
    """Sample-level DP-SGD: every client runs the public schedule with noise multiplier ``noise_multiplier``."""

    level = "sample"
    _library = "torch"

    def __init__(self, cfg: RunConfig, *, noise_multiplier: float, sample_rate: float, steps_per_round: int) -> None:
        super().__init__(cfg)
        self.noise_multiplier, self.sample_rate, self.steps_per_round = noise_multiplier, sample_rate, steps_per_round


class LocalNoiseServer(_PerClientServer):
    """Client-level DP with local noise: one release per round a client takes part in, no amplification."""

    level, trust = "client", "local"

    def __init__(self, cfg: RunConfig, *, noise_multiplier: float) -> None:
        super().__init__(cfg)
        self.noise_multiplier, self.sample_rate, self.steps_per_round = noise_multiplier, 1.0, 1


class CentralNoiseServer(_AccountedServer):
    """Client-level DP with central noise: the trusted server clips, sums, noises and divides by q*N.

    Secret Poisson client sampling at rate q = ``fraction-train`` amplifies the guarantee, so who took part must
    stay secret too: with ``release`` minimal, rows in ``result.json`` withhold participation and the byte
    counts of raw (un-noised) updates, whose compressed sizes depend on the data.
    """

    level, trust = "client", "central"
    bounds_updates = True

    def __init__(self, cfg: RunConfig, *, noise_multiplier: float) -> None:
        super().__init__(cfg)
        self.noise_multiplier, self.sample_rate, self.steps_per_round = noise_multiplier, cfg.fraction_train, 1
        self.released = 0

    def sampling_generator(self, server_round: int) -> np.random.Generator:
        """Secret: knowing who was sampled would void the amplified epsilon."""
        return self.source.numpy("sample", server_round)

    def skips(self, usable: int) -> bool:
        """Never: every round releases the noisy sum (noise alone when nobody replied)."""
        return False

    def aggregate(
        self,
        updates: Sequence[Mapping[str, np.ndarray]],
        weights: Sequence[float],
        *,
        server_round: int,
        reference: Mapping[str, np.ndarray],
        base: Callable[[Sequence[Mapping[str, np.ndarray]], Sequence[float]], dict[str, np.ndarray]] = weighted_mean,
    ) -> dict[str, np.ndarray]:
        """Clip each update to C, sum, add secret N(0, (zC)^2), divide by the FIXED q*N.

        Under ``dp-keep`` every update is first restricted to the round's public mask, and the noise goes on the
        kept coordinates only. ``base`` and ``weights`` are not used: this aggregation replaces them.
        """
        cfg = self.cfg
        zero = {name: np.zeros_like(value, dtype=np.float32) for name, value in reference.items()}
        return central_aggregate(
            self.restrict(updates, server_round) or [zero],  # a zero update adds nothing; it gives the noise shapes
            clip_norm=cfg.clip_norm,
            noise_multiplier=self.noise_multiplier,
            expected_clients=cfg.fraction_train * cfg.num_clients,
            generator=self.source.numpy("central-noise", server_round),
            mask=PublicMask.of(cfg, server_round),
        )

    def charge(self, sent: Iterable[int]) -> None:
        """Every round is one release of the noisy sum, whoever was sampled."""
        self.released += 1

    def predict(self, selected: Iterable[int]) -> float:
        """The server's epsilon after one more release."""
        return self._epsilon_at(self.released + 1)

    def entry(self, server_round: int) -> LedgerEntry:
        """One accountant for the whole federation."""
        return self._entry(server_round, self.released, self.released, ())

    def public_row(self, row: RoundRow) -> RoundRow:
        """Withhold participation and data-dependent byte counts unless ``release = "all"``."""
        return row.withheld() if self.cfg.minimal_release else row

    def state_dict(self) -> dict[str, Any]:
        """Releases so far and the noise multiplier."""
        return {"schema_version": _SCHEMA, "released": self.released, "noise_multiplier": self.noise_multiplier}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore releases made with the same noise multiplier (else ``ValueError``)."""
        _same_noise(state, self.noise_multiplier)
        self.released = int(state.get("released", 0))


def _same_noise(state: Mapping[str, Any], noise_multiplier: float) -> None:
    """Refuse a saved ledger of another schema or charged at another noise multiplier."""
    if state.get("schema_version", _SCHEMA) != _SCHEMA:
        raise ValueError(f"the saved ledger has schema_version {state.get('schema_version')}, expected {_SCHEMA}")
    saved = float(state.get("noise_multiplier", noise_multiplier))
    if not math.isclose(saved, noise_multiplier, rel_tol=1e-9):
        raise ValueError(
            f"the saved ledger was charged at noise multiplier {saved}, this config gives {noise_multiplier}: "
            "resume with the same privacy settings"
        )
