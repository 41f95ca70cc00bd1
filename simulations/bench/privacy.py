"""Privacy benchmark: what DP costs in time and in PSNR.

1. DP-SGD (Opacus, hooks) vs plain SGD: one local epoch of the default model on one client's shard, the two
   interleaved in one run so machine noise hits both alike; median seconds and their ratio.
2. A private federation vs a non-private one with the same seed and data (``fedcompress simulate`` per cell):
   seconds per round, final PSNR and epsilon.

``fedcompress bench privacy [--repeats N] [--epsilons 1,4,8] [--json]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["main", "time_local_epochs"]


def time_local_epochs(repeats: int = 7) -> dict[str, Any]:
    """Median seconds of one local epoch, plain SGD and DP-SGD, interleaved (default RunConfig, one thread)."""
    import torch

    from fedcompress.config import RunConfig
    from fedcompress.data import client_data
    from fedcompress.models import build_model
    from fedcompress.privacy import NoiseSource, SampleLevelDP, sample_level_plan
    from fedcompress.seeding import torch_generator
    from fedcompress.training import make_loader, make_optimizer, train_epochs

    torch.set_num_threads(1)
    cfg = RunConfig()
    data = client_data(
        0,
        cfg.num_clients,
        samples_per_client=cfg.samples_per_client,
        image_size=cfg.image_size,
        non_iid=cfg.non_iid,
        seed=cfg.seed,
    )

    def one_epoch(private: bool, rep: int) -> float:
        model = build_model(cfg.model, width=cfg.width)
        generator = torch_generator(0, "bench", rep)
        loader = make_loader(data, cfg.batch_size, generator)
        optimizer: torch.optim.Optimizer = make_optimizer(model, cfg.lr, cfg.momentum)
        if private:
            engine = SampleLevelDP(noise_multiplier=1.0, clip_norm=cfg.clip_norm, plan=sample_level_plan(cfg))
            dataset = data.as_tensor_dataset()
            model, optimizer, loader = engine.make_private(model, optimizer, dataset, generator=NoiseSource().torch())
        start = time.perf_counter()
        train_epochs(model, loader, optimizer, 1)
        return time.perf_counter() - start

    one_epoch(False, -1), one_epoch(True, -1)  # warm-up: first-call costs are not the steady state
    plain, private = [], []
    for rep in range(repeats):
        plain.append(one_epoch(False, rep))
        private.append(one_epoch(True, rep))
    return {
        "plain_sgd_s": statistics.median(plain),
        "dp_sgd_s": statistics.median(private),
        "ratio": statistics.median(private) / statistics.median(plain),
        "repeats": repeats,
        "samples": len(data),
        "batch_size": cfg.batch_size,
        "model": f"{cfg.model} width {cfg.width}",
    }


def _federation_rows(epsilons: Sequence[float], work: Path) -> list[dict[str, Any]]:
    from simulations.bench.federation import run_cell

    rows = []
    cells: list[tuple[str, dict[str, Any]]] = [("none", {})] + [
        (f"sample eps={e:g}", {"dp": "sample", "target-epsilon": e}) for e in epsilons
    ]
    for label, extra in cells:
        row = run_cell({"num-rounds": 5, "seed": 0, **extra}, work / label.replace(" ", "-").replace("=", ""))
        result = json.loads((work / label.replace(" ", "-").replace("=", "") / "result.json").read_text())
        row.update(
            {"label": label, "epsilon": result["final"]["epsilon"], "privacy": result.get("privacy", {}).get("summary")}
        )
        rows.append(row)
        print(
            f"  {label:>16}: {row['seconds_per_round']:.2f} s/round, psnr {row['psnr']:.2f} dB, "
            f"epsilon {row['epsilon']}",
            flush=True,
        )
    base = rows[0]
    for row in rows:
        row["time_vs_nonprivate"] = row["seconds_per_round"] / base["seconds_per_round"]
        row["psnr_minus_nonprivate"] = row["psnr"] - base["psnr"]
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    """Command line of the privacy benchmark."""
    parser = argparse.ArgumentParser(prog="fedcompress bench privacy", description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--epsilons", default="1,4,8", help="target epsilons of the private federations")
    parser.add_argument("--skip-federation", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--work-dir")
    args = parser.parse_args(argv)
    step = time_local_epochs(args.repeats)
    print(
        f"one local epoch ({step['samples']} samples, batch {step['batch_size']}, {step['model']}): "
        f"plain SGD {step['plain_sgd_s']:.3f} s, DP-SGD {step['dp_sgd_s']:.3f} s, ratio x{step['ratio']:.2f}",
        flush=True,
    )
    rows: list[dict[str, Any]] = []
    if not args.skip_federation:
        print("private vs non-private federation (default settings, 5 rounds):", flush=True)
        work = Path(args.work_dir or tempfile.mkdtemp(prefix="fedcompress-bench-dp-"))
        rows = _federation_rows([float(e) for e in args.epsilons.split(",") if e], work)
    if args.json:
        for row in [step, *rows]:
            print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
