"""The result contract of every run: ``result.json`` (machine-readable) plus progress and a table for people.

``result.json`` is a :class:`~fedcompress.federation.records.RunResult`: ``config`` (every setting, resolved),
``baseline`` (round 0: the untrained model), ``rounds`` (one :class:`~fedcompress.federation.records.RoundRow`
per round: round, scores, byte and client counts, seconds, epsilon, ...), ``final`` (psnr, ssim, uplink_bytes,
downlink_bytes, compression_ratio, ...), ``privacy`` (the ledger), ``status`` and ``weights`` (file name of the
final model, tensors only). ``rounds.csv`` beside it holds the rounds as a flat table (round 0 is the untrained
model, then one row per round, one column per key; ``pandas.read_csv`` loads it).
"""

from __future__ import annotations

import csv
import io
import json
import logging
from pathlib import Path
from typing import Any

from fedcompress.federation.records import RoundRow, RunResult
from fedcompress.files import atomic_write_json, atomic_write_text

__all__ = ["RESULT_FILE", "ROUNDS_FILE", "RunRecorder", "format_table", "read_result", "rounds_csv"]

RESULT_FILE = "result.json"
ROUNDS_FILE = "rounds.csv"
log = logging.getLogger("fedcompress")


def _mb(n: float | None) -> str:
    return "withheld" if n is None else f"{n / 1e6:.3f} MB"


def _total(rows: list[RoundRow], key: str) -> int | None:
    """Sum of a per-round count; None when any round withheld it (central DP, minimal release)."""
    values = [getattr(r, key) for r in rows]
    return None if any(v is None for v in values) else int(sum(values))


def _cell(value: Any, width: int) -> str:
    return f"{'-' if value is None else value:>{width}}"


class RunRecorder:
    """Collects per-round rows, prints progress with an ETA, and writes ``result.json`` atomically."""

    def __init__(self, out_dir: Path, config: dict[str, Any], *, rounds: list[RoundRow] | None = None):
        self.out_dir = out_dir
        self.config = config
        self.rounds: list[RoundRow] = list(rounds or [])
        self.baseline: dict[str, Any] = {}
        self.privacy: dict[str, Any] = {}
        self._first_round_this_process: int | None = None

    def record_round(self, row: RoundRow, total_rounds: int) -> None:
        """Append one round's row, print a progress line, and rewrite ``result.json``."""
        self.rounds.append(row)
        if self._first_round_this_process is None:
            self._first_round_this_process = row.round
        # The rounds' own durations: start-up (Ray, the handshake) and a resumed run's earlier rounds are not rounds.
        here = [r.seconds or 0.0 for r in self.rounds if r.round >= self._first_round_this_process]
        eta = sum(here) / len(here) * (total_rounds - row.round)
        eps = f" eps={row.epsilon:.3g}" if row.epsilon is not None else ""
        print(
            f"[round {row.round}/{total_rounds}] psnr={row.psnr:.2f} dB ssim={row.ssim:.3f} "
            f"up={_mb(row.uplink_bytes)} down={_mb(row.downlink_bytes)} "
            f"ok={_cell(row.clients_ok, 0)} failed={_cell(row.clients_failed, 0)}{eps} "
            f"{row.seconds:.1f}s ETA {eta:.0f}s",
            flush=True,
        )
        self.write(status="running")

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps to continue the record: rows, baseline and the privacy object (JSON)."""
        rows = [row.to_dict() for row in self.rounds]
        return {"schema_version": 1, "rows": rows, "baseline": self.baseline, "privacy": self.privacy}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict` output (``ValueError`` for another schema)."""
        if state.get("schema_version") != 1:
            raise ValueError(f"run record has schema_version {state.get('schema_version')!r}, expected 1")
        self.rounds = [RoundRow.from_dict(row) for row in state["rows"]]
        self.baseline, self.privacy = dict(state["baseline"]), dict(state["privacy"])

    def final_metrics(self) -> dict[str, Any]:
        """Totals over all rounds and the last evaluation."""
        up = _total(self.rounds, "uplink_bytes")
        dense = _total(self.rounds, "dense_uplink_bytes")
        down = _total(self.rounds, "downlink_bytes")
        last = self.rounds[-1].to_dict() if self.rounds else self.baseline
        return {
            "rounds_completed": sum(1 for r in self.rounds if not r.skipped),
            "psnr": last.get("psnr"),
            "ssim": last.get("ssim"),
            "loss": last.get("loss"),
            "psnr_initial": self.baseline.get("psnr"),
            "real_psnr": last.get("real_psnr"),
            "real_psnr_noisy": self.baseline.get("real_psnr_noisy"),
            "uplink_bytes": up,
            "dense_uplink_bytes": dense,
            "downlink_bytes": down,
            "compression_ratio": dense / up if up and dense is not None else None,
            "clients_failed": _total(self.rounds, "clients_failed"),
            "seconds": sum(r.seconds or 0.0 for r in self.rounds),
            "epsilon": self.privacy.get("epsilon"),
        }

    def write(self, *, status: str, extra: dict[str, Any] | None = None) -> RunResult:
        """Write ``result.json`` (and ``rounds.csv``) atomically and return what was written."""
        result = RunResult(
            status=status,
            config=self.config,
            baseline=self.baseline,
            rounds=tuple(self.rounds),
            final=self.final_metrics(),
            privacy=self.privacy,
            extra=extra or {},
        )
        written = result.to_dict()
        atomic_write_json(self.out_dir / RESULT_FILE, written)
        rows = written["rounds"]
        atomic_write_text(self.out_dir / ROUNDS_FILE, rounds_csv([self.baseline, *rows] if self.baseline else rows))
        return result


def rounds_csv(rows: list[dict[str, Any]]) -> str:
    """The rounds as CSV: a column per key in first-seen order; nested values (failures, guarded) as JSON."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(
            [
                "" if row.get(k) is None else json.dumps(row[k]) if isinstance(row[k], dict | list) else row[k]
                for k in columns
            ]
        )
    return out.getvalue()


def read_result(run_dir: str | Path) -> dict[str, Any]:
    """Load ``result.json`` from a run folder, with a clear error if it is missing or not JSON."""
    path = Path(run_dir) / RESULT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no {RESULT_FILE} in {run_dir}: is it a fedcompress run folder?")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from e


def format_table(result: RunResult) -> str:
    """A plain-text table of the rounds and the final line, for the terminal and the README."""
    lines = ["round  psnr(dB)  ssim   uplink(B)   downlink(B)  dense-up(B)  ok  failed  epsilon"]
    for r in result.rounds:
        eps = "-" if r.epsilon is None else f"{r.epsilon:.3g}"
        lines.append(
            f"{r.round:>5}  {r.psnr:8.2f}  {r.ssim:.3f}  {_cell(r.uplink_bytes, 10)}  "
            f"{_cell(r.downlink_bytes, 11)}  {_cell(r.dense_uplink_bytes, 11)}  {_cell(r.clients_ok, 2)}  "
            f"{_cell(r.clients_failed, 6)}  {eps}"
        )
    f = result.final
    ratio = f"x{f['compression_ratio']:.1f}" if f["compression_ratio"] else "n/a"
    uplink = (
        "uplink withheld (central DP, release='minimal')"
        if f["uplink_bytes"] is None
        else f"uplink {f['uplink_bytes']} B vs dense {f['dense_uplink_bytes']} B ({ratio})"
    )
    failures = "" if f["clients_failed"] is None else f", {f['clients_failed']} client failures"
    lines.append(
        f"final: psnr {f['psnr']:.2f} dB (start {f['psnr_initial']:.2f}), ssim {f['ssim']:.3f}, "
        f"{uplink}, {f['rounds_completed']} rounds completed{failures}"
    )
    if f.get("real_psnr") is not None:
        lines.append(
            f"real CT/MR patches (pydicom's test slices, never trained on): psnr {f['real_psnr']:.2f} dB "
            f"(noisy input {f['real_psnr_noisy']:.2f})"
        )
    if result.privacy.get("summary"):
        lines.append("privacy: " + result.privacy["summary"])
    return "\n".join(lines)
