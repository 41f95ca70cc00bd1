"""Server optimizer: how the aggregated client delta moves the global weights.

- ``sgd``: w <- w + lr * m, m <- momentum * m + delta (FedAvgM; Hsu et al. 2019). ``lr = 1, momentum = 0`` is
  plain FedAvg.
- ``adam``: FedAdam (Reddi et al., "Adaptive Federated Optimization", ICLR 2021): m <- b1 m + (1 - b1) delta,
  v <- b2 v + (1 - b2) delta^2, w <- w + lr * m / (sqrt(v) + tau), with b1 = ``momentum`` (0.9 if 0), b2 = 0.99,
  tau = 1e-3 and no bias correction, as in the paper. Its lr is a step size per coordinate: 0.01-0.1, not 1.

State is explicit and serialisable for checkpoints.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

__all__ = ["KINDS", "ServerOptimizer"]

_SCHEMA = 1
KINDS = ("sgd", "adam")
_ADAM_BETA1, _ADAM_BETA2, _ADAM_TAU = 0.9, 0.99, 1e-3


class ServerOptimizer:
    """Applies aggregated client deltas to the global weights.

    Parameters
    ----------
    lr : float
        Server learning rate (1.0 applies the average delta as is).
    momentum : float
        Server momentum in [0, 1); 0 disables the buffer (``adam``: beta1, 0.9 when 0).
    kind : str
        ``"sgd"`` or ``"adam"``.
    """

    def __init__(self, *, lr: float = 1.0, momentum: float = 0.0, kind: str = "sgd") -> None:
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        if kind not in KINDS:
            raise ValueError(f"server optimizer must be one of {KINDS}, got {kind!r}")
        self.lr = lr
        self.momentum = momentum if kind == "sgd" or momentum > 0 else _ADAM_BETA1
        self.kind = kind
        self._buffer: dict[str, np.ndarray] = {}
        self._second: dict[str, np.ndarray] = {}

    def step(self, weights: Mapping[str, np.ndarray], delta: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Return new weights (inputs are not modified).

        Raises ``FloatingPointError`` (and keeps its state) when the step would make any weight non-finite: the
        server never steps into, or checkpoints, a broken model.
        """
        if set(delta) != set(weights):
            raise ValueError("delta and weights have different tensor names")
        new: dict[str, np.ndarray] = {}
        buffer: dict[str, np.ndarray] = {}
        second: dict[str, np.ndarray] = {}
        b1 = self.momentum
        with np.errstate(over="ignore", invalid="ignore"):
            for name, w in weights.items():
                d = np.asarray(delta[name], dtype=np.float32)
                m = self._buffer.get(name, np.zeros_like(d))
                if self.kind == "adam":
                    buffer[name] = (b1 * m + (1 - b1) * d).astype(np.float32)
                    second[name] = _ADAM_BETA2 * self._second.get(name, np.zeros_like(d)) + (1 - _ADAM_BETA2) * d * d
                    second[name] = second[name].astype(np.float32)
                    d = buffer[name] / (np.sqrt(second[name]) + _ADAM_TAU)
                elif self.momentum > 0.0:
                    d = buffer[name] = (self.momentum * m + d).astype(np.float32)
                new[name] = (w + self.lr * d).astype(np.float32)
        broken = [name for name, w in new.items() if not np.all(np.isfinite(w))]
        if broken:
            raise FloatingPointError(f"the step makes {len(broken)} weight tensors non-finite (first: {broken[0]!r})")
        self._buffer.update(buffer)
        self._second.update(second)
        return new

    def state_dict(self) -> dict[str, np.ndarray]:
        """Buffers as plain arrays, keyed ``momentum/<name>``, plus the schema version."""
        state = {f"momentum/{k}": v.copy() for k, v in self._buffer.items()}
        state |= {f"second/{k}": v.copy() for k, v in self._second.items()}
        state["schema_version"] = np.array(_SCHEMA)
        return state

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Restore buffers (copied) from ``state_dict()`` output."""
        if int(np.asarray(state.get("schema_version", -1))) != _SCHEMA:
            raise ValueError(
                f"server optimizer state has schema_version {state.get('schema_version')}, expected {_SCHEMA}"
            )
        self._buffer = {
            k.removeprefix("momentum/"): np.array(v, dtype=np.float32)
            for k, v in state.items()
            if k.startswith("momentum/")
        }
        self._second = {
            k.removeprefix("second/"): np.array(v, dtype=np.float32)
            for k, v in state.items()
            if k.startswith("second/")
        }
