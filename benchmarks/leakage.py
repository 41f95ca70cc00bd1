"""Leakage benchmark (thin script): cost and PSNR of one gradient-inversion attack per (batch, local steps).

``python benchmarks/leakage.py [--targets 1x1,4x1,8x1,1x4] [--iterations 300] [--restarts 4] [--json]
[--condition none|dp|informed|informed-seeded] [--epsilon 8]``

The update attacked is the one the REAL client round sends (``run_client_round`` through
``fedcompress.audit.observe_update``), for the default model and client of ``fedcompress audit``. ``--condition``:
no defence (default); sample-level DP at ``--epsilon``; the informed server, which subtracts DP noise it
regenerated from public values, against the deployed client (secret noise) or against a client that used seeded
noise (the negative control). One torch thread, so figures are per core.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import torch  # noqa: E402

from fedcompress.audit.client import observe_update  # noqa: E402
from fedcompress.audit.conditions import Condition, attacked_model  # noqa: E402
from fedcompress.audit.informed import regenerated_noise, subtract  # noqa: E402
from fedcompress.audit.inversion import invert_update  # noqa: E402
from fedcompress.audit.scoring import score_reconstruction  # noqa: E402
from fedcompress.audit.settings import AuditConfig  # noqa: E402
from fedcompress.data import client_data, site_profiles  # noqa: E402

CONDITIONS = ("none", "dp", "informed", "informed-seeded")


def _condition(name: str, epsilon: float) -> Condition:
    if name == "none":
        return Condition()
    seeded = "seeded" if name == "informed-seeded" else "secret"
    return Condition(epsilon=epsilon, randomness=seeded, informed=name.startswith("informed"))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--targets", default="1x1,4x1,8x1,1x4", help="BxS pairs: batch size x local steps")
    parser.add_argument("--iterations", type=int, default=AuditConfig.iterations)
    parser.add_argument("--restarts", type=int, default=AuditConfig.restarts)
    parser.add_argument("--condition", choices=CONDITIONS, default="none")
    parser.add_argument("--epsilon", type=float, default=8.0, help="target epsilon of the DP conditions")
    parser.add_argument("--json", action="store_true", help="print one JSON object per target")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    cfg = AuditConfig(iterations=args.iterations, restarts=args.restarts)
    model = attacked_model(cfg)
    noise_std = site_profiles(cfg.num_partitions, cfg.non_iid, cfg.seed)[cfg.partition_id].noise_std
    attack = cfg.inversion_config()
    condition = _condition(args.condition, args.epsilon)
    for item in args.targets.split(","):
        batch, steps = (int(v) for v in item.lower().split("x"))
        data = client_data(
            cfg.partition_id,
            cfg.num_partitions,
            samples_per_client=batch,
            image_size=cfg.image_size,
            non_iid=cfg.non_iid,
            seed=cfg.seed,
        )
        observed = observe_update(cfg, model, data, condition, local_steps=steps)
        update = observed.update
        if condition.informed:
            update = subtract(update, regenerated_noise(cfg, model, condition, batch_size=batch, local_steps=steps))
        wall, cpu = time.perf_counter(), time.process_time()
        rec = invert_update(
            model,
            update,
            batch_size=batch,
            local_steps=steps,
            lr=cfg.lr,
            momentum=cfg.momentum,
            noise_std=noise_std,
            image_shape=data.image_shape,
            config=attack,
        )
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        row = {
            "condition": condition.name,
            "batch_size": batch,
            "local_steps": steps,
            **score_reconstruction(rec.clean, data.clean).summary(),
            "epsilon": None if observed.privacy is None else observed.privacy["epsilon"],
            "wall_s": wall,
            "cpu_s": cpu,
            "ms_per_restart_iteration": 1000 * cpu / (args.iterations * args.restarts),
        }
        print(
            json.dumps(row)
            if args.json
            else f"{condition.name} B={batch} S={steps}: PSNR {row['psnr_mean']:.2f} dB (max {row['psnr_max']:.2f}), "
            f"{wall:.0f} s wall, {cpu:.0f} s CPU, {row['ms_per_restart_iteration']:.0f} ms per restart-iteration"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
