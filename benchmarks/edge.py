"""Edge-model benchmark: distill a teacher into the compact student and print the edge table.

    python benchmarks/edge.py --out runs/edge-bench                 # stand-in teacher, trained here
    python benchmarks/edge.py --out runs/edge-bench --run RUN_DIR   # the global model of a real run

Without ``--run`` a stand-in teacher (the default config's U-Net, width 16) is trained centrally on the pooled
phantom shards of every site (``--samples-per-client`` each, Adam, ``--teacher-epochs``) and written as a
run folder (``result.json`` + ``model.pt``) under OUT/teacher-run; a second call reuses it. The edge model is
then built by ``fedcompress.distill.distill_run`` exactly as ``fedcompress distill`` builds it.
Run it on an otherwise idle machine: latency is measured on one thread, interleaved, but CPU contention still
shows in every row.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from fedcompress.config import RunConfig
from fedcompress.data import DenoisingSet, client_data, test_data
from fedcompress.distill.pipeline import distill_run
from fedcompress.distill.report import format_edge_table
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--run", help="an existing run folder to use as the teacher")
    parser.add_argument("--epochs", type=int, default=None, help="distillation epochs (default: the library's)")
    parser.add_argument("--teacher-epochs", type=int, default=4)
    parser.add_argument("--samples-per-client", type=int, default=256)
    parser.add_argument("--latency-repeats", type=int, default=300)
    args = parser.parse_args(argv)
    out = Path(args.out)
    run_dir = Path(args.run) if args.run else out / "teacher-run"
    if not args.run and not (run_dir / "result.json").exists():
        run_dir.mkdir(parents=True, exist_ok=True)
        train_stand_in(run_dir, args.samples_per_client, args.teacher_epochs)
    started = time.monotonic()
    report = distill_run(run_dir, out / "edge", epochs=args.epochs, latency_repeats=args.latency_repeats)
    print(format_edge_table(report))
    print(
        json.dumps(
            {
                "seconds": report["seconds"],
                "distill": {
                    k: report["distill"][k]
                    for k in (
                        "epochs",
                        "steps",
                        "mse_to_teacher_before",
                        "mse_to_teacher_after",
                        "seconds",
                        "cpu_seconds",
                    )
                },
                "exports": report["exports"],
                "wall_seconds": time.monotonic() - started,
            },
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
