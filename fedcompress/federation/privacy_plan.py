"""The server's privacy plan: one noise multiplier for the whole horizon, a per-round ledger, and the budget.

Levels and what each epsilon means (delta, z, C, q, steps and accountant always travel with it):

- ``sample``: each client runs DP-SGD; its epsilon covers all its steps in every round it trained. Records are
  disjoint across clients, so the federation's per-record guarantee is the max over clients.
- ``client`` + ``central``: the server clips each update to C and noises the sum; Poisson client sampling with
  rate q amplifies; one accountant step per round.
- ``client`` + ``local``: each client noises its own update; the server sees it individually, so no amplification
  by sampling is claimed: sample rate 1, one step per round the client took part in; max over clients.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from fedcompress.config import RunConfig
from fedcompress.errors import ConfigError
from fedcompress.privacy import (
    LedgerEntry,
    client_level_noise,
    epsilon,
    sample_level_noise,
    sample_level_plan,
)

__all__ = ["PrivacyPlan"]


class PrivacyPlan:
    """Noise calibration, accounting and budget checks for one run (serialisable for checkpoints)."""

    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg
        self.rounds_trained: dict[int, int] = {}  # partition id -> rounds it trained in
        self.rounds_released = 0  # rounds whose aggregate was released (central accounting)
        self._cache: dict[int, float] = {}
        self.sample_rate, self.steps_per_round, self.noise_multiplier = 0.0, 0, 0.0
        try:
            if cfg.dp == "sample":
                plan = sample_level_plan(cfg)
                self.sample_rate, self.steps_per_round = plan.sample_rate, plan.steps_per_round
                self.noise_multiplier = sample_level_noise(cfg)
            elif cfg.dp == "client":
                self.sample_rate = cfg.fraction_train if cfg.dp_noise == "central" else 1.0
                self.steps_per_round = 1
                self.noise_multiplier = client_level_noise(cfg)
        except (ValueError, RuntimeError) as e:
            raise ConfigError(
                f"cannot calibrate noise for target-epsilon={cfg.target_epsilon} at delta={cfg.delta} "
                f"(dp={cfg.dp!r}, sample rate {self.sample_rate:.4g}): {e}"
            ) from e

    # ------------------------------------------------------------------ accounting
    def _epsilon_at(self, steps: int) -> float:
        if steps <= 0:
            return 0.0
        if steps not in self._cache:
            self._cache[steps] = epsilon(
                self.noise_multiplier, self.sample_rate, steps, self.cfg.delta, self.cfg.accountant
            )
        return self._cache[steps]

    def _central(self) -> bool:
        return self.cfg.dp == "client" and self.cfg.dp_noise == "central"

    def current_epsilon(self) -> float:
        """The federation's epsilon so far (0 when nothing was released)."""
        if self._central():
            return self._epsilon_at(self.rounds_released)
        most = max(self.rounds_trained.values(), default=0)
        return self._epsilon_at(most * self.steps_per_round)

    def predict(self, selected: Iterable[int]) -> float:
        """Epsilon after a round in which ``selected`` train (central: after one more release)."""
        if not self.cfg.private:
            return 0.0
        if self._central():
            return self._epsilon_at(self.rounds_released + 1)
        counts = dict(self.rounds_trained)
        for partition in selected:
            counts[partition] = counts.get(partition, 0) + 1
        return self._epsilon_at(max(counts.values(), default=0) * self.steps_per_round)

    def would_exceed_budget(self, selected: Iterable[int]) -> bool:
        """True when ``max-epsilon`` is set and the next round would pass it."""
        return self.cfg.max_epsilon > 0 and self.predict(selected) > self.cfg.max_epsilon

    def commit(self, server_round: int, trained: Iterable[int]) -> LedgerEntry | None:
        """Record a finished round and return its ledger entry (None when not private).

        ``trained`` are the clients that ran DP training or noising this round. A client that trained and then
        failed to deliver still spent budget, so callers pass every client that was sent work.
        """
        if not self.cfg.private:
            return None
        for partition in trained:
            self.rounds_trained[partition] = self.rounds_trained.get(partition, 0) + 1
        self.rounds_released += 1
        return self.entry(server_round)

    def entry(self, server_round: int) -> LedgerEntry:
        """The ledger line: an epsilon never travels without its parameters."""
        cfg = self.cfg
        central = self._central()
        most = max(self.rounds_trained.values(), default=0)
        rounds = self.rounds_released if central else most
        return LedgerEntry(
            round=server_round,
            epsilon=self.current_epsilon(),
            delta=cfg.delta,
            noise_multiplier=self.noise_multiplier,
            clip_norm=cfg.clip_norm,
            sample_rate=self.sample_rate,
            steps=rounds * self.steps_per_round,
            rounds=rounds,
            accountant=cfg.accountant,
            level=cfg.dp,
            trust=cfg.dp_noise if cfg.dp == "client" else None,
            max_over=() if central else tuple(sorted(p for p, n in self.rounds_trained.items() if n == most)),
        )

    # ------------------------------------------------------------------ checkpoint
    def state_dict(self) -> dict[str, Any]:
        """Participation counts (JSON-safe) for the server checkpoint."""
        return {
            "rounds_trained": {str(k): v for k, v in self.rounds_trained.items()},
            "rounds_released": self.rounds_released,
            "noise_multiplier": self.noise_multiplier,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore counts saved by ``state_dict``; the noise multiplier must match the recomputed one."""
        if not math.isclose(float(state["noise_multiplier"]), self.noise_multiplier, rel_tol=1e-9):
            raise ConfigError(
                f"checkpoint was made with noise multiplier {state['noise_multiplier']}, this config gives "
                f"{self.noise_multiplier}: resume with the same privacy settings"
            )
        self.rounds_trained = {int(k): int(v) for k, v in state["rounds_trained"].items()}
        self.rounds_released = int(state["rounds_released"])
