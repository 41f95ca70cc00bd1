"""Edge-model benchmark: distill a teacher into the compact student and print the edge table.

    python benchmarks/edge.py --out runs/edge-bench                 # stand-in teacher, trained here
    python benchmarks/edge.py --out runs/edge-bench --run RUN_DIR   # the global model of a real run
    python benchmarks/edge.py --out runs/edge-bench --set epochs=50 # any distill setting, as `fedcompress distill`

Without ``--run`` a stand-in teacher (the default config's U-Net, width 16) is trained centrally on the pooled
phantom shards of every site (``--samples-per-client`` each, Adam, ``--teacher-epochs``) and written as a
run folder (``result.json`` + ``model.pt``) under OUT/teacher-run; a second call reuses it. The edge model is
then built by ``fedcompress.distill.distill_run`` exactly as ``fedcompress distill`` builds it, into OUT/edge.
Afterwards every ``.onnx`` file is also timed at ``--large-size`` pixels a side (batch 1, one thread,
interleaved, fewer runs): the exports take any image size, and the ratio of compute to per-op overhead grows
with it. The machine's load average is printed before and after: latency is measured on one thread,
interleaved, but CPU contention still shows in every row. Everything printed is also written to OUT/bench.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import torch

from fedcompress.config import RunConfig
from fedcompress.data import DenoisingSet, client_data, test_data
from fedcompress.distill.export import OnnxModule
from fedcompress.distill.latency import measure_latency
from fedcompress.distill.pipeline import distill_run
from fedcompress.distill.progress import LOGGER_NAME
from fedcompress.distill.report import format_edge_table
from fedcompress.distill.settings import DistillSettings
from fedcompress.federation.weights import save_arrays
from fedcompress.files import atomic_write_json
from fedcompress.models import build_model
from fedcompress.training import evaluate, make_loader, train_epochs


def train_stand_in(run_dir: Path, samples_per_client: int, epochs: int) -> None:
    """Train the stand-in teacher on all sites' pooled shards and write it as a run folder."""
    cfg = RunConfig()
    shards = [
        client_data(
            i,
            cfg.num_clients,
            samples_per_client=samples_per_client,
            image_size=cfg.image_size,
            non_iid=cfg.non_iid,
            seed=cfg.seed,
        )
        for i in range(cfg.num_clients)
    ]
    pooled = DenoisingSet(
        noisy=np.concatenate([s.noisy for s in shards]), clean=np.concatenate([s.clean for s in shards])
    )
    test = test_data(
        cfg.test_samples, image_size=cfg.image_size, seed=cfg.seed, num_partitions=cfg.num_clients, non_iid=cfg.non_iid
    )
    torch.manual_seed(0)
    model = build_model(cfg.model, cfg.width)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    loader = make_loader(pooled, 32, torch.Generator().manual_seed(0))
    for epoch in range(epochs):
        train_epochs(model, loader, optimizer, 1)
        print(f"teacher epoch {epoch + 1}/{epochs}: {evaluate(model, test)}", flush=True)
    save_arrays(run_dir / "model.pt", {k: v.detach().numpy() for k, v in model.state_dict().items()})
    scores = evaluate(model, test)
    atomic_write_json(
        run_dir / "result.json",
        {
            "status": "completed",
            "config": cfg.to_dict(),
            "weights": "model.pt",
            "final": {"psnr": scores["psnr"], "ssim": scores["ssim"], "epsilon": None},
            "message": f"stand-in teacher trained centrally by benchmarks/edge.py on {len(pooled)} pooled images, "
            f"{epochs} epochs (not a federation)",
        },
    )


def time_large(edge_dir: Path, rows: list[dict], size: int, repeats: int) -> dict[str, dict[str, float]]:
    """Batch-1 latency of every row's ``.onnx`` file on a ``size`` x ``size`` image, interleaved."""
    example = np.random.default_rng(0).random((1, 1, size, size), dtype=np.float32)
    sessions = {row["name"]: OnnxModule(edge_dir / row["runnable_file"]).run for row in rows if row["runnable_file"]}
    stats = measure_latency(sessions, example, repeats=repeats, warmup=3)
    teacher = stats["teacher"]["median_ms"]
    return {name: {"median_ms": s["median_ms"], "speedup": teacher / s["median_ms"]} for name, s in stats.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--run", help="an existing run folder to use as the teacher")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", help="a distill setting (repeatable)")
    parser.add_argument("--teacher-epochs", type=int, default=4)
    parser.add_argument("--samples-per-client", type=int, default=256)
    parser.add_argument("--large-size", type=int, default=128, help="side of the extra latency input; 0: skip")
    parser.add_argument("--large-repeats", type=int, default=40)
    parser.add_argument("--threads", type=int, default=1, help="torch threads for training (default 1)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)  # on a small shared machine, spinning OpenMP threads cost more than they give
    settings = DistillSettings.from_overrides(args.set)
    logging.basicConfig(format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger(LOGGER_NAME).setLevel(logging.INFO)  # progress lines: epochs, loss, ETA, stage times
    out = Path(args.out)
    run_dir = Path(args.run) if args.run else out / "teacher-run"
    if not args.run and not (run_dir / "result.json").exists():
        run_dir.mkdir(parents=True, exist_ok=True)
        train_stand_in(run_dir, args.samples_per_client, args.teacher_epochs)
    load_before = os.getloadavg()
    started = time.monotonic()
    report = distill_run(run_dir, out / "edge", settings=settings)
    wall = time.monotonic() - started
    large = time_large(out / "edge", report["rows"], args.large_size, args.large_repeats) if args.large_size else {}
    summary = {
        "settings": report["settings"],
        "seconds": report["seconds"],
        "wall_seconds": wall,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "cpus": os.cpu_count(),
        "torch_threads": args.threads,
        "distill": {k: report["distill"][k] for k in ("epochs", "steps", "mse_to_teacher_after", "cpu_seconds")},
        "quantize": {k: report["quantize"][k] for k in ("path", "calibration_method", "candidates")},
        "exports": report["exports"],
        "verdict": report["verdict"],
        f"latency_{args.large_size}px": large,
    }
    print(format_edge_table(report))
    print(json.dumps(summary, indent=1))
    atomic_write_json(out / "bench.json", summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
