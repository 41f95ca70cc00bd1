"""Write the codec's golden payloads (format version 1). Run ONLY when introducing a new format version.

    python tests/golden/make_codec_golden.py

Each payload is committed with the arrays it must decode to (``.npz``) and a manifest (``codec_v1.json``);
tests/test_codec_golden.py decodes them in every run, so an incompatible change to the format cannot slip in.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from fedcompress.codec import decode, encode, parse_spec

HERE = Path(__file__).resolve().parent
CASES = {
    "none": "none",
    "zstd": "zstd:3",
    "q4": "q:4:block=64+zstd:3",
    "lowrank_topk_q8": "lowrank:2:svd+topk:0.25+q:8:block=256+zstd:3",
    "powersgd_q16": "lowrank:2:power+q:16:block=32",
    "randk_range": "randk:0.5+q:3:range=1",
}


def golden_update() -> dict[str, np.ndarray]:
    """A small, fixed update with a conv kernel, a matrix, a bias, a scalar and an empty tensor."""
    rng = np.random.default_rng(20240601)
    return {
        "conv.weight": (rng.standard_normal((6, 2, 3, 3)) * 0.1).astype(np.float32),
        "fc.weight": (rng.standard_normal((5, 12)) * 0.2).astype(np.float32),
        "fc.bias": rng.standard_normal(5).astype(np.float32),
        "scale": np.array(0.75, dtype=np.float32),
        "empty": np.zeros((0, 3), dtype=np.float32),
    }


def main() -> None:
    from fedcompress.codec.wire import FORMAT_VERSION

    if FORMAT_VERSION != 1:  # the encoder writes a newer version: these files are frozen, see make_codec_golden_v2.py
        raise SystemExit(f"the encoder writes format version {FORMAT_VERSION}; the version 1 payloads stay as they are")
    manifest = []
    for name, spec in CASES.items():
        payload = encode(golden_update(), spec, seed=7)
        (HERE / f"codec_v1_{name}.bin").write_bytes(payload)
        np.savez(HERE / f"codec_v1_{name}.npz", **decode(payload))
        manifest.append({"name": name, "spec": parse_spec(spec).canonical(), "bytes": len(payload)})
    (HERE / "codec_v1.json").write_text(json.dumps({"format_version": 1, "payloads": manifest}, indent=2) + "\n")


if __name__ == "__main__":
    main()
