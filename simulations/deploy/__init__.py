"""A real multi-process federation on loopback: ``fedcompress federate``, one SuperNode per data partition.

What runs (Flower 1.42; see notes/flower-1.42.md):

- one ``flower-superlink`` on a free loopback port. In 1.42 that single HTTP port serves the Fleet API
  (SuperNodes), the Control API (the ``flwr`` CLI) and the Runtime API (its own ``flower-superexec``, which
  starts ``flwr-serverapp`` for the run);
- SuperNode authentication (on by default): the SuperLink runs with ``--enable-supernode-auth``, which 1.42
  accepts only over TLS, so TLS is then on too. Each SuperNode gets a key pair made for this run in
  ``node-keys/`` (:mod:`simulations.deploy.node_auth`); its public key is registered with ``flwr supernode register``
  before the SuperNode starts with ``--auth-supernode-private-key``. A SuperNode with any other key, or none,
  is refused (``Failed to activate SuperNode`` / ``must be registered via the CLI``);
- ``N`` ``flower-supernode`` processes, each with its own Runtime API port (``--port``; its SuperExec starts a
  fresh ``flwr-clientapp`` per message) and ``--node-config "partition-id=i num-partitions=N"``;
- the ``flwr`` CLI, pointed at the SuperLink through connection ``fedcompress-local`` in
  ``$FLWR_HOME/config.toml``: ``flwr run`` submits the app (the repository root, copied without the venv and
  other git-ignored folders, see :mod:`simulations.deploy.fab`) with every setting in ``logs/run-config.toml``,
  ``flwr log --stream`` copies the ServerApp's output to ``logs/serverapp.log``, and ``flwr ls`` gives the
  run's true status (``flwr run`` exits 0 even when the ServerApp crashes; :mod:`simulations.deploy.progress`).

Every process gets the same environment (:mod:`simulations.deploy.flower_env`) plus a random token, so that on
success, failure, timeout or Ctrl-C each of them, and every descendant Flower started (SuperExecs detach into
their own sessions), is found and stopped by PID (:class:`simulations.processes.ProcessGroup`): SIGTERM, then
SIGKILL after a grace period. PIDs are written to ``logs/pids.txt`` while the federation runs. If this process
is itself killed (even by SIGKILL), Linux sends the SuperLink and SuperNodes SIGTERM (PR_SET_PDEATHSIG), and
Flower's children follow their parents.
"""

from simulations.deploy.fab import APP_ROOT, stage_app
from simulations.deploy.federate import federate
from simulations.deploy.federation import CONNECTION, MAX_SUPERNODES, START_TIMEOUT_S, TOKEN_VARIABLE, LocalFederation
from simulations.deploy.flower_env import flower_env, prepare_flower_env
from simulations.deploy.node_auth import NodeKey, make_node_key, make_node_keys
from simulations.deploy.progress import ProgressTail, wait_for_run
from simulations.deploy.tls import LOOPBACK_NAMES, Certificates, make_certificates

__all__ = [
    "APP_ROOT",
    "CONNECTION",
    "LOOPBACK_NAMES",
    "MAX_SUPERNODES",
    "START_TIMEOUT_S",
    "TOKEN_VARIABLE",
    "Certificates",
    "LocalFederation",
    "NodeKey",
    "ProgressTail",
    "federate",
    "flower_env",
    "make_certificates",
    "make_node_key",
    "make_node_keys",
    "prepare_flower_env",
    "stage_app",
    "wait_for_run",
]
