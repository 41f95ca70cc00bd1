"""Federation benchmark: codec cost per round beside plain FedAvg, and simulation scaling.

What each codec costs per round next to plain FedAvg in dense float32, and how the simulation scales
with the number of virtual clients. Every cell is a real ``fedcompress simulate`` run in its
own process group; peak memory is the largest summed RSS of that group, sampled from /proc.

``fedcompress bench federation [--codecs ...] [--scaling 10,100,1000] [--json]``
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from simulations.processes import group_rss_bytes, start_session

__all__ = ["main", "run_cell"]

_BASE = {"num-rounds": 3, "samples-per-client": 64, "test-samples": 64, "seed": 0}


def run_cell(settings: dict[str, Any], out_dir: Path, *, cpus_per_client: float = 1.0) -> dict[str, Any]:
    """Run one simulation in a child process group; return per-round seconds, bytes and peak memory."""
    args = [
        sys.executable,
        "-m",
        "simulations.cli",
        "simulate",
        "--out",
        str(out_dir),
        "--cpus-per-client",
        str(cpus_per_client),
    ]
    for key, value in settings.items():
        args += ["--set", f"{key}={str(value).lower() if isinstance(value, bool) else value}"]
    proc = start_session(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, group_rss_bytes(proc.pid))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.monotonic()
    output, _ = proc.communicate()
    done.set()
    sampler.join()
    wall = time.monotonic() - started
    if proc.returncode != 0:
        raise RuntimeError(f"cell {settings} failed:\n{output.decode(errors='replace')[-2000:]}")
    result = json.loads((out_dir / "result.json").read_text())
    rounds = result["rounds"]
    return {
        "settings": settings,
        "wall_seconds": wall,
        "seconds_per_round": sum(r["seconds"] for r in rounds) / len(rounds),
        "uplink_bytes_per_round": sum(r["uplink_bytes"] for r in rounds) / len(rounds),
        "dense_bytes_per_round": sum(r["dense_uplink_bytes"] for r in rounds) / len(rounds),
        "clients_per_round": sum(r["clients_ok"] for r in rounds) / len(rounds),
        "psnr": result["final"]["psnr"],
        "peak_rss_mb": peak / 1e6,
    }


def _codec_rows(codecs: Sequence[str], work: Path) -> list[dict[str, Any]]:
    rows = []
    for codec in codecs:
        row = run_cell({**_BASE, "codec": codec}, work / f"codec-{codec}")
        rows.append(row)
        print(
            f"  codec {codec:>10}: {row['seconds_per_round']:.2f} s/round, "
            f"{row['uplink_bytes_per_round']:.0f} B/round up, psnr {row['psnr']:.2f}",
            flush=True,
        )
    dense = next((r for r in rows if r["settings"]["codec"] == "none"), rows[0])
    for row in rows:
        row["ratio_vs_dense"] = dense["uplink_bytes_per_round"] / row["uplink_bytes_per_round"]
        row["time_vs_dense"] = row["seconds_per_round"] / dense["seconds_per_round"]
    return rows


def _scaling_rows(sizes: Sequence[int], work: Path) -> list[dict[str, Any]]:
    rows = []
    for n in sizes:
        fraction = max(0.01, min(0.1, 10 / n))  # 1%-10% of the clients train per round
        settings = {
            **_BASE,
            "num-rounds": 2,
            "num-clients": n,
            "fraction-train": fraction,
            "min-clients": 1,
            "samples-per-client": 32,
            "round-timeout": 1200,
        }
        row = run_cell(settings, work / f"scale-{n}")
        rows.append(row)
        print(
            f"  {n:>5} clients ({fraction:.0%} per round): {row['seconds_per_round']:.2f} s/round, "
            f"wall {row['wall_seconds']:.0f} s, peak {row['peak_rss_mb']:.0f} MB",
            flush=True,
        )
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    """Command line of the federation benchmark."""
    parser = argparse.ArgumentParser(prog="fedcompress bench federation", description=__doc__.splitlines()[0])
    parser.add_argument("--codecs", default="none,zstd,q8,balanced,aggressive")
    parser.add_argument("--scaling", default="10,100,1000", help="virtual client counts ('' to skip)")
    parser.add_argument("--json", action="store_true", help="print one JSON line per row")
    parser.add_argument("--work-dir", help="where the runs go (default: a temporary folder)")
    args = parser.parse_args(argv)
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="fedcompress-bench-"))
    print("per-round cost by codec (8 clients, 3 rounds):", flush=True)
    codec_rows = _codec_rows([c for c in args.codecs.split(",") if c], work)
    sizes = [int(s) for s in args.scaling.split(",") if s]
    print("scaling of the simulation engine:", flush=True)
    scaling_rows = _scaling_rows(sizes, work)
    if args.json:
        for row in codec_rows + scaling_rows:
            print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
