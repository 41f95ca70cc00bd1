"""Server optimizer: w <- w + lr * m, m <- momentum * m + aggregated delta (FedAvgM; Hsu et al. 2019).

``lr = 1, momentum = 0`` is plain FedAvg. State is explicit and serialisable for checkpoints.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

__all__ = ["ServerOptimizer"]

_SCHEMA = 1


class ServerOptimizer:
    """Applies aggregated client deltas to the global weights.

    Parameters
    ----------
    lr : float
        Server learning rate (1.0 applies the average delta as is).
    momentum : float
        Server momentum in [0, 1); 0 disables the buffer.
    """

    def __init__(self, *, lr: float = 1.0, momentum: float = 0.0) -> None:
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.lr = lr
        self.momentum = momentum
        self._buffer: dict[str, np.ndarray] = {}

    def step(self, weights: Mapping[str, np.ndarray], delta: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Return new weights (inputs are not modified).

        Raises ``FloatingPointError`` (and keeps its state) when the step would make any weight non-finite: the
        server never steps into, or checkpoints, a broken model.
        """
        if set(delta) != set(weights):
            raise ValueError("delta and weights have different tensor names")
        new: dict[str, np.ndarray] = {}
        buffer: dict[str, np.ndarray] = {}
        with np.errstate(over="ignore", invalid="ignore"):
            for name, w in weights.items():
                d = np.asarray(delta[name], dtype=np.float32)
                if self.momentum > 0.0:
                    d = buffer[name] = (self.momentum * self._buffer.get(name, np.zeros_like(d)) + d).astype(np.float32)
                new[name] = (w + self.lr * d).astype(np.float32)
        broken = [name for name, w in new.items() if not np.all(np.isfinite(w))]
        if broken:
            raise FloatingPointError(f"the step makes {len(broken)} weight tensors non-finite (first: {broken[0]!r})")
        self._buffer.update(buffer)
        return new

    def state_dict(self) -> dict[str, np.ndarray]:
        """Buffers as plain arrays, keyed ``momentum/<name>``, plus the schema version."""
        state = {f"momentum/{k}": v.copy() for k, v in self._buffer.items()}
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
