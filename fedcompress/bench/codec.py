"""Codec benchmark: payload size, ratio, error and single-thread throughput of each codec on a real update.

The update is what a client would send: the weight change of a U-Net denoiser (``build_model("unet")``,
width 24, about 246k parameters; ``--width 8``: about 28k) after a few SGD steps on synthetic phantoms.
PowerSGD's ``Q`` is warm-started as in a federation: a first update (the previous round) is encoded with a
state, its residual is dropped and its ``Q`` kept, then the measured update (the next steps) is encoded. Error
is the relative L2 error of that one message. Throughput is float32 input megabytes (1e6 bytes) per CPU second of this
single-threaded process, best of ``repeats`` (CPU time, so other load on a shared machine does not count),
beside two references measured in the same run: zstd alone on the float32 bytes, and a memory copy.

A spec may end in ``@compact``: the payload then uses compact framing (an 8-byte layout digest instead of the
tensor table, see :mod:`fedcompress.codec.layout`) and is decoded with the layout, as a server that knows its
model would.

``--feedback-rounds N`` measures something else: each codec with error feedback over N rounds of one client
(fresh batches each round), reporting how far the sum of decoded updates is from the sum of raw ones.

``fedcompress bench codec [--specs aggressive,ultra@compact,lowrank:4+q:8] [--repeats 3] [--width 24] [--json]
[--feedback-rounds N]``
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import zstandard

from fedcompress.codec import PRESETS, CodecState, SharedLayout, decode, encode, encode_with_stats, parse_spec
from fedcompress.data import client_data
from fedcompress.models import build_model
from fedcompress.seeding import derive_seed

__all__ = [
    "DEFAULT_SPECS",
    "client_sequence",
    "feedback_rows",
    "main",
    "realistic_updates",
    "run_codec_benchmark",
    "split_framing",
]

#: Every preset, then a few custom pipelines, then compact framing (``@compact``) of the smallest ones.
DEFAULT_SPECS: tuple[str, ...] = (
    *PRESETS,
    "q:4:block=256+zstd:3",
    "topk:0.02+q:4:block=256+zstd:3",
    "lowrank:2:power+topk:0.1+q:4:block=256+zstd:3",
    "lowrank:4:svd+q:8:block=256+zstd:3",
    "randk:0.1+q:8:range=0.005",
    "rotate:4096+q:4:block=256+zstd:3",
    "rotate:4096+sign:scale=mse",
    "rotate:4096+sign:scale=unbiased",
    "rotate:4096+randk:0.08+sign:scale=mse",
    "aggressive@compact",
    "ultra@compact",
    "rotate:4096+randk:0.08+sign:scale=mse@compact",
)
FRAMINGS = {"": "self-describing", "compact": "compact"}

_MB = 1e6


def split_framing(spec: str) -> tuple[str, str]:
    """``"ultra@compact"`` -> ``("ultra", "compact")``; no suffix: self-describing."""
    codec, _, suffix = spec.partition("@")
    if suffix not in FRAMINGS:
        raise ValueError(f"benchmark spec {spec!r}: the suffix after '@' must be 'compact' (or none), got {suffix!r}")
    return codec, FRAMINGS[suffix]


def realistic_updates(*, width: int = 24, image_size: int = 32, steps: int = 8, seed: int = 0) -> list[dict]:
    """Two consecutive weight changes (rounds) of a U-Net trained with SGD on phantoms, as float32 arrays."""
    torch.manual_seed(derive_seed(seed, "bench-codec-model"))
    model = build_model("unet", width=width, in_channels=1)
    data = client_data(0, 4, samples_per_client=8 * steps, image_size=image_size, non_iid=0.5, seed=seed)
    noisy, clean = torch.from_numpy(data.noisy.copy()), torch.from_numpy(data.clean.copy())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    updates = []
    for _ in range(2):
        before = {k: v.detach().clone() for k, v in model.state_dict().items()}
        for step in range(steps):
            batch = slice(8 * step, 8 * step + 8)
            optimizer.zero_grad()
            torch.nn.functional.mse_loss(model(noisy[batch]), clean[batch]).backward()
            optimizer.step()
        updates.append({k: (v.detach() - before[k]).numpy().astype(np.float32) for k, v in model.state_dict().items()})
    return updates


def client_sequence(*, width: int, rounds: int, steps: int = 4, seed: int = 0) -> list[dict]:
    """``rounds`` consecutive weight changes of one client's U-Net, each from ``steps`` fresh SGD batches of 8."""
    torch.manual_seed(derive_seed(seed, "bench-codec-model"))
    model = build_model("unet", width=width, in_channels=1)
    data = client_data(0, 4, samples_per_client=8 * steps * rounds, image_size=32, non_iid=0.5, seed=seed)
    noisy, clean = torch.from_numpy(data.noisy.copy()), torch.from_numpy(data.clean.copy())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    updates = []
    for round_ in range(rounds):
        before = {k: v.detach().clone() for k, v in model.state_dict().items()}
        for step in range(round_ * steps, (round_ + 1) * steps):
            optimizer.zero_grad()
            batch = slice(8 * step, 8 * step + 8)
            torch.nn.functional.mse_loss(model(noisy[batch]), clean[batch]).backward()
            optimizer.step()
        updates.append({k: (v.detach() - before[k]).numpy().astype(np.float32) for k, v in model.state_dict().items()})
    return updates


def feedback_rows(specs: Sequence[str], updates: Sequence[dict]) -> list[dict[str, Any]]:
    """Each codec with error feedback over one client's sequence of updates, as a federation would run it.

    ``sum_rel_error`` is ``||sum(decoded) - sum(raw)|| / ||sum(raw)||`` after the last round: what the server's
    running model is missing from this client, the residual error feedback still holds.
    """
    rows = []
    dense_bytes = 4 * sum(v.size for v in updates[0].values())
    for row_spec in specs:
        spec, framing = split_framing(row_spec)
        layout, state, sizes = SharedLayout.of(updates[0], spec), CodecState(), []
        raw = sent = np.zeros(dense_bytes // 4)
        for round_, update in enumerate(updates):
            payload = encode(update, spec, state, seed=round_, framing=framing)
            sizes.append(len(payload))
            raw = raw + _flat64(update)
            sent = sent + _flat64(decode(payload, layout=layout))
        error = float(np.linalg.norm(raw - sent) / np.linalg.norm(raw))
        rows.append({"spec": row_spec, "rounds": len(updates), "mean_payload_bytes": float(np.mean(sizes)),
                     "ratio": dense_bytes / float(np.mean(sizes)), "sum_rel_error": error})  # fmt: skip
    return rows


def _flat64(update: dict) -> np.ndarray:
    return np.concatenate([np.asarray(v, dtype=np.float64).ravel() for v in update.values()])


def _best_seconds(action: Callable[[], Any], repeats: int) -> float:
    """Fastest of ``repeats`` calls, in CPU seconds of this process (other load does not count)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        action()
        best = min(best, time.process_time() - start)
    return max(best, 1e-9)


def _warm_state(spec: str, previous: dict, seed: int) -> dict[str, np.ndarray]:
    """State after encoding last round's update, with the residual dropped and PowerSGD's ``Q`` kept."""
    state = CodecState()
    encode(previous, spec, state, seed=seed)
    return {k: v for k, v in state.state_dict().items() if not k.startswith("residual/")}


def _codec_row(row_spec: str, updates: list[dict], repeats: int, dense_bytes: int) -> dict[str, Any]:
    previous, update = updates
    spec, framing = split_framing(row_spec)
    layout = SharedLayout.of(update, spec) if framing == "compact" else None
    warm = _warm_state(spec, previous, seed=1)
    payload, stats = encode_with_stats(update, spec, CodecState.from_state_dict(warm), seed=2, framing=framing)
    states = [CodecState.from_state_dict(warm) for _ in range(repeats)]
    encode_s = _best_seconds(lambda: encode(update, spec, states.pop(), seed=2, framing=framing), repeats)
    decode_s = _best_seconds(lambda: decode(payload, layout=layout), repeats)
    return {
        "spec": row_spec,
        "canonical": parse_spec(spec).canonical(),
        "framing": framing,
        "payload_bytes": len(payload),
        "ratio": dense_bytes / len(payload),
        "rel_l2_error": stats.rel_l2_error,
        "encode_mb_s": dense_bytes / _MB / encode_s,
        "decode_mb_s": dense_bytes / _MB / decode_s,
        "stages": stats.stages,
    }


def _reference_rows(update: dict, repeats: int, dense_bytes: int) -> list[dict[str, Any]]:
    raw = b"".join(v.astype("<f4").tobytes() for v in update.values())
    frame = zstandard.ZstdCompressor(level=3).compress(raw)
    compress_s = _best_seconds(lambda: zstandard.ZstdCompressor(level=3).compress(raw), repeats)
    decompress_s = _best_seconds(lambda: zstandard.ZstdDecompressor().decompress(frame), repeats)
    copy_s = _best_seconds(lambda: bytes(bytearray(raw)), repeats)
    common = {"rel_l2_error": 0.0, "stages": {}}
    return [
        {
            "spec": "ref:zstd-3-raw-f32",
            "canonical": "",
            "framing": "",
            "payload_bytes": len(frame),
            "ratio": dense_bytes / len(frame),
            "encode_mb_s": dense_bytes / _MB / compress_s,
            "decode_mb_s": dense_bytes / _MB / decompress_s,
            **common,
        },
        {
            "spec": "ref:memcpy",
            "canonical": "",
            "framing": "",
            "payload_bytes": len(raw),
            "ratio": 1.0,
            "encode_mb_s": dense_bytes / _MB / copy_s,
            "decode_mb_s": dense_bytes / _MB / copy_s,
            **common,
        },
    ]


def run_codec_benchmark(
    specs: list[str] | None = None, *, repeats: int = 3, json_lines: bool = False, width: int = 24
) -> list[dict[str, Any]]:
    """Measure every spec (default: :data:`DEFAULT_SPECS`) and the references; print a table or JSON lines.

    Returns one dict per row: spec, canonical, framing, payload_bytes, ratio (vs dense float32), rel_l2_error,
    encode_mb_s, decode_mb_s, stages (per-stage measurements), and the update's size in every row. ``width``
    sizes the U-Net (24: about 246k parameters, 8: about 28k).
    """
    if not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be a positive integer, got {repeats!r}")
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise ValueError(f"width must be a positive integer, got {width!r}")
    specs = list(DEFAULT_SPECS if specs is None else specs)
    for spec in specs:
        parse_spec(split_framing(spec)[0])  # fail on a bad spec before spending time on training
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        updates = realistic_updates(width=width)
        dense_bytes = 4 * sum(v.size for v in updates[1].values())
        rows = [_codec_row(spec, updates, repeats, dense_bytes) for spec in specs]
        rows += _reference_rows(updates[1], repeats, dense_bytes)
    finally:
        torch.set_num_threads(threads)
    params = dense_bytes // 4
    for row in rows:
        row.update({"parameters": params, "dense_bytes": dense_bytes, "tensors": len(updates[1])})
    if json_lines:
        for row in rows:
            print(json.dumps(row), flush=True)
    else:
        print(format_table(rows))
    return rows


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """A plain-text table of the benchmark rows."""
    width = max(len(str(row["spec"])) for row in rows) + 1
    head = f"{'codec':<{width}} {'bytes':>9} {'ratio':>8} {'rel L2 err':>10} {'enc MB/s':>9} {'dec MB/s':>9}"
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    lines = [
        f"update: {rows[0]['parameters']} float32 values in {rows[0]['tensors']} tensors "
        f"({rows[0]['dense_bytes']} bytes dense); one thread, MB/s per CPU second; load average {load}",
        head,
        "-" * len(head),
    ]
    for row in rows:
        lines.append(
            f"{row['spec']:<{width}} {row['payload_bytes']:>9} {row['ratio']:>8.1f} "
            f"{row['rel_l2_error']:>10.4f} {row['encode_mb_s']:>9.0f} {row['decode_mb_s']:>9.0f}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``[--specs a,b,...] [--repeats N] [--json]``."""
    parser = argparse.ArgumentParser(prog="fedcompress bench codec", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--specs", default=None, help="comma-separated specs or presets, '@compact' for compact framing (default: all)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed repetitions, best is kept (default 3)")
    parser.add_argument("--width", type=int, default=24, help="U-Net width (24: 246k parameters, 8: 28k)")
    parser.add_argument("--json", action="store_true", help="one JSON object per line instead of a table")
    parser.add_argument(
        "--feedback-rounds", type=int, default=0, help="instead: error feedback over N rounds of one client (sums)"
    )
    args = parser.parse_args(argv)
    specs = [s.strip() for s in args.specs.split(",") if s.strip()] if args.specs else None
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if args.feedback_rounds > 0:
        torch.set_num_threads(1)
        updates = client_sequence(width=args.width, rounds=args.feedback_rounds)
        for row in feedback_rows(specs or list(DEFAULT_SPECS), updates):
            print(json.dumps(row) if args.json else
                  f"{row['spec']:<50} {row['mean_payload_bytes']:>9.0f} {row['ratio']:>7.0f}x  "
                  f"sum error after {row['rounds']} rounds {row['sum_rel_error']:.3f}")  # fmt: skip
        return 0
    run_codec_benchmark(specs, repeats=args.repeats, json_lines=args.json, width=args.width)
    return 0
