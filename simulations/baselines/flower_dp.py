"""Flower's own DP wrapper as a side-by-side baseline (the ``flower-dp`` runner of a sweep's cells).

Flower's ``DifferentialPrivacyClientSideFixedClipping`` around Flower's ``FedAvg``, with Flower's
``fixedclipping_mod`` on the clients: each client clips its float32 update to C, the server averages and adds
N(0, (zC/n)^2). Training, data, model and evaluation are ours, so only the mechanism differs. Flower reports no
epsilon; we account its releases with our accountant: every client takes part in every round
(``fraction-train = 1``), so there is no amplification by sampling (sample rate 1, one step per round).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from fedcompress.config import RunConfig
from fedcompress.errors import ConfigError

if TYPE_CHECKING:
    from fedcompress.privacy import LedgerEntry

__all__ = ["FLOWER_DP_LABEL", "FLOWER_NOISE", "check_flower_dp_config", "run_flower_dp"]

FLOWER_DP_LABEL = "Flower DP wrapper (DifferentialPrivacyClientSideFixedClipping + fixedclipping_mod)"


def check_flower_dp_config(cfg: RunConfig) -> None:
    """Refuse settings Flower's wrapper cannot honour, naming the key (``ConfigError``)."""
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
    from fedcompress.federation.records import RoundRow
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
            scores = evaluator({k: v.numpy() for k, v in arrays.items()})
            metrics = MetricRecord(cast("dict[str, Any]", scores))
            if server_round == 0:
                recorder.baseline = {"round": 0, **scores}
                tally.started = time.monotonic()  # round 1's seconds start here, after Ray's start-up
                return metrics
            last = inner.last if inner.last.get("round") == server_round else {"ok": 0, "failed": n, "bytes": 0}
            tally.releases += 1 if last["ok"] == n else 0  # Flower skips the release when a client failed
            entry = ledger.record(_ledger_entry(cfg, z, server_round, tally.releases))
            recorder.privacy = ledger.to_dict()
            row = RoundRow(  # no server checks: Flower's strategy decodes and aggregates, not ours
                round=server_round,
                **scores,
                uplink_bytes=last["bytes"],
                downlink_bytes=dense * n,
                dense_uplink_bytes=last["bytes"],
                clients_ok=last["ok"],
                clients_failed=last["failed"],
                seconds=time.monotonic() - tally.started,
                skipped=last["ok"] != n,
                epsilon=entry.epsilon,
            )
            recorder.record_round(row, cfg.num_rounds)
            tally.started = time.monotonic()
            return metrics

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
    from simulations.run.simulate import run_apps

    check_flower_dp_config(cfg)
    cfg = cfg.replace(out_dir=str(Path(cfg.out_dir).resolve()))
    z = _noise_multiplier(cfg)
    return run_apps(_server_app(cfg, z), _client_app(), cfg, cpus_per_client=cpus_per_client)
