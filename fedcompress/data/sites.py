"""Sites that differ like scanners: noise level, contrast, gamma and which anatomy they see.

A ``SiteProfile`` turns a clean phantom (or a user image) into the site's clean target and its noisy input:

    clean = contrast * image ** gamma
    noisy = clip(clean + sqrt(noise_std**2 + poisson * clean) * N(0, 1), 0, 1)

The noise is Gaussian plus an optional signal-dependent ("Poisson-ish") part, and the noisy image is
CLIPPED to ``[0, 1]``: real scanners store a fixed range, inputs and targets then share one range, and PSNR
with ``data_range=1`` is well defined. Clipping makes the noise biased near 0 and 1 (a black background is
less noisy); the denoiser learns that too. ``site_profiles`` spreads sites around the base profile by
``non_iid``.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from fedcompress.data.phantoms import PHANTOM_KINDS
from fedcompress.seeding import numpy_rng

__all__ = ["BASE_NOISE_STD", "NOISE_STD_RANGE", "SiteProfile", "site_profiles"]

BASE_NOISE_STD = 0.08
NOISE_STD_SPREAD = 2.5  # at non_iid=1 noise std spans BASE / SPREAD .. BASE * SPREAD
NOISE_STD_RANGE = (BASE_NOISE_STD / NOISE_STD_SPREAD, BASE_NOISE_STD * NOISE_STD_SPREAD)  # (0.032, 0.2)
_DOMINANT_SHARE = 0.8  # at non_iid=1 a site's favourite phantom kind makes up this share of its images
_MAX_POISSON = 0.01  # signal-dependent variance gain at the most skewed site (std 0.1 at intensity 1)


@dataclasses.dataclass(frozen=True, kw_only=True)
class SiteProfile:
    """How one site's scanner renders and corrupts an image.

    Parameters
    ----------
    noise_std : float
        Standard deviation of the additive Gaussian noise (intensity units, image range ``[0, 1]``).
    contrast : float
        Scale applied to the image after gamma, in ``(0, 1]``: the share of the range the scanner uses.
    gamma : float
        Exponent applied to intensities (> 0); 1 keeps them.
    mix : tuple of 3 floats
        Probabilities of the phantom kinds ``PHANTOM_KINDS`` (ignored for user data).
    poisson : float
        Signal-dependent variance gain: the noise variance is ``noise_std**2 + poisson * clean``.
    """

    noise_std: float = BASE_NOISE_STD
    contrast: float = 1.0
    gamma: float = 1.0
    mix: tuple[float, float, float] = (1 / 3, 1 / 3, 1 / 3)
    poisson: float = 0.0

    def __post_init__(self) -> None:
        checks = {
            "noise_std": self.noise_std >= 0,
            "contrast": 0 < self.contrast <= 1,
            "gamma": self.gamma > 0,
            "poisson": self.poisson >= 0,
        }
        for name, ok in checks.items():
            value = getattr(self, name)
            if not (math.isfinite(value) and ok):
                raise ValueError(f"SiteProfile.{name} = {value!r} is out of range")
        if len(self.mix) != len(PHANTOM_KINDS) or min(self.mix) < 0 or sum(self.mix) <= 0:
            raise ValueError(f"SiteProfile.mix must be {len(PHANTOM_KINDS)} non-negative weights, got {self.mix}")

    def render(self, images: np.ndarray) -> np.ndarray:
        """The site's clean view of ``images`` (in ``[0, 1]``): gamma, then contrast; a new float32 array."""
        out = np.power(np.clip(np.asarray(images, dtype=np.float32), 0.0, 1.0), np.float32(self.gamma))
        return (out * np.float32(self.contrast)).astype(np.float32, copy=False)

    def corrupt(self, clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A noisy copy of ``clean`` drawn from ``rng``, clipped to ``[0, 1]`` (float32, input untouched)."""
        std = np.sqrt(np.float32(self.noise_std) ** 2 + np.float32(self.poisson) * clean)
        noise = rng.standard_normal(clean.shape, dtype=np.float32)
        return np.clip(clean + std * noise, 0.0, 1.0).astype(np.float32, copy=False)


def site_profiles(num_clients: int, non_iid: float, seed: int) -> list[SiteProfile]:
    """One profile per client: identical at ``non_iid=0``, strongly skewed at ``non_iid=1``.

    Each attribute puts the sites at evenly spaced positions ``t`` in ``[-1, 1]``, shuffled independently per
    attribute by ``seed`` (so a noisy site is not always also a low-contrast one), and scales the spread by
    ``non_iid``: noise std ``0.08 * 2.5**(non_iid * t)`` (0.032..0.2 at 1), contrast
    ``1 - 0.2 * non_iid * (1 + t)`` (0.6..1), gamma ``1.5**(non_iid * t)``, a signal-dependent noise gain
    up to ``0.01 * non_iid``, and a phantom mix that moves from uniform to 80% of one kind (kinds dealt
    round-robin in shuffled order).
    """
    if not isinstance(num_clients, int) or num_clients < 1:
        raise ValueError(f"num_clients must be a positive int, got {num_clients!r}")
    if not (math.isfinite(non_iid) and 0.0 <= non_iid <= 1.0):
        raise ValueError(f"non_iid must be in [0, 1], got {non_iid!r}")
    rng = numpy_rng(seed, "site-profiles", num_clients)
    spots = np.linspace(-1.0, 1.0, num_clients) if num_clients > 1 else np.zeros(1)
    t_noise, t_contrast, t_gamma, t_poisson = (rng.permutation(spots) for _ in range(4))
    favourite = rng.permutation(num_clients) % len(PHANTOM_KINDS)
    uniform = np.full(len(PHANTOM_KINDS), 1.0 / len(PHANTOM_KINDS))
    profiles = []
    for k in range(num_clients):
        skewed = np.full(len(PHANTOM_KINDS), (1 - _DOMINANT_SHARE) / (len(PHANTOM_KINDS) - 1))
        skewed[favourite[k]] = _DOMINANT_SHARE
        mix = (1 - non_iid) * uniform + non_iid * skewed
        profiles.append(
            SiteProfile(
                noise_std=float(BASE_NOISE_STD * NOISE_STD_SPREAD ** (non_iid * t_noise[k])),
                contrast=float(1.0 - 0.2 * non_iid * (1.0 + t_contrast[k])),
                gamma=float(1.5 ** (non_iid * t_gamma[k])),
                mix=(float(mix[0]), float(mix[1]), float(mix[2])),
                poisson=float(_MAX_POISSON * non_iid * (1.0 + t_poisson[k]) / 2),
            )
        )
    return profiles
