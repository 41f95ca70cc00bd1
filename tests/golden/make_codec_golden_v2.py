"""Write the codec's golden payloads of format version 2. Run ONLY when introducing a new format version.

    python tests/golden/make_codec_golden_v2.py

Version 2 added the compact framing (an 8-byte layout digest instead of the tensor table) and the stages
``rotate`` and ``sign``. Each payload is committed with the arrays it must decode to (``.npz``) and a manifest
(``codec_v2.json``, with the framing and, for compact payloads, the layout digest); tests/test_codec_golden.py
decodes them in every run. The update is version 1's (``golden_update`` in make_codec_golden.py).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np

from fedcompress.codec import SharedLayout, decode, encode, parse_spec
from fedcompress.codec.wire import FORMAT_VERSION

HERE = Path(__file__).resolve().parent
CASES = {  # name: (spec, framing)
    "none": ("none", "self-describing"),
    "rotate_q4": ("rotate:16+q:4:block=8+zstd:3", "self-describing"),
    "rotate_sign": ("rotate:32+sign:scale=mse", "self-describing"),
    "rotate_randk_sign_unbiased": ("rotate:8+randk:0.5+sign:scale=unbiased", "self-describing"),
    "ultra": ("ultra", "self-describing"),
    "compact_none": ("none", "compact"),
    "compact_ultra": ("ultra", "compact"),
    "compact_lowrank_rotate_topk_q8": ("lowrank:2:svd+rotate:16+topk:0.5+q:8:block=256+zstd:3", "compact"),
    "compact_rotate_randk_sign": ("rotate:64+randk:0.25+sign:scale=mse", "compact"),
}


def golden_update() -> dict[str, np.ndarray]:
    """Version 1's golden update: a conv kernel, a matrix, a bias, a scalar and an empty tensor."""
    spec = importlib.util.spec_from_file_location("make_codec_golden", HERE / "make_codec_golden.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.golden_update()


def main() -> None:
    if FORMAT_VERSION != 2:
        raise SystemExit(f"the encoder writes format version {FORMAT_VERSION}; the version 2 payloads stay as they are")
    update, manifest = golden_update(), []
    for name, (spec, framing) in CASES.items():
        payload = encode(update, spec, seed=7, framing=framing)
        layout = SharedLayout.of(update, spec)
        (HERE / f"codec_v2_{name}.bin").write_bytes(payload)
        np.savez(HERE / f"codec_v2_{name}.npz", **decode(payload, layout=layout))
        entry = {"name": name, "spec": parse_spec(spec).canonical(), "framing": framing, "bytes": len(payload)}
        if framing == "compact":
            entry["digest"] = layout.digest.hex()
        manifest.append(entry)
    (HERE / "codec_v2.json").write_text(json.dumps({"format_version": 2, "payloads": manifest}, indent=2) + "\n")


if __name__ == "__main__":
    main()
