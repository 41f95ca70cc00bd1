"""Explicit randomness: every generator is seeded from a tuple such as (run seed, round, client id).

Never the global RNG, so runs, resumes and tests are reproducible and clients never share a stream by accident.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = ["derive_seed", "numpy_rng", "torch_generator"]


def derive_seed(*parts: int | str) -> int:
    """A 63-bit seed from any tuple of ints and strings (stable across processes and platforms)."""
    text = "/".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") >> 1


def numpy_rng(*parts: int | str) -> np.random.Generator:
    """A numpy generator seeded from ``parts``."""
    return np.random.default_rng(derive_seed(*parts))


def torch_generator(*parts: int | str) -> torch.Generator:
    """A CPU torch generator seeded from ``parts`` (torch is imported here, so decoding-only code avoids it)."""
    import torch

    generator = torch.Generator()
    generator.manual_seed(derive_seed(*parts))
    return generator
