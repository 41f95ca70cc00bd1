"""What runs inside one sweep cell: our federation, or Flower's own DP wrapper as a side-by-side baseline.

Runners (the ``runner`` of a grid's ``[[cells]]``):

- ``simulate``: fedcompress itself (``simulations.simulate.simulate``). Plain FedAvg in float32 is this runner
  with ``dp = "none"`` and ``codec = "none"``.
- ``flower-dp``: Flower's ``DifferentialPrivacyClientSideFixedClipping`` around Flower's ``FedAvg``, with
  Flower's ``fixedclipping_mod`` on the clients: each client clips its float32 update to C, the server
  averages and adds N(0, (zC/n)^2). Training, data, model and evaluation are ours, so only the mechanism
  differs. Flower reports no epsilon; we account its releases with our accountant: every client takes part in
  every round (``fraction-train = 1``), so there is no amplification by sampling (sample rate 1, one step per
  round).

``python -m simulations.sweep --cell DIR`` calls ``run_cell_here``: it reads ``DIR/cell.json``, runs the
cell, and on failure writes ``DIR/error.txt`` and exits non-zero. SIGTERM (the sweep stopping it, or Linux's
parent-death signal when the sweep dies) and a watchdog on the parent end the cell's whole process group, so a
stopped or killed sweep leaves no federation running.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedcompress.config import RunConfig
from fedcompress.errors import ConfigError
from simulations.processes import session_members

if TYPE_CHECKING:
    from fedcompress.privacy import LedgerEntry

__all__ = ["FLOWER_DP_LABEL", "check_runner_config", "run_cell_here", "run_flower_dp"]

FLOWER_DP_LABEL = "Flower DP wrapper (DifferentialPrivacyClientSideFixedClipping + fixedclipping_mod)"


def check_runner_config(runner: str, cfg: RunConfig) -> None:
    """Refuse settings a runner cannot honour, naming the key (``ConfigError``)."""
    if runner == "simulate":
        return
    if runner != "flower-dp":
        raise ConfigError(f"runner {runner!r} is not allowed; choose 'simulate' or 'flower-dp'")
    wanted = {
        "dp": "client",
        "dp-noise": "central",
        "codec": "none",
        "downlink-codec": "none",
        "fraction-train": 1.0,
        "max-epsilon": 0.0,
        "pre-noise": "",
    }
    have = cfg.to_dict()
    for key, value in wanted.items():
        if have[key] != value:
            raise ConfigError(
                f"runner 'flower-dp' needs {key}={value!r} (Flower's wrapper: client-side clipping, central "
                f"noise, float32 updates, every client every round, no budget), got {key}={have[key]!r}"
            )


# ---------------------------------------------------------------------------------------------- cell process
def _end_cell(code: int) -> None:
    """End this cell at once with every process it started (Ray's too) when it leads its session, else alone."""
    if os.getsid(0) == os.getpid():
        for pid in session_members(os.getpid()):  # also those that moved to another process group
            if pid != os.getpid():
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
        os.killpg(os.getpgrp(), signal.SIGKILL)
    os._exit(code)


def _stop_on_signal(signum: int, _frame: object) -> None:
    """SIGTERM: the sweep is stopping this cell, or has died (PR_SET_PDEATHSIG). Nothing here needs saving."""
    with contextlib.suppress(OSError):  # stdout is a pipe to the sweep, which may be dead (EPIPE)
        os.write(
            1,
            f"cell: stopped by signal {signum}; ending its processes (a rerun resumes from the checkpoint)\n".encode(),
        )
    _end_cell(128 + signum)


def _watch_parent(parent: int) -> None:
    """End this cell when the sweep process that started it is gone (re-parented); a fallback for the signal."""
    while True:
        if os.getppid() != parent:
            _end_cell(1)
        time.sleep(0.5)


def _end_with_parent() -> None:
    """Tie this cell process to its sweep: SIGTERM or the sweep's death ends it and everything it started."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _stop_on_signal)
    threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True).start()


def run_cell_here(folder: Path) -> int:
    """Run the cell described by ``folder/cell.json`` in this process; 0 on success, 1 on failure.

    The cell ends, with every process it started, on SIGTERM and when its sweep dies.
    """
    _end_with_parent()
    try:
        spec = json.loads((folder / "cell.json").read_text())
        cfg = RunConfig.from_mapping(spec["config"])
        check_runner_config(spec["runner"], cfg)
        cpus = float(spec.get("cpus_per_client", 1.0))
        if spec["runner"] == "flower-dp":
            run_flower_dp(cfg, cpus_per_client=cpus)
        else:
            from simulations.simulate import simulate

            simulate(cfg, cpus_per_client=cpus, quiet=True)
    except Exception as e:  # any failure of the cell becomes its record's error
        traceback.print_exc()
        text = f"{type(e).__name__}: {e}".strip()
        (folder / "error.txt").write_text(text[:4000] + "\n")
        return 1
    return 0


# ---------------------------------------------------------------------------------------------- Flower DP
def _noise_multiplier(cfg: RunConfig) -> float:
    from fedcompress.privacy import calibrate_noise

    if cfg.noise_multiplier > 0:
        return cfg.noise_multiplier
    try:
        return float(calibrate_noise(cfg.target_epsilon, 1.0, cfg.num_rounds, cfg.delta, cfg.accountant))
    except (ValueError, RuntimeError) as e:
        raise ConfigError(
            f"cannot calibrate noise for target-epsilon={cfg.target_epsilon} without "
            f"amplification over {cfg.num_rounds} rounds: {e}"
        ) from e


#: Where Flower's wrapper draws its noise (flwr.supercore.differential_privacy.add_gaussian_noise_inplace).
FLOWER_NOISE = "numpy's global RNG (np.random.normal), seeded from OS entropy at process start, one draw per value"


def _ledger_entry(cfg: RunConfig, z: float, server_round: int, releases: int) -> LedgerEntry:
    from fedcompress.privacy import LedgerEntry, epsilon

    eps = float(epsilon(z, 1.0, releases, cfg.delta, cfg.accountant)) if releases else 0.0
    return LedgerEntry(
        round=server_round,
        epsilon=eps,
        delta=cfg.delta,
        noise_multiplier=z,
        clip_norm=cfg.clip_norm,
        sample_rate=1.0,
        steps=releases,
        rounds=releases,
        accountant=cfg.accountant,
        level="client",
        trust="central",
        randomness=FLOWER_NOISE,
    )


@dataclasses.dataclass
class _Tally:
    """The baseline server's running counts: when the current round started, releases so far."""

    started: float
    releases: int = 0


def _client_app() -> Any:
    from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp
    from flwr.clientapp.mod import fixedclipping_mod

    app = ClientApp(mods=[fixedclipping_mod])

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        import torch

        from fedcompress.data import client_data_for
        from fedcompress.models import build_model
        from fedcompress.seeding import torch_generator
        from fedcompress.training import make_loader, make_optimizer, train_epochs

        torch.set_num_threads(1)
        settings: dict[str, Any] = dict(msg.content.config_records["config"])
        server_round = int(settings["server-round"])
        known = set(RunConfig.keys())
        cfg = RunConfig.from_mapping({k: v for k, v in settings.items() if k in known})
        partition = int(context.node_config["partition-id"])
        model = build_model(cfg.model, width=cfg.width)
        model.load_state_dict(msg.content.array_records["arrays"].to_torch_state_dict())
        data = client_data_for(cfg, partition)
        loader = make_loader(data, cfg.batch_size, torch_generator(cfg.seed, "train", server_round, partition))
        loss = train_epochs(model, loader, make_optimizer(model, cfg.lr, cfg.momentum), cfg.local_epochs)
        reply = RecordDict(
            {
                "arrays": ArrayRecord(model.state_dict()),
                "metrics": MetricRecord({"num-examples": len(data), "train-loss": float(loss)}),
            }
        )
        return Message(reply, reply_to=msg)

    return app


def _server_app(cfg: RunConfig, z: float) -> Any:
    from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord
    from flwr.serverapp import Grid, ServerApp
    from flwr.serverapp.strategy import DifferentialPrivacyClientSideFixedClipping, FedAvg

    from fedcompress.federation.evaluation import Evaluator
    from fedcompress.federation.results import RunRecorder
    from fedcompress.federation.weights import initial_weights
    from fedcompress.privacy import PrivacyLedger

    class CountingFedAvg(FedAvg):
        """FedAvg that remembers what it aggregated: replies and their float32 bytes."""

        def aggregate_train(self, server_round: int, replies: Any) -> Any:
            replies = list(replies)
            good = [r for r in replies if not r.has_error()]
            self.last = {
                "round": server_round,
                "ok": len(good),
                "failed": len(replies) - len(good),
                "bytes": sum(r.content["arrays"].count_bytes() for r in good),
            }
            return super().aggregate_train(server_round, replies)

    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Any) -> None:
        out = Path(cfg.out_dir)
        evaluator, weights = Evaluator(cfg), initial_weights(cfg)
        recorder = RunRecorder(out, cfg.to_dict() | {"out-dir": str(out)})
        ledger = PrivacyLedger()
        n = cfg.num_clients
        inner = CountingFedAvg(fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=n, min_available_nodes=n)
        inner.last = {}
        strategy = DifferentialPrivacyClientSideFixedClipping(
            inner, noise_multiplier=z, clipping_norm=cfg.clip_norm, num_sampled_clients=n
        )
        initial = ArrayRecord({k: Array(v) for k, v in weights.items()})
        dense = initial.count_bytes()
        tally = _Tally(started=time.monotonic())

        def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord:
            scores: dict[str, Any] = evaluator({k: v.numpy() for k, v in arrays.items()})
            if server_round == 0:
                recorder.baseline = {"round": 0, **scores}
                tally.started = time.monotonic()  # round 1's seconds start here, after Ray's start-up
                return MetricRecord(scores)
            last = inner.last if inner.last.get("round") == server_round else {"ok": 0, "failed": n, "bytes": 0}
            tally.releases += 1 if last["ok"] == n else 0  # Flower skips the release when a client failed
            entry = ledger.record(_ledger_entry(cfg, z, server_round, tally.releases))
            recorder.privacy = ledger.to_dict()
            row = {
                "round": server_round,
                **scores,
                "uplink_bytes": last["bytes"],
                "downlink_bytes": dense * n,
                "dense_uplink_bytes": last["bytes"],
                "clients_ok": last["ok"],
                "clients_failed": last["failed"],
                "seconds": time.monotonic() - tally.started,
                "skipped": last["ok"] != n,
                "epsilon": entry.epsilon,
            }
            recorder.record_round(row, cfg.num_rounds)
            tally.started = time.monotonic()
            return MetricRecord(scores)

        settings: dict[str, Any] = cfg.to_dict()
        strategy.start(
            grid=grid,
            initial_arrays=initial,
            num_rounds=cfg.num_rounds,
            timeout=cfg.round_timeout,
            train_config=ConfigRecord(settings),
            evaluate_fn=evaluate_fn,
        )
        if not ledger.entries:  # no round finished: record that nothing was released
            ledger.record(_ledger_entry(cfg, z, cfg.num_rounds, tally.releases))
        recorder.privacy = ledger.to_dict()
        recorder.privacy["summary"] += (
            " (noise by Flower's DifferentialPrivacyClientSideFixedClipping, which reports no epsilon; "
            "accounted by fedcompress without amplification)"
        )
        recorder.write(status="completed", extra={"message": "", "runner": "flower-dp", "label": FLOWER_DP_LABEL})

    return app


def run_flower_dp(cfg: RunConfig, *, cpus_per_client: float = 1.0) -> dict[str, Any]:
    """Run Flower's client-side fixed-clipping DP baseline for ``cfg`` and return its ``result.json``."""
    from simulations.simulate import run_apps

    check_runner_config("flower-dp", cfg)
    cfg = cfg.replace(out_dir=str(Path(cfg.out_dir).resolve()))
    z = _noise_multiplier(cfg)
    return run_apps(_server_app(cfg, z), _client_app(), cfg, cpus_per_client=cpus_per_client)


if __name__ == "__main__":
    sys.exit(run_cell_here(Path(sys.argv[1])))
