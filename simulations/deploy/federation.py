"""A SuperLink and N SuperNodes on loopback (``LocalFederation``), started and stopped as one.

See :mod:`simulations.deploy` for what runs. Each process is started, found and stopped by
:class:`simulations.processes.ProcessGroup`; the run itself is submitted here and followed by
:mod:`simulations.deploy.progress`.
"""

from __future__ import annotations

import concurrent.futures
import math
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedcompress.config import toml_document, toml_value
from fedcompress.errors import RunError
from simulations.deploy.fab import APP_ROOT, stage_app
from simulations.deploy.flower_env import flower_env
from simulations.deploy.node_auth import NodeKey, make_node_keys
from simulations.deploy.tools import HOST, cli_json, flower_tool, free_ports, listening
from simulations.processes import CLI_TIMEOUT_S, ProcessGroup, sigterm_to_interrupt, strip_colours, tail_log
from simulations.run.folder import check_out_dir

if TYPE_CHECKING:
    from simulations.deploy.tls import Certificates

__all__ = ["CONNECTION", "MAX_SUPERNODES", "START_TIMEOUT_S", "TOKEN_VARIABLE", "LocalFederation"]

CONNECTION = "fedcompress-local"
MAX_SUPERNODES = 64
TOKEN_VARIABLE = "FEDCOMPRESS_FEDERATION_TOKEN"
START_TIMEOUT_S = 90.0
_REGISTER_WORKERS = 4  # `flwr supernode register` processes at a time


def _say(started: float, text: str) -> None:
    print(f"[federate {time.monotonic() - started:6.1f}s] {text}", flush=True)


class LocalFederation:
    """A SuperLink and ``supernodes`` SuperNodes on loopback, with the ``flwr`` connection written.

    A context manager: entering starts everything and waits until it listens; leaving stops every process it
    started, and their descendants, by PID, also after an exception, Ctrl-C or SIGTERM (which, while the
    federation runs in the main thread with no other handler, raises ``KeyboardInterrupt``).

    Parameters
    ----------
    out : Path
        Run folder; ``logs/``, ``.flwr/`` (FLWR_HOME) and, with TLS, ``certs/`` are made inside it, and with
        node authentication ``node-keys/`` (0700; private keys 0600).
    supernodes : int
        Number of SuperNodes; node ``i`` gets ``partition-id=i num-partitions=supernodes``.
    tls : bool, default False
        Serve every API over TLS with certificates made for this run (``simulations.deploy.tls``). Implied by
        ``node_auth``.
    node_auth : bool, default True
        Admit only SuperNodes whose public keys this federation registered (its own). Flower 1.42 requires TLS
        for this, so it turns ``tls`` on.
    start_timeout : float, default 90
        Seconds to wait for the SuperLink and the SuperNodes to listen.
    """

    def __init__(
        self,
        out: Path,
        *,
        supernodes: int,
        tls: bool = False,
        node_auth: bool = True,
        start_timeout: float = START_TIMEOUT_S,
    ) -> None:
        if isinstance(supernodes, bool) or not isinstance(supernodes, int) or supernodes < 1:
            raise ValueError(f"supernodes must be a positive whole number, got {supernodes!r}")
        if supernodes > MAX_SUPERNODES:
            raise ValueError(
                f"supernodes={supernodes} is more than {MAX_SUPERNODES}: each SuperNode is two Python processes "
                "on this machine (plus a ClientApp process per message); use `fedcompress simulate` instead"
            )
        if not (math.isfinite(start_timeout) and start_timeout > 0):
            raise ValueError(f"start_timeout must be a positive number of seconds, got {start_timeout!r}")
        check_out_dir(out)
        self.out, self.supernodes, self.start_timeout = out, supernodes, start_timeout
        self.node_auth, self.tls = node_auth, tls or node_auth
        self.logs, self.flwr_home = out / "logs", out / ".flwr"
        self.started = time.monotonic()
        self.port = 0
        self.certs: Certificates | None = None
        self.node_keys: list[NodeKey] = []
        self.node_ids: list[int] = []  # as registered, in SuperNode order (with node authentication)
        self._tools = {name: flower_tool(name) for name in ("flower-superlink", "flower-supernode", "flwr")}
        self._procs: ProcessGroup | None = None
        self._own_sigterm = False

    def __enter__(self) -> LocalFederation:
        self._own_sigterm = sigterm_to_interrupt()
        try:
            self.start()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.stop()
        finally:
            if self._own_sigterm:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)

    @property
    def procs(self) -> ProcessGroup:
        """The process registry (only while started)."""
        if self._procs is None:
            raise RuntimeError("the federation is not started")
        return self._procs

    def say(self, text: str) -> None:
        """Print one progress line with the seconds since the federation was created."""
        _say(self.started, text)

    # ------------------------------------------------------------------ start and stop
    def start(self) -> None:
        """Start the SuperLink, write ``$FLWR_HOME/config.toml``, register the node keys, start the SuperNodes."""
        self.logs.mkdir(parents=True, exist_ok=True)
        self.flwr_home.mkdir(parents=True, exist_ok=True)
        bin_dir = str(Path(self._tools["flower-superlink"]).parent)
        env = {
            **os.environ,
            **flower_env(self.flwr_home),
            "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),  # Flower spawns flower-superexec
            TOKEN_VARIABLE: uuid.uuid4().hex,
        }
        self._procs = ProcessGroup(self.logs, env, TOKEN_VARIABLE, lambda text: _say(self.started, text))
        if self.tls:
            from simulations.deploy.tls import make_certificates

            self.certs = make_certificates(self.out / "certs")
        if self.node_auth:
            self.node_keys = make_node_keys(self.out / "node-keys", self.supernodes)
        ports = free_ports(1 + self.supernodes)
        self.port = ports[0]
        self._start_superlink()
        self._write_connection()
        if self.node_auth:
            self._register_nodes()
        self._start_supernodes(ports[1:])

    def stop(self) -> None:
        """Stop every process started so far (idempotent)."""
        if self._procs is not None:
            self._procs.stop()

    def _tls(self) -> Certificates:
        if self.certs is None:
            raise RuntimeError("TLS certificates are made in start() when tls=True")
        return self.certs

    def _server_tls_args(self) -> list[str]:
        c = self._tls()
        return [
            "--ssl-ca-certfile",
            str(c.ca_cert),
            "--ssl-certfile",
            str(c.server_cert),
            "--ssl-keyfile",
            str(c.server_key),
        ]

    def _waitlistening(self, roles_ports: dict[str, int]) -> None:
        deadline = time.monotonic() + self.start_timeout
        waiting = dict(roles_ports)
        while waiting:
            self.procs.check_alive(list(roles_ports))
            waiting = {role: port for role, port in waiting.items() if not listening(port)}
            if waiting and time.monotonic() > deadline:
                log = self.logs / f"{next(iter(waiting))}.log"
                raise RunError(
                    f"{', '.join(waiting)} did not listen within {self.start_timeout:.0f} s; "
                    f"last lines of {log}:\n{tail_log(log)}"
                )
            if waiting:
                time.sleep(0.2)

    def _start_superlink(self) -> None:
        cmd = [
            self._tools["flower-superlink"],
            "--host",
            HOST,
            "--port",
            str(self.port),
            "--disable-runtime-dependency-installation",
            *(self._server_tls_args() if self.tls else ["--insecure"]),
            *(["--enable-supernode-auth"] if self.node_auth else []),
        ]
        popen = self.procs.start("superlink", cmd)
        self._waitlistening({"superlink": self.port})
        mode = ("TLS" if self.tls else "insecure") + (", SuperNode authentication" if self.node_auth else "")
        self.say(f"started superlink on {HOST}:{self.port} (pid {popen.pid}, {mode})")

    def _register(self, key: NodeKey) -> int:
        """``flwr supernode register`` one public key; return the node ID the SuperLink gave it."""
        result = self.flwr(
            "supernode", "register", str(key.public_key), CONNECTION, "--name", key.name, "--format", "json"
        )
        reply = cli_json(result)
        if result.returncode != 0 or not reply.get("success") or not reply.get("node-id"):
            text = strip_colours(result.stdout + result.stderr).strip()[-2000:]
            raise RunError(f"flwr supernode register {key.public_key} failed (exit code {result.returncode}): {text}")
        return int(reply["node-id"])

    def _register_nodes(self) -> None:
        """Register every SuperNode's public key with the SuperLink (a few ``flwr`` processes at a time)."""
        with concurrent.futures.ThreadPoolExecutor(max_workers=_REGISTER_WORKERS) as pool:
            self.node_ids = list(pool.map(self._register, self.node_keys))
        self.say(f"registered {len(self.node_ids)} SuperNode public keys (keys in {self.out / 'node-keys'})")

    def _start_supernodes(self, ports: list[int]) -> None:
        n = self.supernodes
        tls = (
            ["--root-certificates", str(self._tls().ca_cert), *self._server_tls_args()] if self.tls else ["--insecure"]
        )
        for i, port in enumerate(ports):
            self.procs.start(
                f"supernode-{i}",
                [
                    self._tools["flower-supernode"],
                    "--superlink",
                    f"{HOST}:{self.port}",
                    "--host",
                    HOST,
                    "--port",
                    str(port),
                    "--node-config",  # each site keeps its client state in its own folder, as a real site would
                    f'partition-id={i} num-partitions={n} state-dir="{self.out / "nodes" / f"node-{i}"}"',
                    *tls,
                    *(["--auth-supernode-private-key", str(self.node_keys[i].private_key)] if self.node_auth else []),
                ],
            )
        self._waitlistening({f"supernode-{i}": port for i, port in enumerate(ports)})
        self.say(f"{n} supernodes up (runtime ports {', '.join(map(str, ports))})")

    def _write_connection(self) -> None:
        auth = f"root-certificates = {toml_value(str(self._tls().ca_cert))}\n" if self.tls else "insecure = true\n"
        (self.flwr_home / "config.toml").write_text(
            f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
            f"address = {toml_value(f'{HOST}:{self.port}')}\n{auth}"
        )

    # ------------------------------------------------------------------ runs
    def flwr(self, *args: str, timeout: float = CLI_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
        """Run ``flwr <args>`` with this federation's FLWR_HOME (its connection is named ``CONNECTION``)."""
        return self.procs.run([self._tools["flwr"], *args], timeout=timeout)

    def submit(self, settings: Mapping[str, Any], app: Path = APP_ROOT) -> int:
        """``flwr run`` the app (a staged copy, see ``stage_app``) with ``settings`` as its run config.

        Returns the run ID, and starts ``flwr log --stream`` into ``logs/serverapp.log``.
        """
        config_file = self.logs / "run-config.toml"
        config_file.write_text(toml_document(settings))
        staged = stage_app(app, self.flwr_home / "staged-app", exclude=(self.out,))
        result = self.flwr("run", str(staged), CONNECTION, "--run-config", str(config_file), "--format", "json")
        (self.logs / "flwr-run.log").write_text(result.stdout + result.stderr)
        reply = cli_json(result)
        if result.returncode != 0 or not reply.get("success") or not reply.get("run-id"):
            raise RunError(
                f"flwr run did not start a run (exit code {result.returncode}): "
                f"{reply.get('error-message') or tail_log(self.logs / 'flwr-run.log', 15)}"
            )
        run_id = int(reply["run-id"])
        self.say(f"submitted run {run_id} (app {app}, settings {config_file})")
        self.procs.start(
            "flwr-log", [self._tools["flwr"], "log", str(run_id), CONNECTION, "--stream"], log_name="serverapp"
        )
        return run_id

    def run_info(self, run_id: int) -> dict[str, Any]:
        """The run's entry in ``flwr ls --format json``: its ``status`` is the truth, not flwr run's exit."""
        result = self.flwr("ls", CONNECTION, "--run-id", str(run_id), "--format", "json")
        runs = cli_json(result).get("runs") or []
        if result.returncode != 0 or not runs:
            raise RunError(
                f"flwr ls failed for run {run_id} (exit code {result.returncode}): "
                f"{(result.stdout + result.stderr).strip()[-2000:]}"
            )
        return dict(runs[0])

    def nodes(self) -> list[dict[str, Any]]:
        """The SuperNodes the SuperLink knows (``flwr supernode ls``), each with its ``status``."""
        result = self.flwr("supernode", "ls", CONNECTION, "--format", "json")
        return list(cli_json(result).get("nodes") or [])
