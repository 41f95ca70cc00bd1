"""A real simulation in which some clients misbehave; run as a script by tests/test_e2e_simulation.py.

The ServerApp is the real one. The ClientApp wraps the real one: partition 1 always raises, partition 2 sends
a different kind of garbage each round, partition 3 crashes in the last round only (so that round has fewer
usable replies than min-clients and must be skipped). Usage: ``python faulty_federation.py OUT_DIR [JSON]``,
where JSON holds settings that replace the defaults below (a private run, fewer rounds).
"""

import json
import sys
from pathlib import Path

import numpy as np
import zstandard
from flwr.app import Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.simulation import run_simulation

from clients import app as real
from fedcompress.codec import encode
from fedcompress.config import RunConfig
from server.app import build_server_app
from server.records import payload_from_record, payload_record
from simulations.deploy import prepare_flower_env


def garbage(kind: int, good: bytes) -> bytes:
    """Round-dependent bad payloads: corrupt bytes, NaN, wrong shapes, a zstd bomb."""
    if kind == 1:  # bit flips in the body of a valid payload
        bad = bytearray(good)
        for i in range(len(bad) // 2, len(bad), 7):
            bad[i] ^= 0xA5
        return bytes(bad)
    if kind == 2:  # a valid dense payload whose last value is NaN
        raw = bytearray(encode({"x": np.ones(8, np.float32)}, "none"))
        raw[-4:] = np.array([np.nan], np.float32).tobytes()
        return bytes(raw)
    if kind == 3:  # well-formed, but not this model's tensors
        return encode({"conv.weight": np.ones((3, 3), np.float32)}, "none")
    # kind 4: 32 MiB of zeros squeezed into a few KB, inside a zstd frame with the codec's header
    bomb = encode({"x": np.zeros(8 << 20, np.float32)}, "zstd:19")
    return bomb if len(bomb) < 1 << 20 else zstandard.compress(b"\0" * (32 << 20))


faulty = ClientApp()
STATE_DIR: Path | None = None  # the run folder, as the simulation harness keeps it


@faulty.query()
def query(msg: Message, context: Context) -> Message:
    return real.query(msg, context)


@faulty.train()
def train(msg: Message, context: Context) -> Message:
    partition = int(context.node_config["partition-id"])
    server_round = int(msg.content["config"]["server-round"])
    last_round = int(msg.content["config"]["num-rounds"])
    if partition == 1 or (partition == 3 and server_round == last_round):
        raise RuntimeError(f"injected crash on partition {partition}")
    reply = real.train(msg, context, state_dir=STATE_DIR)
    if partition != 2:
        return reply
    bad = garbage((server_round - 1) % 4 + 1, payload_from_record(reply.content["arrays"]))
    return Message(RecordDict({"arrays": payload_record(bad), "metrics": reply.content["metrics"]}), reply_to=msg)


if __name__ == "__main__":
    out = sys.argv[1]
    settings = {
        "num-clients": 4,
        "num-rounds": 5,
        "min-clients": 2,
        "samples-per-client": 16,
        "test-samples": 16,
        "round-timeout": 600,  # catches hangs, not slowness: Ray start-up on a loaded machine is in it
        "out-dir": out,
    }
    cfg = RunConfig.from_mapping({**settings, **(json.loads(sys.argv[2]) if len(sys.argv) > 2 else {})})
    STATE_DIR = Path(out)
    prepare_flower_env(Path(out) / ".flwr")
    run_simulation(
        server_app=build_server_app(cfg),
        client_app=faulty,
        num_supernodes=4,
        backend_config={"client_resources": {"num_cpus": 1}},
    )
