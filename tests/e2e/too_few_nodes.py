"""A simulation with fewer SuperNodes than num-clients; run as a script by tests/test_e2e_simulation.py.

Usage: ``python too_few_nodes.py OUT_DIR``. The ServerApp must fail within seconds naming the fix, although its
round-timeout (which bounds the wait in a deployment) is an hour.
"""

import sys
from pathlib import Path

from flwr.simulation import run_simulation

from clients.app import build_client_app
from fedcompress.config import RunConfig
from server.app import build_server_app
from simulations.deploy import prepare_flower_env

out = Path(sys.argv[1])
cfg = RunConfig(
    num_clients=3, num_rounds=1, samples_per_client=16, test_samples=16, width=4, round_timeout=3600, out_dir=str(out)
)
prepare_flower_env(out / ".flwr")
run_simulation(
    server_app=build_server_app(cfg),
    client_app=build_client_app(state_dir=out),
    num_supernodes=2,
    backend_config={"client_resources": {"num_cpus": 1}},
)
