"""Domain errors, one module so every boundary raises the same few types.

Bad arguments raise ``ValueError`` naming the parameter; these classes are for failures in the domain itself.
"""

from __future__ import annotations

__all__ = [
    "CodecError",
    "ConfigError",
    "FedCompressError",
    "PrivacyBudgetExhausted",
    "PrivacyPolicyError",
    "RunError",
]


class FedCompressError(Exception):
    """Base class of every fedcompress error."""


class CodecError(FedCompressError):
    """A payload could not be encoded or decoded: malformed, truncated, hostile or over a limit."""


class ConfigError(FedCompressError, ValueError):
    """A setting is unknown, has the wrong type, or is out of range (also a ``ValueError``)."""


class PrivacyBudgetExhausted(FedCompressError):  # noqa: N818 (the name says what happened)
    """The next round would take epsilon past the configured ``max-epsilon``."""


class PrivacyPolicyError(FedCompressError):
    """A client refuses a request below its own privacy floor (noise, budget, pre-noise stages, randomness)."""


class RunError(FedCompressError):
    """A federation run failed: a process died, a run ended in a non-completed state, or a result is missing."""
