"""The round loop of the ServerApp.

Labelled sections like Flower's ``Strategy.start``, plus what a real
federation needs: a handshake, seeded sampling, a privacy budget, byte counts, checkpoints and resume.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from flwr.app import ConfigRecord
from flwr.serverapp import Grid

from fedcompress.config import RunConfig
from fedcompress.errors import ConfigError
from fedcompress.federation import downlink
from fedcompress.federation.checkpoint import CHECKPOINT_FILE, Checkpoint, load_checkpoint, save_checkpoint
from fedcompress.federation.evaluation import Evaluator
from fedcompress.federation.privacy_plan import PrivacyPlan
from fedcompress.federation.results import RESULT_FILE, RunRecorder, format_table
from fedcompress.federation.sampling import sample_clients
from fedcompress.federation.server_optimizer import ServerOptimizer
from fedcompress.federation.weights import initial_weights, save_arrays
from fedcompress.privacy import NOT_COVERED, LedgerEntry, check_order
from server.records import payload_record
from server.strategy import CompressedFedAvg

__all__ = ["WEIGHTS_FILE", "run_server"]

log = logging.getLogger("fedcompress")
WEIGHTS_FILE = "model.pt"


def resolve_out_dir(cfg: RunConfig) -> Path:
    """The run folder: ``out-dir`` if set, else a fresh one under ./runs. Refuses to overwrite a finished run."""
    out = Path(cfg.out_dir) if cfg.out_dir else Path("runs") / time.strftime("run-%Y%m%d-%H%M%S")
    out = out.expanduser().resolve()
    if not cfg.resume and ((out / RESULT_FILE).exists() or (out / CHECKPOINT_FILE).exists()):
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


def run_server(grid: Grid, cfg: RunConfig) -> dict[str, Any]:
    """Run the whole federation and return the written result."""
    # --- set-up ---------------------------------------------------------------------------------------
    check_order(cfg)
    out = resolve_out_dir(cfg)
    plan = PrivacyPlan(cfg)
    evaluator = Evaluator(cfg)
    optimizer = ServerOptimizer(lr=cfg.server_lr, momentum=cfg.server_momentum)
    weights = initial_weights(cfg)
    recorder = RunRecorder(out, cfg.to_dict() | {"out-dir": str(out)})
    start_round = 1
    if cfg.resume and (out / CHECKPOINT_FILE).exists():
        ckpt = load_checkpoint(out)
        weights, start_round = ckpt.weights, ckpt.round + 1
        optimizer.load_state_dict(ckpt.optimizer)
        plan.load_state_dict(ckpt.meta["privacy_plan"])
        recorder.rounds, recorder.baseline = ckpt.meta["rows"], ckpt.meta["baseline"]
        recorder.privacy = ckpt.meta.get("privacy", {})
        print(f"resuming {out} after round {ckpt.round}", flush=True)
    else:
        recorder.baseline = {"round": 0, **evaluator(weights)}
    if cfg.private:
        recorder.privacy = {
            "noise_multiplier": plan.noise_multiplier,
            "ledger": recorder.privacy.get("ledger", []),
        }
    strategy = CompressedFedAvg(cfg)
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
            seed=cfg.seed,
            server_round=server_round,
        )
        if plan.would_exceed_budget(selected):
            status = "budget_exhausted"
            message = (
                f"stopped before round {server_round}: it would take epsilon to {plan.predict(selected):.4g}, "
                f"past max-epsilon={cfg.max_epsilon}"
            )
            print(message, flush=True)
            break
        # --- send and receive ------------------------------------------------------------------------
        payload = downlink.broadcast(weights, cfg, server_round)
        strategy.prepare_round(selected, weights, plan.noise_multiplier)
        config = ConfigRecord(_client_config(cfg, out, plan.noise_multiplier))
        messages = list(strategy.configure_train(server_round, payload_record(payload), config, grid))
        replies = grid.send_and_receive(messages, timeout=cfg.round_timeout) if messages else []
        # --- decode, aggregate, step -----------------------------------------------------------------
        delta_record, _ = strategy.aggregate_train(server_round, replies)
        decoded = strategy.last_round
        if decoded is None:
            raise RuntimeError("aggregate_train did not record the round it decoded")
        skipped = delta_record is None
        if delta_record is None:
            print(
                f"round {server_round}: only {len(decoded.updates)} usable replies "
                f"(min-clients={cfg.min_clients}); round skipped, model unchanged",
                flush=True,
            )
        else:
            delta = {k: v.numpy() for k, v in delta_record.items()}
            weights = optimizer.step(weights, delta)
        for partition, reason in sorted(decoded.failures.items()):
            log.warning("round %s: client %s failed: %s", server_round, partition, reason)
        entry = plan.commit(server_round, selected) if (not skipped or cfg.dp == "client") else None
        # --- evaluate, record, checkpoint ------------------------------------------------------------
        row = _round_row(
            server_round,
            evaluator(weights),
            decoded,
            strategy,
            len(payload) * len(messages),
            time.monotonic() - t0,
            skipped,
            entry,
        )
        if entry is not None:
            recorder.privacy.setdefault("ledger", []).append(entry.to_dict())
        recorder.record_round(row, cfg.num_rounds)
        save_checkpoint(
            out,
            Checkpoint(
                round=server_round,
                weights=weights,
                optimizer=optimizer.state_dict(),
                meta={
                    "rows": recorder.rounds,
                    "baseline": recorder.baseline,
                    "privacy": recorder.privacy,
                    "privacy_plan": plan.state_dict(),
                },
            ),
        )

    # --- finish -----------------------------------------------------------------------------------------
    save_arrays(out / WEIGHTS_FILE, weights)
    if cfg.private:
        recorder.privacy.update(_privacy_summary(plan, cfg))
    extra: dict[str, Any] = {"message": message, "weights": WEIGHTS_FILE}
    if cfg.distill:
        extra["edge"] = _distill(weights, cfg, out)
    result = recorder.write(status=status, extra=extra)
    print(format_table(result), flush=True)
    print(f"result: {out / RESULT_FILE}", flush=True)
    return result


def _round_row(
    server_round: int,
    scores: dict[str, float],
    decoded: Any,
    strategy: CompressedFedAvg,
    downlink_bytes: int,
    seconds: float,
    skipped: bool,
    entry: LedgerEntry | None,
) -> dict[str, Any]:
    metrics = strategy.last_client_metrics
    return {
        "round": server_round,
        **scores,
        "uplink_bytes": decoded.uplink_bytes,
        "downlink_bytes": downlink_bytes,
        "dense_uplink_bytes": int(sum(m.get("dense-bytes", 0) for m in metrics.values())),
        "clients_ok": len(decoded.updates),
        "clients_failed": len(decoded.failures),
        "failures": {str(k): v for k, v in sorted(decoded.failures.items())},
        "seconds": seconds,
        "skipped": skipped,
        "epsilon": None if entry is None else entry.epsilon,
        "client_epsilon_reported": max((m["epsilon"] for m in metrics.values() if "epsilon" in m), default=None),
    }


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


def _privacy_summary(plan: PrivacyPlan, cfg: RunConfig) -> dict[str, Any]:
    entry = plan.entry(plan.rounds_released)
    return {**entry.to_dict(), "summary": entry.describe(), "not_covered": NOT_COVERED}
