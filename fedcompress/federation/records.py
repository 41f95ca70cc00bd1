"""Typed records of a run: the evaluation of a model (``Scores``), one round (``RoundRow``), the result (``RunResult``).

They are the contract of ``result.json``, written by :class:`~fedcompress.federation.results.RunRecorder`. A
round's row holds, in this order: ``round``; the scores (``loss``, ``psnr``, ``ssim``, ``psnr_noisy``, and
``real_psnr``, ``real_ssim``, ``real_psnr_noisy`` when the run has real CT/MR patches); the round's counts
(``uplink_bytes``, ``downlink_bytes``, ``dense_uplink_bytes``, ``clients_ok``, ``clients_failed``: None when
withheld, see ``release``); fedcompress's own server checks (``failures``, ``guard_bound``, ``guarded``);
``seconds``, ``skipped``; ``client_epsilon_reported`` (with the checks); ``epsilon`` (None without DP). A
baseline without our server (Flower's DP wrapper) writes no checks.

``to_dict`` writes exactly those keys. ``from_dict`` reads leniently (a missing key reads as None, unknown keys
are left out): readers (the sweep store, the reports) take what any version, or a stand-in, wrote.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, NotRequired, TypedDict

__all__ = ["COUNTS", "REAL_SCORES", "SCORES", "RoundRow", "RunResult", "Scores", "ServerChecks", "as_scores"]

SCORES = ("loss", "psnr", "ssim", "psnr_noisy")  # on the held-out test set; psnr_noisy: the input's
REAL_SCORES = ("real_psnr", "real_ssim", "real_psnr_noisy")  # on real CT/MR patches, when the run has them
COUNTS = ("uplink_bytes", "downlink_bytes", "dense_uplink_bytes", "clients_ok", "clients_failed")
_CHECKS = ("failures", "guard_bound", "guarded", "client_epsilon_reported")
_FINISHED = ("completed", "budget_exhausted")


class Scores(TypedDict):
    """What the evaluator measures of a model (:class:`~fedcompress.federation.evaluation.Evaluator`)."""

    loss: float
    psnr: float
    ssim: float
    psnr_noisy: float
    real_psnr: NotRequired[float]
    real_ssim: NotRequired[float]
    real_psnr_noisy: NotRequired[float]


def as_scores(values: Mapping[str, float]) -> Scores:
    """``values`` checked as :class:`Scores`: ``ValueError`` naming a missing or unknown key."""
    missing = [key for key in SCORES if key not in values]
    unknown = sorted(set(values) - {*SCORES, *REAL_SCORES})
    if missing or unknown:
        raise ValueError(f"scores need {SCORES} (and optionally {REAL_SCORES}); missing {missing}, unknown {unknown}")
    return Scores(**{key: float(value) for key, value in values.items()})  # type: ignore[typeddict-item]


@dataclasses.dataclass(frozen=True)
class ServerChecks:
    """What fedcompress's own server checks in a round, beside the counts.

    Parameters
    ----------
    failures : Mapping[str, str]
        Client -> why its reply was not used (a crash, a timeout, a payload the decoder refused).
    guard_bound : float or None
        The update-norm bound the guard applied; None when it had no finite bound.
    guarded : Mapping[str, str]
        Client -> the guard's verdict on its update.
    client_epsilon_reported : float or None
        The largest epsilon a client reported of itself; None when none did.
    """

    failures: Mapping[str, str]
    guard_bound: float | None
    guarded: Mapping[str, str]
    client_epsilon_reported: float | None


@dataclasses.dataclass(frozen=True)
class RoundRow:
    """One round of a run, as ``result.json`` and ``rounds.csv`` hold it (keys and order: module docstring)."""

    round: int
    loss: float | None
    psnr: float | None
    ssim: float | None
    psnr_noisy: float | None
    uplink_bytes: int | None
    downlink_bytes: int | None
    dense_uplink_bytes: int | None
    clients_ok: int | None
    clients_failed: int | None
    seconds: float | None
    skipped: bool | None
    epsilon: float | None
    real_psnr: float | None = None
    real_ssim: float | None = None
    real_psnr_noisy: float | None = None
    checks: ServerChecks | None = None

    def withheld(self) -> RoundRow:
        """The row without who took part and the data-dependent byte counts (central DP, minimal release)."""
        checks = self.checks and dataclasses.replace(self.checks, failures={}, guarded={})
        counts: dict[str, Any] = dict.fromkeys(COUNTS)
        return dataclasses.replace(self, **counts, checks=checks)

    def to_dict(self) -> dict[str, Any]:
        """The row as ``result.json`` holds it."""
        row: dict[str, Any] = {"round": self.round, **{key: getattr(self, key) for key in SCORES}}
        row |= {key: getattr(self, key) for key in REAL_SCORES if getattr(self, key) is not None}
        row |= {key: getattr(self, key) for key in COUNTS}
        checks = self.checks
        if checks is not None:
            row |= {
                "failures": dict(checks.failures),
                "guard_bound": checks.guard_bound,
                "guarded": dict(checks.guarded),
            }
        row |= {"seconds": self.seconds, "skipped": self.skipped}
        if checks is not None:
            row["client_epsilon_reported"] = checks.client_epsilon_reported
        return row | {"epsilon": self.epsilon}

    @classmethod
    def from_dict(cls, row: Mapping[str, Any]) -> RoundRow:
        """Read a row leniently: a missing key is None; the checks are there when any of their keys is.

        Raises
        ------
        ValueError
            When the row has no ``round``.
        """
        if "round" not in row:
            raise ValueError(f"a round's row has no 'round': {dict(row)!r:.200}")
        checks = None
        if any(key in row for key in _CHECKS):
            checks = ServerChecks(
                failures=dict(row.get("failures") or {}),
                guard_bound=row.get("guard_bound"),
                guarded=dict(row.get("guarded") or {}),
                client_epsilon_reported=row.get("client_epsilon_reported"),
            )
        fields = (*SCORES, *REAL_SCORES, *COUNTS, "seconds", "skipped", "epsilon")
        return cls(round=row["round"], **{key: row.get(key) for key in fields}, checks=checks)


@dataclasses.dataclass(frozen=True)
class RunResult:
    """A whole run, as ``result.json`` holds it.

    Parameters
    ----------
    status : str
        ``running`` while it runs; then ``completed``, ``budget_exhausted`` (stopped cleanly at ``max-epsilon``)
        or ``diverged``.
    config : Mapping
        Every setting, resolved (kebab-case keys).
    baseline : Mapping
        Round 0: the untrained model's :class:`Scores` (empty in a resumed run's absence of one).
    rounds : tuple of RoundRow
        One row per round.
    final : Mapping
        Totals over the rounds and the last evaluation (``RunRecorder.final_metrics``).
    privacy : Mapping
        The privacy ledger (empty without DP).
    extra : Mapping
        What else the writer adds: ``message``, ``weights``, ``attackers``, ``edge``; a baseline's ``runner``
        and ``label``.
    """

    status: str
    config: Mapping[str, Any]
    baseline: Mapping[str, Any]
    rounds: tuple[RoundRow, ...]
    final: Mapping[str, Any]
    privacy: Mapping[str, Any]
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def finished(self) -> bool:
        """Whether the run ended with its model: it completed, or stopped cleanly at its privacy budget."""
        return self.status in _FINISHED

    def to_dict(self) -> dict[str, Any]:
        """The result as ``result.json`` holds it."""
        return {
            "status": self.status,
            "config": self.config,
            "baseline": self.baseline,
            "rounds": [row.to_dict() for row in self.rounds],
            "final": self.final,
            "privacy": self.privacy,
            **self.extra,
        }

    @classmethod
    def from_dict(cls, result: Mapping[str, Any]) -> RunResult:
        """Read a parsed ``result.json`` leniently: a missing part reads as empty (rows: :meth:`RoundRow.from_dict`)."""
        named = {"status", "config", "baseline", "rounds", "final", "privacy"}
        return cls(
            status=result.get("status", ""),
            config=result.get("config") or {},
            baseline=result.get("baseline") or {},
            rounds=tuple(RoundRow.from_dict(row) for row in result.get("rounds") or ()),
            final=result.get("final") or {},
            privacy=result.get("privacy") or {},
            extra={key: value for key, value in result.items() if key not in named},
        )
