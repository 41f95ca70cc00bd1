"""A research sweep written in Python: no CLI, no TOML. Copy it and change the loop.

    python -m simulations.example_sweep --out runs/example                 # 3 codecs x 2 privacy settings
    python -m simulations.example_sweep --out runs/example --codecs ultra --rounds 1 --quick

It runs one federation per setting with :func:`simulations.simulate` (each returns the parsed
``result.json``: ``rounds``, ``final``, ``privacy``), turns every result into a store record
(:func:`simulations.build_record`), summarises them like a sweep (:func:`simulations.summarize`) and draws
PSNR against uplink bytes with the report's own plot (:func:`simulations.plot_psnr_vs_uplink`).
Runs go to ``OUT/<label>/``; the plot to ``OUT/psnr_vs_uplink.png``. Runs in one process, one after another:
for hundreds of cells use ``fedcompress sweep`` (resumable, one process per cell).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fedcompress.config import RunConfig
from simulations import build_record, cell_id, plot_psnr_vs_uplink, simulate, summarize

__all__ = ["main", "run_example"]


def run_example(out: Path, settings: Sequence[dict[str, Any]], base: dict[str, Any]) -> list[dict[str, Any]]:
    """Run every entry of ``settings`` (over ``base``), plot PSNR vs uplink; return the summaries."""
    records = []
    for changes in settings:
        label = " ".join(f"{key}={value}" for key, value in changes.items())
        cfg = RunConfig.from_mapping({**base, **changes, "out-dir": str(out / label.replace(" ", "_"))})
        started = time.monotonic()
        result = simulate(cfg)
        cell = {"id": cell_id("simulate", cfg.to_dict()), "runner": "simulate", "label": label, "config": cfg}
        records.append(build_record(cell, result, wall_seconds=time.monotonic() - started))
        final = result["final"]
        print(f"{label}: psnr {final['psnr']:.2f} dB, uplink {final['uplink_bytes']} B", flush=True)
    series = summarize(records)
    plot_psnr_vs_uplink(series, out / "psnr_vs_uplink.png")
    return series


def main(argv: Sequence[str] | None = None) -> int:
    """Command line of the example."""
    parser = argparse.ArgumentParser(prog="python -m simulations.example_sweep", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--codecs", default="none,balanced,ultra")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--quick", action="store_true", help="2 sites x 16 images, width 4 (a smoke run)")
    args = parser.parse_args(argv)
    base: dict[str, Any] = {"num-rounds": args.rounds, "num-clients": 4, "samples-per-client": 64}
    if args.quick:
        base |= {"num-clients": 2, "samples-per-client": 16, "test-samples": 16, "width": 4}
    privacy: list[dict[str, Any]] = [{"dp": "none"}, {"dp": "sample", "target-epsilon": 8.0}]
    if args.quick:
        privacy = privacy[:1]
    grid = [{"codec": codec, **p} for codec in args.codecs.split(",") for p in privacy]
    series = run_example(args.out, grid, base)
    for s in series:
        print(f"{s['label']}: {s['psnr']:.2f} dB, {s['uplink']} B uplink, epsilon {s['epsilon']}")
    print(f"plot: {args.out / 'psnr_vs_uplink.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
