"""Update compression: composable codec stages, error feedback and a strict, versioned wire format.

An update is an ordered mapping ``name -> float tensor``. A codec is a pipeline of stages written as a spec
string such as ``"lowrank:4+topk:0.01+q:4+zstd:3"`` or a preset name (see ``PRESETS``)::

    payload = encode(update, "balanced", state, seed=derive_seed(run_seed, round, client_id))
    update = decode(payload, limits=DecodeLimits(max_elements=num_params))

Compact framing, when both ends know the model and the codec (an 8-byte digest replaces the tensor table)::

    payload = encode(update, "ultra", state, seed=seed, framing="compact")
    update = decode(payload, limits=limits, layout=SharedLayout.of(model, "ultra"))
"""

from fedcompress.codec.api import decode, encode, encode_with_stats
from fedcompress.codec.layout import SharedLayout
from fedcompress.codec.limits import DecodeLimits
from fedcompress.codec.spec import PRESETS, CodecSpec, data_dependent_stages, parse_spec
from fedcompress.codec.state import CodecState
from fedcompress.codec.stats import EncodeStats
from fedcompress.errors import CodecError

__all__ = [
    "PRESETS",
    "CodecError",
    "CodecSpec",
    "CodecState",
    "DecodeLimits",
    "EncodeStats",
    "SharedLayout",
    "data_dependent_stages",
    "decode",
    "encode",
    "encode_with_stats",
    "parse_spec",
]
