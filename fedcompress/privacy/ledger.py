"""The privacy ledger: every epsilon with all the parameters that give it a meaning.

An epsilon alone says nothing. A :class:`LedgerEntry` carries delta, noise multiplier, clip norm, sampling
rate, steps and rounds, accountant, level, trust model (with its threat model) and the randomness source, and
prints them all in :meth:`LedgerEntry.describe`. :class:`PrivacyLedger` is the one ledger of a run: the server,
the Flower-DP baseline and the report all read and write it (``result.json``'s ``privacy`` object).

Sample-level DP: each client's epsilon covers all its DP-SGD steps. Records are disjoint across clients, so
by parallel composition the federation's per-record guarantee is the MAX over clients, not the sum
(``max_over`` names the clients that attain it). This fails if one person has records at several clients:
then compose those clients' epsilons.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from typing import Any

from fedcompress.privacy.accountant import ACCOUNTANTS
from fedcompress.privacy.disclosure import NOT_COVERED

__all__ = ["GUARANTEES", "LEVELS", "PARALLEL_COMPOSITION", "THREAT_MODELS", "LedgerEntry", "PrivacyLedger"]

LEVELS: tuple[str, ...] = ("sample", "client")
ClientId = int | str

PARALLEL_COMPOSITION = (
    "Sample-level DP: each client's epsilon covers all its DP-SGD steps in every round it trained; records "
    "are disjoint across clients, so the federation's per-record guarantee is the maximum over clients "
    "(parallel composition). It does not hold for a person with records at several clients: compose those "
    "clients."
)
#: What the federation's epsilon means, by (level, trust).
GUARANTEES: Mapping[tuple[str, str | None], str] = {
    ("sample", None): PARALLEL_COMPOSITION,
    ("client", "local"): (
        "Client-level DP, local noise: each client's epsilon covers its own clipped and noised updates in "
        "the rounds it took part in, with no amplification by sampling (the server sees each update); the "
        "federation reports the maximum over clients."
    ),
    ("client", "central"): (
        "Client-level DP, central noise (trusted server): one accountant for the server's noisy sum of "
        "clipped updates, amplified by Poisson client sampling at the stated rate, one step per released "
        "round."
    ),
}
#: Whom each mode protects against, by (level, trust).
THREAT_MODELS: Mapping[tuple[str, str | None], str] = {
    ("sample", None): (
        "the server and everyone after it see only DP-SGD outputs; each client draws its noise and batches "
        "from secret randomness and enforces its own floor (noise, budget)"
    ),
    ("client", "local"): (
        "untrusted server: each client clips and noises its update with secret randomness before sending, "
        "keeps its own accountant and refuses requests below its floor"
    ),
    ("client", "central"): (
        "trusted server: it sees raw updates and holds the secret noise and client sampling; readers of the "
        "model and of result.json are not trusted"
    ),
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class LedgerEntry:
    """One epsilon and its parameters, as of the end of round ``round``.

    ``steps`` counts accounted compositions (DP-SGD steps, or rounds at client level) and ``rounds`` the
    rounds they span. ``trust`` is ``"local"`` or ``"central"`` at client level and None at sample level.
    ``max_over`` lists the client ids that attain this epsilon (empty for central client-level DP).
    ``randomness`` says where the noise came from (:meth:`NoiseSource.describe`).
    """

    round: int
    epsilon: float
    delta: float
    noise_multiplier: float
    clip_norm: float
    sample_rate: float
    steps: int
    rounds: int
    accountant: str
    level: str
    trust: str | None = None
    max_over: tuple[ClientId, ...] = ()
    randomness: str = ""

    def __post_init__(self) -> None:
        if self.level not in LEVELS:
            raise ValueError(f"level must be one of {LEVELS}, got {self.level!r}")
        expected = (None,) if self.level == "sample" else ("local", "central")
        if self.trust not in expected:
            raise ValueError(f"trust must be one of {expected} for level {self.level!r}, got {self.trust!r}")
        if self.accountant not in ACCOUNTANTS:
            raise ValueError(f"accountant must be one of {ACCOUNTANTS}, got {self.accountant!r}")
        if not (self.epsilon >= 0 and not math.isnan(self.epsilon)):
            raise ValueError(f"epsilon must be >= 0, got {self.epsilon!r}")
        if not 0 < self.delta < 1:
            raise ValueError(f"delta must be in (0, 1), got {self.delta!r}")
        if not 0 < self.sample_rate <= 1:
            raise ValueError(f"sample_rate must be in (0, 1], got {self.sample_rate!r}")
        for name in ("round", "steps", "rounds"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        object.__setattr__(self, "max_over", tuple(self.max_over))

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (``max_over`` as a list)."""
        out = dataclasses.asdict(self)
        out["max_over"] = list(self.max_over)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LedgerEntry:
        """Inverse of :meth:`to_dict`; unknown or missing keys raise ``ValueError``."""
        names = {field.name for field in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown ledger entry keys {sorted(unknown)}; expected {sorted(names)}")
        try:
            return cls(**{**data, "max_over": tuple(data.get("max_over", ()))})
        except TypeError as e:
            raise ValueError(f"bad ledger entry {dict(data)!r}: {e}") from e

    def describe(self) -> str:
        """One line that never shows the epsilon without its parameters."""
        level = "sample-level" if self.level == "sample" else f"client-level ({self.trust} noise)"
        who = ""
        if self.max_over:
            shown = ", ".join(str(c) for c in self.max_over[:8])
            more = f" and {len(self.max_over) - 8} more" if len(self.max_over) > 8 else ""
            who = f"; max over clients, attained by {shown}{more}"
        randomness = f"; noise {self.randomness}" if self.randomness else ""
        return (
            f"round {self.round}: epsilon {self.epsilon:.4g} at delta {self.delta:.3g}, {level} DP, "
            f"noise multiplier {self.noise_multiplier:.4g}, clip norm {self.clip_norm:.4g}, "
            f"sample rate {self.sample_rate:.4g}, {self.steps} steps over {self.rounds} rounds, "
            f"{self.accountant.upper()} accountant{who}; threat model: {self.threat_model}{randomness}"
        )

    @property
    def threat_model(self) -> str:
        """Whom this epsilon protects against (:data:`THREAT_MODELS`)."""
        return THREAT_MODELS[(self.level, self.trust)]


class PrivacyLedger:
    """A run's per-round entries, JSON-able, with what they guarantee, against whom, and what they do not cover."""

    def __init__(self, entries: Iterable[LedgerEntry] = ()) -> None:
        self.entries: list[LedgerEntry] = list(entries)

    def record(self, entry: LedgerEntry) -> LedgerEntry:
        """Append the entry of a round (a replayed round may repeat its number, never go back before it)."""
        if self.entries and entry.round < self.entries[-1].round:
            raise ValueError(f"round {entry.round} comes after round {self.entries[-1].round}")
        self.entries.append(entry)
        return entry

    @property
    def latest(self) -> LedgerEntry | None:
        """The last entry, or None."""
        return self.entries[-1] if self.entries else None

    def summary(self) -> str:
        """The latest entry described, or a note that nothing was spent."""
        return self.latest.describe() if self.latest else "no privacy budget spent (no DP round recorded)"

    def to_dict(self) -> dict[str, Any]:
        """``result.json``'s ``privacy`` object.

        The latest entry's fields, ``ledger`` (all entries), ``summary``, ``guarantee``, ``threat_model`` and
        ``not_covered``.
        """
        latest = self.latest
        return {
            **(latest.to_dict() if latest else {}),
            "ledger": [entry.to_dict() for entry in self.entries],
            "summary": self.summary(),
            "guarantee": GUARANTEES[(latest.level, latest.trust)] if latest else "",
            "threat_model": latest.threat_model if latest else "",
            "not_covered": NOT_COVERED,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PrivacyLedger:
        """Rebuild from :meth:`to_dict` output (only ``ledger`` is read)."""
        return cls(LedgerEntry.from_dict(item) for item in data.get("ledger", []))
