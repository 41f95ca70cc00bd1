"""The Flower ClientApp: answers the partition handshake and trains; everything else is fedcompress.

Settings arrive in every train message (so ``flwr run``, the Python API and deployment agree). What the site
decides does NOT: its privacy floor (``--node-config "min-noise-multiplier=0.8 max-epsilon=8"``, see
:class:`fedcompress.privacy.policy.ClientPolicy`; a request below it is refused) and where its state lives
(``state-dir``, default ``./fedcompress-state`` in the node's working directory; never a path from the server).
Per-client state (error-feedback residuals, PowerSGD memory, the DP accountant, the last release) lives in
``context.state`` between rounds and on the client's disk, so a resumed run starts each client where it was.
An exception here becomes an error reply that the server counts as this client's failure.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedcompress.config import RunConfig
from fedcompress.federation.client_state import save_state_to_disk, select_state
from fedcompress.federation.ef21 import BASIS_KEY
from fedcompress.privacy.policy import ClientPolicy
from server.records import payload_from_record, payload_record

__all__ = ["app", "build_client_app", "query", "train"]

_STATE_KEY = "fedcompress"


def _partition_id(context: Context) -> int:
    return int(context.node_config["partition-id"])


def state_root(context: Context, run_key: str, harness_dir: Path | None = None) -> Path:
    """Where this client keeps its state: the node's own ``state-dir`` (or the harness's run folder).

    The server's message only names the run (``run_key``, hashed into a folder name), never a path.
    """
    if harness_dir is not None:
        return harness_dir
    root = Path(str(context.node_config.get("state-dir", "") or "fedcompress-state")).expanduser().resolve()
    return root / f"run-{hashlib.sha256(run_key.encode()).hexdigest()[:16]}"


def query(msg: Message, context: Context) -> Message:
    """Handshake: tell the server which partition (site) this node is."""
    record = ConfigRecord({"partition-id": _partition_id(context)})
    return Message(RecordDict({"config": record}), reply_to=msg)


def train(
    msg: Message, context: Context, *, allow_seeded_noise: bool = False, state_dir: Path | None = None
) -> Message:
    """Train on the local shard from the received weights and reply with a codec payload."""
    from fedcompress.federation.client_round import run_client_round  # torch: only for messages that train

    settings: dict[str, Any] = dict(msg.content.config_records["config"])
    server_round = int(settings.pop("server-round"))
    noise = float(settings.pop("noise-multiplier-effective"))
    ef21_basis = int(settings.pop(BASIS_KEY, 0))  # per client, from the server (fedcompress.federation.ef21)
    cfg = RunConfig.from_mapping(settings)
    policy = ClientPolicy.from_node_config(context.node_config, allow_seeded_noise=allow_seeded_noise)
    partition = _partition_id(context)
    disk_root = state_root(context, f"{cfg.out_dir}|{cfg.seed}", state_dir)

    stored = context.state.array_records.get(_STATE_KEY)
    in_memory = {k: v.numpy() for k, v in stored.items()} if stored is not None else None
    saved = select_state(in_memory, server_round=server_round, disk_root=disk_root, partition_id=partition)
    reply = run_client_round(
        cfg,
        partition_id=partition,
        server_round=server_round,
        downlink_payload=payload_from_record(msg.content.array_records["arrays"]),
        noise_multiplier=noise,
        saved=saved,
        policy=policy,
        ef21_basis=ef21_basis,
    )
    context.state[_STATE_KEY] = ArrayRecord({k: Array(np.array(v, order="C")) for k, v in reply.state.items()})
    save_state_to_disk(disk_root, partition, reply.state)
    content = RecordDict({"arrays": payload_record(reply.payload), "metrics": MetricRecord(dict(reply.metrics))})
    return Message(content, reply_to=msg)


def build_client_app(*, allow_seeded_noise: bool = False, state_dir: Path | None = None) -> ClientApp:
    """A ClientApp, with the simulation harness's two choices.

    ``allow_seeded_noise`` opts in to reproducible DP noise; ``state_dir`` keeps client state in the run's folder
    instead of each node's own ``state-dir``.
    """
    client_app = ClientApp()
    client_app.query()(query)

    @client_app.train()
    def train_message(msg: Message, context: Context) -> Message:
        return train(msg, context, allow_seeded_noise=allow_seeded_noise, state_dir=state_dir)

    return client_app


app = build_client_app()
