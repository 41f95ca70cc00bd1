"""What each setting means, and the resolved settings as a commented TOML file (``fedcompress settings``).

The file this writes is accepted back by ``--config``: every key of :class:`~fedcompress.config.RunConfig`
with its value, preceded by a comment giving its type, default, allowed values or range, and one line of meaning.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping

from fedcompress.config import _CHOICES, _RANGES, RunConfig, toml_value

__all__ = ["DOCS", "closest_setting", "settings_document"]

#: One line of meaning per setting (kebab-case key).
DOCS: Mapping[str, str] = {
    "num-rounds": "federated rounds to run",
    "num-clients": "sites (partitions); a simulation starts this many virtual SuperNodes",
    "fraction-train": "fraction of clients per round (fixed) or inclusion probability (poisson)",
    "client-sampling": "how clients are chosen each round; central DP needs poisson",
    "min-clients": "fewest usable updates for a round to count (fewer: the round is skipped)",
    "local-epochs": "passes over the local shard per round",
    "batch-size": "local batch size (DP-SGD: expected batch of the Poisson sampler)",
    "lr": "client SGD learning rate",
    "momentum": "client SGD momentum",
    "server-lr": "server learning rate applied to the aggregated update (1 = FedAvg)",
    "server-momentum": "server momentum (FedAvgM); 0 = none (adam: beta1, 0 means 0.9)",
    "server-optimizer": "sgd (FedAvg, FedAvgM) or adam (FedAdam: use server-lr 0.01-0.1)",
    "codec": (
        "uplink codec: a preset (none, zstd, q8, balanced, aggressive, powersgd, ultra, private) or a spec "
        "(topk:0.01+q:4)"
    ),
    "downlink-codec": "codec for the global model sent to clients",
    "codec-framing": "compact: an 8-byte digest of the shared model layout replaces the tensor table (both ways)",
    "error-feedback": (
        "residual: carry what the codec dropped into the next round (EF14); ef21: send only the change of a "
        "per-client estimate both sides keep (EF21); off"
    ),
    "seed": "public run seed: init, data, partitions, codec masks (never DP noise)",
    "dataset": "'phantoms' (built in), or a MedMNIST .npz file or image folder path",
    "image-size": "images are resized to this square size",
    "samples-per-client": "records per site; also the public N of the DP-SGD schedule",
    "test-samples": "held-out images the server evaluates on",
    "proxy-samples": "server-side public images for distillation",
    "non-iid": "0 = sites alike, 1 = each site its own scanner (noise, contrast, phantom mix)",
    "model": "denoiser family",
    "width": "model width (channels of the first block)",
    "device": "auto (CUDA when this process sees it), cpu or cuda; simulation clients need --gpus-per-client",
    "dp": "none, sample (DP-SGD per record) or client (whole update per site)",
    "dp-noise": "client-level DP: local (clients noise; untrusted server) or central (trusted server noises)",
    "pre-noise": "client-level local DP: data-independent stages before the noise (randk:F, q:B:range=R)",
    "dp-keep": "private runs: fraction of coordinates trained, noised and sent per round (a public mask; 1 = all)",
    "target-epsilon": "calibrate the noise to spend this over num-rounds (0: use noise-multiplier)",
    "noise-multiplier": "DP noise std over the clip norm (0: calibrate from target-epsilon)",
    "clip-norm": "DP clip norm C (per sample, or per client update)",
    "delta": "DP delta; must be below 1/n",
    "accountant": "privacy accountant (prv or rdp)",
    "max-epsilon": "stop before a round that would pass this epsilon (0: no budget)",
    "dp-randomness": "secret (OS entropy, default) or seeded (simulation studies only: no guarantee)",
    "release": "what clients send besides the payload: auto (minimal when private), all, minimal",
    "aggregation": "mean, trimmed-mean, median or norm-clip (central DP: mean only)",
    "trim-fraction": "trimmed-mean: fraction cut at each end per coordinate",
    "guard": "update norm guard: reject or clip updates past the bound, or off",
    "guard-norm": "absolute update-norm bound (0: guard-median-factor x the round's median norm)",
    "guard-median-factor": "the relative bound's factor",
    "attack": "research knob: scale:S, sign-flip, noise:SIGMA or lie-weight ('' = none)",
    "attack-clients": "how many sites (chosen by the seed) attack",
    "round-timeout": "seconds to wait for a round's replies (and, in a deployment, for SuperNodes)",
    "distill": "build the edge model at the end of the run",
    "student-width": "width of an edge student of the run's family (distill's default plain student: 12)",
    "out-dir": "run folder ('' = a fresh one under ./runs)",
    "resume": "continue the run in out-dir from its checkpoint",
}


def _allowed(name: str) -> str:
    if name in _CHOICES:
        return "one of " + ", ".join(_CHOICES[name])
    if name in _RANGES:
        low, high, inclusive = _RANGES[name]
        return f"{'[' if inclusive else '('}{low:g}, {high:g}]"
    return "any"


def settings_document(cfg: RunConfig) -> str:
    """``cfg`` as a commented TOML document that ``--config`` reads back."""
    defaults = RunConfig()
    lines = ["# fedcompress settings (fedcompress settings); pass back with --config FILE", ""]
    for field in dataclasses.fields(RunConfig):
        key = field.name.replace("_", "-")
        default = toml_value(getattr(defaults, field.name))
        lines.append(f"# {DOCS[key]}")
        lines.append(f"# {field.type}, default {default}, allowed {_allowed(field.name)}")
        lines.append(f"{key} = {toml_value(getattr(cfg, field.name))}")
    return "\n".join(lines) + "\n"


def closest_setting(key: str) -> str | None:
    """The known setting closest to a misspelt ``key``, or None."""
    matches = difflib.get_close_matches(key.replace("_", "-"), RunConfig.keys(), n=1, cutoff=0.6)
    return matches[0] if matches else None
