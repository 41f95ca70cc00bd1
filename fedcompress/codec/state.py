"""Per-client codec state: the error-feedback residual and PowerSGD's warm-start ``Q`` matrices.

Error feedback (Karimireddy et al., ICML 2019; Vogels et al. 2019): what the lossy stages dropped this round
is added to the next round's update, so nothing is lost for good::

    x = update + residual            (float64)
    payload = encode(x)
    residual = x - decoded(payload)  (float64, so decoded + residual == update + old residual)

The state must live between rounds in Flower's ``context.state``, which stores arrays: :meth:`state_dict`
gives flat string keys and plain numpy arrays, :meth:`from_state_dict` validates and copies them back.

Tensor layout rule: a state is bound to the names and shapes of the first update it sees (in any order). Using
it with a different set of tensors, a different shape, or a low-rank ``Q`` of a different rank raises
``ValueError``; nothing is reset silently. Call :meth:`reset` explicitly to start over (for example after
changing the model or the codec's rank).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

import numpy as np

from fedcompress.codec.lowrank import matrix_shape
from fedcompress.codec.spec import CodecSpec
from fedcompress.tensors import Layout

__all__ = ["SCHEMA_VERSION", "CodecState"]

SCHEMA_VERSION = 1
_VERSION_KEY, _RESIDUAL, _Q = "schema_version", "residual/", "q/"


class CodecState:
    """A client's error-feedback residual (float64) and PowerSGD ``Q`` matrices (float32), by tensor."""

    def __init__(self) -> None:
        self._layout: Layout = []  # (name, shape) of each residual tensor, in the order of ``_residual``
        self._residual = np.zeros(0, dtype=np.float64)  # the residuals, flattened in ``_layout`` order
        self._qs: dict[str, np.ndarray] = {}

    @property
    def residuals(self) -> dict[str, np.ndarray]:
        """A copy of the residuals (``name -> float64 array``); empty before the first encode."""
        return {name: part.copy() for name, part in self._split().items()}

    @property
    def qs(self) -> dict[str, np.ndarray]:
        """A copy of the PowerSGD warm-start matrices (``name -> float32 [cols, rank]``)."""
        return {name: value.copy() for name, value in self._qs.items()}

    def qs_view(self) -> Mapping[str, np.ndarray]:
        """Last round's ``Q`` matrices without copying (read them, do not modify them)."""
        return MappingProxyType(self._qs)

    def reset(self) -> None:
        """Forget everything; the next encode starts with a zero residual and fresh ``Q`` from the seed."""
        self._layout, self._residual, self._qs = [], np.zeros(0, dtype=np.float64), {}

    def corrected(self, flat: np.ndarray, layout: Layout, spec: CodecSpec) -> np.ndarray:
        """``update + residual``, flat, float64; ``ValueError`` if the state does not fit the update."""
        self._check_layout(layout, spec)
        if not self._layout:
            return flat.astype(np.float64)
        if self._layout == layout:
            return flat + self._residual
        parts = self._split()  # same tensors in another order
        return flat + np.concatenate([parts[name].ravel() for name, _ in layout])

    def commit(self, residual: np.ndarray, layout: Layout, qs: Mapping[str, np.ndarray]) -> None:
        """Store the new flat residual (``corrected - decoded``) and ``Q`` matrices (mutates the state)."""
        self._residual = np.asarray(residual, dtype=np.float64)
        self._layout = list(layout)
        self._qs.update({name: np.array(q, dtype=np.float32) for name, q in qs.items()})

    def _split(self) -> dict[str, np.ndarray]:
        """Views of the flat residual, one per tensor."""
        out, offset = {}, 0
        for name, shape in self._layout:
            size = int(np.prod(shape, dtype=np.int64))
            out[name] = self._residual[offset : offset + size].reshape(shape)
            offset += size
        return out

    def _check_layout(self, layout: Layout, spec: CodecSpec) -> None:
        if self._layout and self._layout != layout:
            mine, theirs = dict(self._layout), dict(layout)
            missing = [name for name in mine if name not in theirs]
            extra = [name for name in theirs if name not in mine]
            reshaped = [name for name in mine if name in theirs and mine[name] != theirs[name]]
            if missing or extra or reshaped:
                raise ValueError(
                    f"codec state was built for other tensors (missing from the update: {missing[:5]}, "
                    f"new in it: {extra[:5]}, other shape: {reshaped[:5]}); call state.reset() to start over"
                )
        lowrank = spec.lowrank
        if lowrank is None:
            return
        for name, shape in layout:
            q = self._qs.get(name)
            if q is None or not lowrank.applies(shape):
                continue
            expected = (matrix_shape(shape)[1], lowrank.rank_for(shape))
            if q.shape != expected:
                raise ValueError(
                    f"codec state Q {name!r} has shape {q.shape}, but {lowrank.spec()!r} needs {expected}; "
                    f"call state.reset() to start over"
                )

    # ---- persistence --------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, np.ndarray]:
        """Flat ``str -> numpy array`` copies: ``schema_version``, ``residual/<name>``, ``q/<name>``."""
        out = {_VERSION_KEY: np.array([SCHEMA_VERSION], dtype=np.int64)}
        out.update({_RESIDUAL + name: value for name, value in self.residuals.items()})
        out.update({_Q + name: value.copy() for name, value in self._qs.items()})
        return out

    @classmethod
    def from_state_dict(cls, state: Mapping[str, np.ndarray]) -> CodecState:
        """Rebuild a state from :meth:`state_dict` output, validating and copying every array."""
        version = state.get(_VERSION_KEY)
        if not isinstance(version, np.ndarray) or version.shape != (1,) or int(version[0]) != SCHEMA_VERSION:
            raise ValueError(f"codec state_dict needs '{_VERSION_KEY}' = array([{SCHEMA_VERSION}]), got {version!r}")
        out, residuals = cls(), {}
        for key, value in state.items():
            if key == _VERSION_KEY:
                continue
            if not isinstance(value, np.ndarray) or not np.issubdtype(value.dtype, np.floating):
                raise ValueError(f"codec state_dict[{key!r}] must be a float numpy array, got {type(value).__name__}")
            if not np.all(np.isfinite(value)):
                raise ValueError(f"codec state_dict[{key!r}] contains NaN or Inf")
            if key.startswith(_RESIDUAL):
                residuals[key[len(_RESIDUAL) :]] = value
            elif key.startswith(_Q) and value.ndim == 2:
                out._qs[key[len(_Q) :]] = np.array(value, dtype=np.float32)
            else:
                raise ValueError(
                    f"codec state_dict key {key!r} is unknown or malformed (expected 'residual/<name>', or "
                    f"'q/<name>' holding a 2-D matrix)"
                )
        out._layout = [(name, tuple(value.shape)) for name, value in residuals.items()]
        parts = [np.asarray(value, dtype=np.float64).ravel() for value in residuals.values()]
        out._residual = np.concatenate(parts) if parts else np.zeros(0, dtype=np.float64)  # a copy
        return out

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Replace this state's contents with validated copies of ``state``."""
        loaded = CodecState.from_state_dict(state)
        self._layout, self._residual, self._qs = loaded._layout, loaded._residual, loaded._qs
