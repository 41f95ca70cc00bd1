"""Per-client codec state: the error-feedback residual and PowerSGD's warm-start ``Q`` matrices.

Error feedback (Karimireddy et al., ICML 2019; Vogels et al. 2019): what the lossy stages dropped this round
is added to the next round's update, so nothing is lost for good::

    x = update + residual            (float64)
    payload = encode(x)
    residual = x - decoded(payload)  (float64, so decoded + residual == update + old residual exactly)

The state must live between rounds in Flower's ``context.state``, which stores arrays: :meth:`state_dict`
gives flat string keys and plain numpy arrays, :meth:`from_state_dict` validates and copies them back.

Tensor layout rule: a state is bound to the names and shapes of the first update it sees. Using it with a
different set of tensors, a different shape, or a low-rank ``Q`` of a different rank raises ``ValueError``;
nothing is reset silently. Call :meth:`reset` explicitly to start over (for example after changing the model
or the codec's rank).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from fedcompress.codec.lowrank import matrix_shape
from fedcompress.codec.spec import CodecSpec

__all__ = ["SCHEMA_VERSION", "CodecState"]

SCHEMA_VERSION = 1
_VERSION_KEY, _RESIDUAL, _Q = "schema_version", "residual/", "q/"


class CodecState:
    """A client's error-feedback residuals (float64) and PowerSGD ``Q`` matrices (float32), by tensor."""

    def __init__(self) -> None:
        self._residuals: dict[str, np.ndarray] = {}
        self._qs: dict[str, np.ndarray] = {}

    @property
    def residuals(self) -> dict[str, np.ndarray]:
        """A copy of the residuals (``name -> float64 array``); empty before the first encode."""
        return {name: value.copy() for name, value in self._residuals.items()}

    @property
    def qs(self) -> dict[str, np.ndarray]:
        """A copy of the PowerSGD warm-start matrices (``name -> float32 [cols, rank]``)."""
        return {name: value.copy() for name, value in self._qs.items()}

    def reset(self) -> None:
        """Forget everything; the next encode starts with zero residuals and fresh ``Q`` from the seed."""
        self._residuals.clear()
        self._qs.clear()

    def warm_q(self, name: str) -> np.ndarray | None:
        """Last round's ``Q`` of tensor ``name``, or None."""
        return self._qs.get(name)

    def corrected(self, update: Mapping[str, np.ndarray], spec: CodecSpec) -> dict[str, np.ndarray]:
        """``update + residual`` in float64; ``ValueError`` if the state does not fit."""
        self._check_layout(update, spec)
        out: dict[str, np.ndarray] = {}
        for name, value in update.items():
            residual = self._residuals.get(name)
            out[name] = value.astype(np.float64) if residual is None else value + residual
        return out

    def commit(
        self,
        corrected: Mapping[str, np.ndarray],
        decoded: Mapping[str, np.ndarray],
        qs: Mapping[str, np.ndarray],
    ) -> None:
        """Store ``corrected - decoded`` as the residuals, and the new ``Q`` matrices (mutates the state)."""
        self._residuals = {name: value - decoded[name] for name, value in corrected.items()}
        self._qs.update({name: np.array(q, dtype=np.float32) for name, q in qs.items()})

    def _check_layout(self, update: Mapping[str, np.ndarray], spec: CodecSpec) -> None:
        if self._residuals:
            missing = [name for name in self._residuals if name not in update]
            extra = [name for name in update if name not in self._residuals]
            if missing or extra:
                raise ValueError(
                    f"codec state was built for other tensors (missing from update: {missing[:5]}, "
                    f"new in update: "
                    f"{extra[:5]}); call state.reset() to start over"
                )
            for name, value in update.items():
                if self._residuals[name].shape != value.shape:
                    raise ValueError(
                        f"codec state residual {name!r} has shape {self._residuals[name].shape}, "
                        f"the update has "
                        f"{value.shape}; call state.reset() to start over"
                    )
        lowrank = spec.lowrank
        for name, value in update.items():
            q = self._qs.get(name)
            if lowrank is None or q is None or not lowrank.applies(value.shape):
                continue
            expected = (matrix_shape(value.shape)[1], lowrank.rank_for(value.shape))
            if q.shape != expected:
                raise ValueError(
                    f"codec state Q {name!r} has shape {q.shape}, but {lowrank.spec()!r} needs {expected}; "
                    f"call state.reset() to start over"
                )

    # ---- persistence --------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, np.ndarray]:
        """Flat ``str -> numpy array`` copies: ``schema_version``, ``residual/<name>``, ``q/<name>``."""
        out = {_VERSION_KEY: np.array([SCHEMA_VERSION], dtype=np.int64)}
        out.update({_RESIDUAL + name: value.copy() for name, value in self._residuals.items()})
        out.update({_Q + name: value.copy() for name, value in self._qs.items()})
        return out

    @classmethod
    def from_state_dict(cls, state: Mapping[str, np.ndarray]) -> CodecState:
        """Rebuild a state from :meth:`state_dict` output, validating and copying every array."""
        version = state.get(_VERSION_KEY)
        if not isinstance(version, np.ndarray) or version.shape != (1,) or int(version[0]) != SCHEMA_VERSION:
            raise ValueError(
                f"codec state_dict needs '{_VERSION_KEY}' = array([{SCHEMA_VERSION}]), got {version!r}"
            )
        out = cls()
        for key, value in state.items():
            if key == _VERSION_KEY:
                continue
            if not isinstance(value, np.ndarray) or not np.issubdtype(value.dtype, np.floating):
                raise ValueError(
                    f"codec state_dict[{key!r}] must be a float numpy array, got {type(value).__name__}"
                )
            if not np.all(np.isfinite(value)):
                raise ValueError(f"codec state_dict[{key!r}] contains NaN or Inf")
            if key.startswith(_RESIDUAL):
                out._residuals[key[len(_RESIDUAL) :]] = np.array(value, dtype=np.float64)
            elif key.startswith(_Q):
                if value.ndim != 2:
                    raise ValueError(
                        f"codec state_dict[{key!r}] must be a 2-D matrix, got shape {value.shape}"
                    )
                out._qs[key[len(_Q) :]] = np.array(value, dtype=np.float32)
            else:
                raise ValueError(
                    f"codec state_dict key {key!r} is unknown (expected 'residual/<name>' or 'q/<name>')"
                )
        return out

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Replace this state's contents with validated copies of ``state``."""
        loaded = CodecState.from_state_dict(state)
        self._residuals, self._qs = loaded._residuals, loaded._qs
