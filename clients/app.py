"""The Flower ClientApp: answers the partition handshake and trains; everything else is fedcompress.

Settings arrive in every train message (so ``flwr run``, the Python API and deployment agree). The site's own
privacy floor does NOT: it comes from the node config (``--node-config "min-noise-multiplier=0.8 max-epsilon=8"``,
see :class:`fedcompress.privacy.policy.ClientPolicy`), and a request below it is refused. Per-client state
(error-feedback residuals, PowerSGD memory, the DP accountant, the last release) lives in ``context.state``
between rounds and, when the run has an output folder, on the client's disk, so a resumed run starts each client
where it was. An exception here becomes an error reply that the server counts as this client's failure.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedcompress.config import RunConfig
from fedcompress.federation.client_state import save_state_to_disk, select_state
from fedcompress.privacy.policy import ClientPolicy
from server.records import payload_from_record, payload_record

__all__ = ["app", "build_client_app", "query", "train"]

_STATE_KEY = "fedcompress"


def _partition_id(context: Context) -> int:
    return int(context.node_config["partition-id"])


def query(msg: Message, context: Context) -> Message:
    """Handshake: tell the server which partition (site) this node is."""
    record = ConfigRecord({"partition-id": _partition_id(context)})
    return Message(RecordDict({"config": record}), reply_to=msg)


def train(msg: Message, context: Context, *, allow_seeded_noise: bool = False) -> Message:
    """Train on the local shard from the received weights and reply with a codec payload."""
    from fedcompress.federation.client_round import run_client_round  # torch: only for messages that train

    settings: dict[str, Any] = dict(msg.content.config_records["config"])
    server_round = int(settings.pop("server-round"))
    noise = float(settings.pop("noise-multiplier-effective"))
    cfg = RunConfig.from_mapping(settings)
    policy = ClientPolicy.from_node_config(context.node_config, allow_seeded_noise=allow_seeded_noise)
    partition = _partition_id(context)
    disk_root = Path(cfg.out_dir) if cfg.out_dir else None

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
    )
    context.state[_STATE_KEY] = ArrayRecord({k: Array(np.array(v, order="C")) for k, v in reply.state.items()})
    if disk_root is not None:
        save_state_to_disk(disk_root, partition, reply.state)
    content = RecordDict({"arrays": payload_record(reply.payload), "metrics": MetricRecord(dict(reply.metrics))})
    return Message(content, reply_to=msg)


def build_client_app(*, allow_seeded_noise: bool = False) -> ClientApp:
    """A ClientApp; ``allow_seeded_noise`` lets the Python simulation harness opt in to reproducible DP noise."""
    client_app = ClientApp()
    client_app.query()(query)

    @client_app.train()
    def train_message(msg: Message, context: Context) -> Message:
        return train(msg, context, allow_seeded_noise=allow_seeded_noise)

    return client_app


app = build_client_app()
