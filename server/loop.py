"""The round loop of the ServerApp.

Labelled sections like Flower's ``Strategy.start``, plus what a real federation needs: a handshake, sampling,
a privacy budget, byte counts, checkpoints and resume. Everything that depends on the privacy mode is a method of
the run's :class:`~fedcompress.privacy.mechanisms.ServerMechanism`; every release is charged, and the charge is
on disk (``privacy-state.json``), before the round's messages leave.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flwr.app import ConfigRecord
from flwr.serverapp import Grid

from fedcompress.config import RunConfig, upgrade_settings
from fedcompress.errors import ConfigError
from fedcompress.federation import downlink
from fedcompress.federation.attacks import attackers
from fedcompress.federation.checkpoint import (
    CHECKPOINT_FILE,
    PRIVACY_STATE_FILE,
    Checkpoint,
    load_checkpoint,
    load_privacy_state,
    save_checkpoint,
    save_privacy_state,
)
from fedcompress.federation.evaluation import Evaluator
from fedcompress.federation.records import RoundRow, RunResult, Scores, ServerChecks
from fedcompress.federation.results import RESULT_FILE, RunRecorder, format_table
from fedcompress.federation.sampling import sample_clients
from fedcompress.federation.server_optimizer import ServerOptimizer
from fedcompress.federation.weights import initial_weights, save_arrays
from fedcompress.privacy import LedgerEntry, PrivacyLedger, check_order
from fedcompress.privacy.mechanisms import ServerMechanism, server_mechanism
from server.records import payload_record
from server.replies import send_and_collect
from server.strategy import CompressedFedAvg, RoundOutcome

__all__ = ["WEIGHTS_FILE", "run_server"]

log = logging.getLogger("fedcompress")
WEIGHTS_FILE = "model.pt"


def resolve_out_dir(cfg: RunConfig) -> Path:
    """The run folder: ``out-dir`` if set, else a fresh one under ./runs. Refuses to overwrite a finished run."""
    out = Path(cfg.out_dir) if cfg.out_dir else Path("runs") / time.strftime("run-%Y%m%d-%H%M%S")
    out = out.expanduser().resolve()
    held = (RESULT_FILE, CHECKPOINT_FILE, PRIVACY_STATE_FILE)
    if not cfg.resume and any((out / name).exists() for name in held):
        raise ConfigError(
            f"out-dir {str(out)!r} already holds a run; pass resume=true to continue it or choose another"
        )
    out.mkdir(parents=True, exist_ok=True)
    return out


def _client_config(cfg: RunConfig, out: Path, noise: float) -> dict[str, Any]:
    """What every train message carries: all settings (so every run mode agrees) and the round's noise."""
    settings = cfg.to_dict()
    settings.update({"out-dir": str(out), "noise-multiplier-effective": noise})
    return settings


def _refuse_seeded_noise_outside_simulation(grid: Grid, cfg: RunConfig) -> None:
    """Noise from the public seed is for simulation studies: never against a deployment's SuperLink."""
    if cfg.private and cfg.dp_randomness != "secret" and type(grid).__name__ != "InMemoryGrid":
        raise ConfigError(
            f"dp-randomness={cfg.dp_randomness!r} derives DP noise from the public seed (no guarantee against "
            "anyone who knows it); it is refused outside Flower's simulation engine"
        )


def run_server(grid: Grid, cfg: RunConfig) -> RunResult:
    """Run the whole federation and return the written result."""
    # --- set-up ---------------------------------------------------------------------------------------
    check_order(cfg)
    _refuse_seeded_noise_outside_simulation(grid, cfg)
    out = resolve_out_dir(cfg)
    mechanism = server_mechanism(cfg)
    for line in mechanism.start_lines():
        print(line, flush=True)
    evaluator = Evaluator(cfg)
    optimizer = ServerOptimizer(lr=cfg.server_lr, momentum=cfg.server_momentum, kind=cfg.server_optimizer)
    weights = initial_weights(cfg)
    recorder = RunRecorder(out, cfg.to_dict() | {"out-dir": str(out)})
    ledger = PrivacyLedger()
    start_round = 1
    if cfg.resume:
        _load_privacy(mechanism, out)
    if cfg.resume and (out / CHECKPOINT_FILE).exists():
        ckpt = load_checkpoint(out)
        _check_same_run(cfg, ckpt.meta.get("config"), out)
        weights, start_round = ckpt.weights, ckpt.round + 1
        optimizer.load_state_dict(ckpt.optimizer)
        try:
            recorder.load_state_dict(ckpt.meta["recorder"])
        except (KeyError, ValueError) as e:
            raise ConfigError(f"cannot resume {out}: its checkpoint holds no usable run record ({e})") from e
        ledger = PrivacyLedger.from_dict(recorder.privacy)
        print(f"resuming {out} after round {ckpt.round}", flush=True)
    else:
        recorder.baseline = {"round": 0, **evaluator(weights)}
    if mechanism.private:
        recorder.privacy = ledger.to_dict()
    strategy = CompressedFedAvg(cfg, mechanism)
    if strategy.estimates is not None and cfg.resume and (out / CHECKPOINT_FILE).exists():
        strategy.estimates.load_state_dict(load_checkpoint(out).feedback)
    strategy.discover(grid, expected=cfg.num_clients, timeout=cfg.round_timeout)
    status, message = "completed", ""

    for server_round in range(start_round, cfg.num_rounds + 1):
        t0 = time.monotonic()
        # --- sample and check the budget -------------------------------------------------------------
        selected = sample_clients(
            list(strategy.node_of_partition),
            scheme=cfg.client_sampling,
            fraction=cfg.fraction_train,
            min_clients=cfg.min_clients,
            generator=mechanism.sampling_generator(server_round),
        )
        if mechanism.would_exceed_budget(selected):
            status = "budget_exhausted"
            message = (
                f"stopped before round {server_round}: it would take epsilon to "
                f"{mechanism.predict(selected):.4g}, past max-epsilon={cfg.max_epsilon}"
            )
            print(message, flush=True)
            break
        # --- charge, send and receive ------------------------------------------------------------------
        payload = downlink.broadcast(weights, cfg, server_round)
        strategy.prepare_round(selected, weights)
        config = ConfigRecord(_client_config(cfg, out, mechanism.noise_multiplier))
        messages = list(strategy.configure_train(server_round, payload_record(payload), config, grid))
        mechanism.charge(selected)  # a client that is sent work spends budget, whatever happens next
        save_privacy_state(out, server_round, mechanism.state_dict())
        replies = send_and_collect(grid, messages, timeout=cfg.round_timeout, progress=_progress(server_round))
        # --- decode, aggregate, step -----------------------------------------------------------------
        outcome = strategy.aggregate_replies(server_round, replies)
        mechanism.check_reported(outcome.client_metrics)
        entry = mechanism.entry(server_round)
        if entry is not None:
            ledger.record(entry)
            recorder.privacy = ledger.to_dict()
        for partition, reason in sorted({**outcome.decoded.failures, **outcome.guard.verdicts}.items()):
            log.warning("round %s: client %s: %s", server_round, partition, reason)
        if outcome.delta is None:
            print(
                f"round {server_round}: only {outcome.aggregated} usable updates (min-clients={cfg.min_clients}); "
                "round skipped, model unchanged",
                flush=True,
            )
        else:
            try:
                weights = optimizer.step(weights, outcome.delta)
            except FloatingPointError as e:
                status = "diverged"
                message = (
                    f"stopped in round {server_round}: {e}; the model of round {server_round - 1} is kept and no "
                    f"checkpoint is written (aggregation={cfg.aggregation!r}, guard={cfg.guard!r})"
                )
                print(message, flush=True)
                break
        # --- evaluate, record, checkpoint ------------------------------------------------------------
        seconds = time.monotonic() - t0
        row = _round_row(server_round, evaluator(weights), outcome, len(payload) * len(messages), seconds, entry)
        recorder.record_round(mechanism.public_row(row), cfg.num_rounds)
        save_checkpoint(
            out,
            Checkpoint(
                round=server_round,
                weights=weights,
                optimizer=optimizer.state_dict(),
                meta={"config": cfg.to_dict(), "recorder": recorder.state_dict()},
                feedback={} if strategy.estimates is None else strategy.estimates.state_dict(),
            ),
        )

    # --- finish -----------------------------------------------------------------------------------------
    save_arrays(out / WEIGHTS_FILE, weights)
    extra: dict[str, Any] = {"message": message, "weights": WEIGHTS_FILE, "attackers": attackers(cfg)}
    if cfg.distill:
        extra["edge"] = _distill(weights, cfg, out)
    result = recorder.write(status=status, extra=extra)
    print(format_table(result), flush=True)
    print(f"result: {out / RESULT_FILE}", flush=True)
    return result


#: Settings a resumed run may change: they do not shape what was already computed.
RESUMABLE = (
    "num-rounds",
    "round-timeout",
    "resume",
    "out-dir",
    "distill",
    "student-width",
    "max-epsilon",
    "device",
)


def _progress(server_round: int) -> Callable[[int, int, float], None]:
    def report(received: int, sent: int, elapsed: float) -> None:
        print(f"round {server_round}: {received}/{sent} clients replied, {elapsed:.0f} s", flush=True)

    return report


def _check_same_run(cfg: RunConfig, saved: dict[str, Any] | None, out: Path) -> None:
    """Refuse to resume a checkpoint made with other settings, naming them."""
    if saved is None:
        raise ConfigError(f"cannot resume {out}: its checkpoint records no settings (made by an older fedcompress?)")
    now, defaults, saved = cfg.to_dict(), RunConfig().to_dict(), upgrade_settings(saved)
    # A setting newer than the checkpoint was at its default when the checkpoint was made.
    changed = [key for key in now if key not in RESUMABLE and saved.get(key, defaults[key]) != now[key]]
    if changed:
        shown = ", ".join(f"{key}: {saved.get(key, defaults[key])!r} -> {now[key]!r}" for key in changed[:6])
        raise ConfigError(
            f"cannot resume {out} with other settings ({shown}); resume with the run's settings (only "
            f"{', '.join(RESUMABLE[:3])} and similar may change) or start a new run"
        )


def _load_privacy(mechanism: ServerMechanism, out: Path) -> None:
    """Every charge made before the crash, as of the last round sent (``privacy-state.json``)."""
    try:
        saved = load_privacy_state(out)
        if saved is not None:
            mechanism.load_state_dict(saved["state"])
    except ValueError as e:
        raise ConfigError(f"cannot resume {out}: {e}") from e
    if mechanism.private and saved is None and (out / CHECKPOINT_FILE).exists():
        raise ConfigError(
            f"cannot resume the private run in {out}: it has a checkpoint but no {PRIVACY_STATE_FILE} (made by an "
            "older fedcompress?), so the releases already charged are unknown"
        )


def _round_row(
    server_round: int,
    scores: Scores,
    outcome: RoundOutcome,
    downlink_bytes: int,
    seconds: float,
    entry: LedgerEntry | None,
) -> RoundRow:
    decoded, metrics = outcome.decoded, outcome.client_metrics
    return RoundRow(
        round=server_round,
        **scores,
        uplink_bytes=decoded.uplink_bytes,
        downlink_bytes=downlink_bytes,
        dense_uplink_bytes=int(sum(m.get("dense-bytes", 0) for m in metrics.values())),
        clients_ok=outcome.aggregated,
        clients_failed=len(decoded.failures),
        seconds=seconds,
        skipped=outcome.skipped,
        epsilon=None if entry is None else entry.epsilon,
        checks=ServerChecks(
            failures={str(k): v for k, v in sorted(decoded.failures.items())},
            guard_bound=outcome.guard.bound if math.isfinite(outcome.guard.bound) else None,
            guarded={str(k): v for k, v in sorted(outcome.guard.verdicts.items())},
            client_epsilon_reported=max((m["epsilon"] for m in metrics.values() if "epsilon" in m), default=None),
        ),
    )


def _distill(weights: dict[str, Any], cfg: RunConfig, out: Path) -> dict[str, Any]:
    """Build the edge model (``distill = true``); a failure here is reported, the federation's result is kept."""
    from fedcompress.distill.pipeline import distill_after_run  # heavy (onnx, quantization): only when asked

    print("distilling the global model into the edge model ...", flush=True)
    try:
        report = distill_after_run(weights, cfg, out / "edge")
    except Exception as e:  # the run's model is saved already; say what failed instead of losing the result
        log.error("edge model failed: %s", e)
        return {"error": f"{type(e).__name__}: {e}"}
    return {"edge_json": "edge/edge.json", "rows": report["rows"], "targets": report.get("targets")}
