"""A site's own privacy floor: what a client accepts whatever the server asks.

Where a client runs the DP mechanism (``dp = "sample"``: DP-SGD; ``dp = "client"`` with ``dp-noise = "local"``:
clip and noise before sending), the server's message sets the noise multiplier, the clip norm and the codec. An
untrusted or compromised server could ask for ``noise-multiplier = 0``. The client therefore checks every request
against its own :class:`ClientPolicy` and its own accountant, and refuses (an error reply the server counts as a
failure) instead of training below the floor:

- the noise multiplier must be at least ``min-noise-multiplier`` (so 0 is always refused);
- the release must keep the client's own epsilon, at its own ``dp-delta``, within ``max-epsilon``;
- ``pre-noise`` stages (run on the raw update before local noise) must be data-independent and listed in
  ``pre-noise-stages``;
- with ``require-client-dp = true`` (the setting for a site that does not trust the server), any request in
  which this client would not noise its own release (``dp = "none"``, or central noise) is refused;
- noise derived from the public seed (``dp-randomness = "seeded"``) is refused unless the policy was built with
  ``allow_seeded_noise`` by the Python simulation harness; no node config can allow it.

A hospital sets its floor in its SuperNode's node config, for example::

    flower-supernode ... --node-config "partition-id=0 num-partitions=8 min-noise-multiplier=0.8 max-epsilon=8"
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from fedcompress.codec import data_dependent_stages, parse_spec
from fedcompress.errors import PrivacyPolicyError
from fedcompress.privacy._checks import check_number

__all__ = ["NODE_CONFIG_KEYS", "ClientPolicy"]

#: node-config key -> ClientPolicy field
NODE_CONFIG_KEYS: Mapping[str, str] = {
    "min-noise-multiplier": "min_noise_multiplier",
    "max-epsilon": "max_epsilon",
    "dp-delta": "delta",
    "pre-noise-stages": "pre_noise_stages",
    "require-client-dp": "require_client_dp",
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class ClientPolicy:
    """A client's floor (defaults apply when the node config sets nothing).

    Parameters
    ----------
    min_noise_multiplier : float, default 0.5
        The smallest noise multiplier z accepted (> 0).
    max_epsilon : float, default 10.0
        This client's own budget over the whole run, at ``delta`` (about the largest epsilon deployed
        federations call reasonable).
    delta : float, default 1e-5
        The delta of the client's own budget.
    pre_noise_stages : tuple[str, ...], default ("randk", "q")
        Codec stage ids allowed before local noise (each must also be data-independent).
    require_client_dp : bool, default False
        Refuse requests in which this client does not run the DP mechanism itself (no DP, or central noise).
    allow_seeded_noise : bool, default False
        Accept noise derived from the public seed (simulation studies only; never from a node config).
    """

    min_noise_multiplier: float = 0.5
    max_epsilon: float = 10.0
    delta: float = 1e-5
    pre_noise_stages: tuple[str, ...] = ("randk", "q")
    require_client_dp: bool = False
    allow_seeded_noise: bool = False

    def __post_init__(self) -> None:
        check_number("min_noise_multiplier", self.min_noise_multiplier, low=0.0, low_open=True, high_open=True)
        check_number("max_epsilon", self.max_epsilon, low=0.0, low_open=True, high_open=True)
        check_number("delta", self.delta, low=0.0, high=1.0, low_open=True, high_open=True)
        object.__setattr__(self, "pre_noise_stages", tuple(self.pre_noise_stages))

    @classmethod
    def from_node_config(cls, node_config: Mapping[str, Any], **overrides: Any) -> ClientPolicy:
        """The policy set by a node config (unrelated keys such as ``partition-id`` are ignored)."""
        values: dict[str, Any] = {}
        for key, field in NODE_CONFIG_KEYS.items():
            if key not in node_config:
                continue
            raw = node_config[key]
            try:
                values[field] = _PARSERS.get(field, float)(raw)
            except (TypeError, ValueError):
                raise ValueError(f"node config {key}={raw!r} is not valid") from None
        try:
            return cls(**values, **overrides)
        except ValueError as e:
            raise ValueError(f"node config: {e}") from e

    # ------------------------------------------------------------------ checks (PrivacyPolicyError)
    def check_mode(self, *, client_runs_dp: bool, mode: str) -> None:
        """Refuse a mode in which this client does not noise its own release, if the site requires it."""
        if self.require_client_dp and not client_runs_dp:
            raise PrivacyPolicyError(
                f"refused: the server asks for {mode}, in which this client sends its update without noising it "
                "itself; this site sets require-client-dp"
            )

    def check_request(self, *, noise_multiplier: float, pre_noise: str, randomness: str) -> None:
        """Refuse a server request below the floor, naming the setting and the floor."""
        if not (math.isfinite(noise_multiplier) and noise_multiplier >= self.min_noise_multiplier):
            raise PrivacyPolicyError(
                f"refused: the server asks for noise multiplier {noise_multiplier:g}, below this site's "
                f"min-noise-multiplier {self.min_noise_multiplier:g}"
            )
        if randomness != "secret" and not self.allow_seeded_noise:
            raise PrivacyPolicyError(
                f"refused: dp-randomness={randomness!r} derives DP noise from the public seed (no guarantee "
                "against anyone who knows it); only the simulation harness may opt in"
            )
        if pre_noise:
            stages = [stage.codec_id for stage in parse_spec(pre_noise).stages]
            unsafe = data_dependent_stages(pre_noise)
            banned = [s for s in stages if s not in self.pre_noise_stages]
            if unsafe or banned:
                raise PrivacyPolicyError(
                    f"refused: pre-noise={pre_noise!r} runs {unsafe or banned} on the raw update before the "
                    f"noise; this site allows only data-independent stages in {list(self.pre_noise_stages)}"
                )

    def check_budget(self, predicted_epsilon: float) -> None:
        """Refuse a release that would take this client's own epsilon past ``max_epsilon``."""
        if not predicted_epsilon <= self.max_epsilon:
            raise PrivacyPolicyError(
                f"refused: this release would take this site's own epsilon to {predicted_epsilon:.4g} at delta "
                f"{self.delta:g}, past its max-epsilon {self.max_epsilon:g} (budget spent)"
            )


def _stages(raw: Any) -> tuple[str, ...]:
    if isinstance(raw, str):
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    raise ValueError(raw)


def _flag(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.lower() in ("true", "false"):
        return raw.lower() == "true"
    raise ValueError(raw)


_PARSERS = {"pre_noise_stages": _stages, "require_client_dp": _flag}
