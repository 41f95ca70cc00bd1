"""``fedcompress federate``: a real multi-process federation on loopback, one SuperNode per data partition.

What runs (Flower 1.42; see notes/flower-1.42.md):

- one ``flower-superlink`` on a free loopback port. In 1.42 that single HTTP port serves the Fleet API
  (SuperNodes), the Control API (the ``flwr`` CLI) and the Runtime API (its own ``flower-superexec``, which
  starts ``flwr-serverapp`` for the run);
- SuperNode authentication (on by default): the SuperLink runs with ``--enable-supernode-auth``, which 1.42
  accepts only over TLS, so TLS is then on too. Each SuperNode gets a key pair made for this run in
  ``node-keys/`` (``simulations.node_auth``); its public key is registered with ``flwr supernode register``
  before the SuperNode starts with ``--auth-supernode-private-key``. A SuperNode with any other key, or none,
  is refused (``Failed to activate SuperNode`` / ``must be registered via the CLI``);
- ``N`` ``flower-supernode`` processes, each with its own Runtime API port (``--port``; its SuperExec starts a
  fresh ``flwr-clientapp`` per message) and ``--node-config "partition-id=i num-partitions=N"``;
- the ``flwr`` CLI, pointed at the SuperLink through connection ``fedcompress-local`` in
  ``$FLWR_HOME/config.toml``: ``flwr run`` submits the app (the repository root, copied without the venv and
  other git-ignored folders, see ``stage_app``) with every setting in ``logs/run-config.toml``,
  ``flwr log --stream`` copies the ServerApp's output to ``logs/serverapp.log``, and ``flwr ls`` gives the
  run's true status (``flwr run`` exits 0 even when the ServerApp crashes).

Every process gets the same environment (``flower_env``) plus a random token, so that on success, failure,
timeout or Ctrl-C each of them, and every descendant Flower started (SuperExecs detach into their own
sessions), is found and stopped by PID: SIGTERM, then SIGKILL after a grace period. PIDs are written to
``logs/pids.txt`` while the federation runs. If this process is itself killed (even by SIGKILL), Linux sends
the SuperLink and SuperNodes SIGTERM (PR_SET_PDEATHSIG), and Flower's children follow their parents.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedcompress.config import RunConfig, toml_document, toml_value
from fedcompress.errors import RunError
from fedcompress.federation.results import RESULT_FILE, read_result
from fedcompress.files import FolderLock
from simulations.flower_env import flower_env
from simulations.node_auth import NodeKey, make_node_keys
from simulations.processes import (
    CLI_TIMEOUT_S,
    ProcessGroup,
    sigterm_to_interrupt,
    strip_colours,
    tail_log,
)
from simulations.simulate import RUN_LOCK, default_out_dir

if TYPE_CHECKING:
    from simulations.tls import Certificates

__all__ = [
    "CONNECTION",
    "MAX_SUPERNODES",
    "TOKEN_VARIABLE",
    "LocalFederation",
    "federate",
    "stage_app",
]

CONNECTION = "fedcompress-local"
MAX_SUPERNODES = 64
TOKEN_VARIABLE = "FEDCOMPRESS_FEDERATION_TOKEN"
APP_ROOT = Path(__file__).resolve().parents[1]
_HOST = "127.0.0.1"
_START_TIMEOUT_S = 90.0
_LS_EVERY_S = 15.0
_POLL_S = 3.0
_FAB_SUFFIXES = (".py", ".toml", ".md", ".yaml", ".yml", ".json", ".jsonl")
_FAB_NAMES = (".gitignore", ".editorconfig", "LICENSE")
_PROGRESS = re.compile(r"^(\[round \d+/\d+\]|round \d+: |resuming |stopped before round|result: )")
_REGISTER_WORKERS = 4  # `flwr supernode register` processes at a time


def _say(started: float, text: str) -> None:
    print(f"[federate {time.monotonic() - started:6.1f}s] {text}", flush=True)


# ====================================================================================== helpers
def _free_ports(count: int) -> list[int]:
    """``count`` distinct loopback ports that are free now (held together so none repeats)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((_HOST, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _check_out_dir(out: Path) -> None:
    """Raise ``ValueError`` naming the path if ``out`` is a file, or cannot be made because a parent is a file."""
    for path in (out, *out.parents):
        if path.exists():
            if path.is_dir():
                return
            what = "is a file, not a folder" if path == out else f"cannot be made: {str(path)!r} is a file"
            raise ValueError(f"out-dir {str(out)!r} {what}; choose a folder for the run")


def _listening(port: int) -> bool:
    try:
        with socket.create_connection((_HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def _tool(name: str) -> str:
    """A Flower executable: next to this interpreter (the venv), else on PATH."""
    local = Path(sys.executable).parent / name
    found = str(local) if local.is_file() else shutil.which(name)
    if found is None:
        raise RunError(f"cannot find {name!r} next to {sys.executable} or on PATH; is flwr installed?")
    return found


def stage_app(root: Path, dest: Path, *, exclude: tuple[Path, ...] = ()) -> Path:
    """Copy what ``flwr run`` could pack from the app at ``root`` into ``dest`` (replaced); return ``dest``.

    ``flwr run <root>`` lists every file under the root, the whole virtual environment included, before it
    filters them: 6 CPU-seconds here, 25 s of wall time on a busy 2-core machine. This copy skips git-ignored
    folders, the folders in ``exclude`` (a run folder inside the repository must not be packed) and files of
    kinds a FAB never holds; Flower still applies its own rules, so the FAB is otherwise the same.
    """
    import pathspec

    ignore = root / ".gitignore"
    lines = ignore.read_text().splitlines() if ignore.is_file() else []
    spec = pathspec.GitIgnoreSpec.from_lines(lines)
    skip = {dest.resolve(), *(path.resolve() for path in exclude)}
    if dest.exists():
        shutil.rmtree(dest)
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        rel = here.relative_to(root)
        dirnames[:] = [
            d
            for d in dirnames
            if d not in (".git", ".flwr")
            and not (here / d).is_symlink()
            and (here / d).resolve() not in skip
            and not spec.match_file(f"{(rel / d).as_posix()}/")
        ]
        for name in filenames:
            if (name.endswith(_FAB_SUFFIXES) or name in _FAB_NAMES) and not (here / name).is_symlink():
                (dest / rel).mkdir(parents=True, exist_ok=True)
                shutil.copy2(here / name, dest / rel / name)
    return dest


def _cli_json(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The JSON object a ``flwr ... --format json`` command printed, or ``{}``."""
    text = result.stdout
    start = text.find("{")
    try:
        parsed = json.loads(text[start:]) if start >= 0 else {}
    except json.JSONDecodeError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


class _ProgressTail:
    """Echo the ServerApp's progress lines as ``flwr log --stream`` appends them to its log."""

    def __init__(self, path: Path, say: Callable[[str], None]):
        self.path, self.say, self.offset = path, say, 0

    def echo(self) -> None:
        try:
            with self.path.open("rb") as f:
                f.seek(self.offset)
                data = f.read()
        except OSError:
            return
        end = data.rfind(b"\n") + 1
        self.offset += end
        for line in data[:end].decode(errors="replace").splitlines():
            line = strip_colours(line).strip()
            if _PROGRESS.match(line):
                self.say(f"server: {line}")


# ====================================================================================== the federation
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
        Serve every API over TLS with certificates made for this run (``simulations.tls``). Implied by
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
        start_timeout: float = _START_TIMEOUT_S,
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
        _check_out_dir(out)
        self.out, self.supernodes, self.start_timeout = out, supernodes, start_timeout
        self.node_auth, self.tls = node_auth, tls or node_auth
        self.logs, self.flwr_home = out / "logs", out / ".flwr"
        self.started = time.monotonic()
        self.port = 0
        self.certs: Certificates | None = None
        self.node_keys: list[NodeKey] = []
        self.node_ids: list[int] = []  # as registered, in SuperNode order (with node authentication)
        self._tools = {name: _tool(name) for name in ("flower-superlink", "flower-supernode", "flwr")}
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
            from simulations.tls import make_certificates

            self.certs = make_certificates(self.out / "certs")
        if self.node_auth:
            self.node_keys = make_node_keys(self.out / "node-keys", self.supernodes)
        ports = _free_ports(1 + self.supernodes)
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

    def _wait_listening(self, roles_ports: dict[str, int]) -> None:
        deadline = time.monotonic() + self.start_timeout
        waiting = dict(roles_ports)
        while waiting:
            self.procs.check_alive(list(roles_ports))
            waiting = {role: port for role, port in waiting.items() if not _listening(port)}
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
            _HOST,
            "--port",
            str(self.port),
            "--disable-runtime-dependency-installation",
            *(self._server_tls_args() if self.tls else ["--insecure"]),
            *(["--enable-supernode-auth"] if self.node_auth else []),
        ]
        popen = self.procs.start("superlink", cmd)
        self._wait_listening({"superlink": self.port})
        mode = ("TLS" if self.tls else "insecure") + (", SuperNode authentication" if self.node_auth else "")
        self.say(f"started superlink on {_HOST}:{self.port} (pid {popen.pid}, {mode})")

    def _register(self, key: NodeKey) -> int:
        """``flwr supernode register`` one public key; return the node ID the SuperLink gave it."""
        result = self.flwr(
            "supernode", "register", str(key.public_key), CONNECTION, "--name", key.name, "--format", "json"
        )
        reply = _cli_json(result)
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
                    f"{_HOST}:{self.port}",
                    "--host",
                    _HOST,
                    "--port",
                    str(port),
                    "--node-config",  # each site keeps its client state in its own folder, as a real site would
                    f'partition-id={i} num-partitions={n} state-dir="{self.out / "nodes" / f"node-{i}"}"',
                    *tls,
                    *(["--auth-supernode-private-key", str(self.node_keys[i].private_key)] if self.node_auth else []),
                ],
            )
        self._wait_listening({f"supernode-{i}": port for i, port in enumerate(ports)})
        self.say(f"{n} supernodes up (runtime ports {', '.join(map(str, ports))})")

    def _write_connection(self) -> None:
        auth = f"root-certificates = {toml_value(str(self._tls().ca_cert))}\n" if self.tls else "insecure = true\n"
        (self.flwr_home / "config.toml").write_text(
            f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
            f"address = {toml_value(f'{_HOST}:{self.port}')}\n{auth}"
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
        reply = _cli_json(result)
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
        runs = _cli_json(result).get("runs") or []
        if result.returncode != 0 or not runs:
            raise RunError(
                f"flwr ls failed for run {run_id} (exit code {result.returncode}): "
                f"{(result.stdout + result.stderr).strip()[-2000:]}"
            )
        return dict(runs[0])

    def nodes(self) -> list[dict[str, Any]]:
        """The SuperNodes the SuperLink knows (``flwr supernode ls``), each with its ``status``."""
        result = self.flwr("supernode", "ls", CONNECTION, "--format", "json")
        return list(_cli_json(result).get("nodes") or [])

    def wait(self, run_id: int, deadline: float) -> dict[str, Any]:
        """Wait until the run finishes or ``deadline`` (``time.monotonic()``) passes; echo server progress.

        ``flwr ls`` starts a whole Python process (about 1.5 CPU-seconds), so it is asked every
        ``_LS_EVERY_S`` seconds, and at once when ``flwr log --stream`` ends (it ends with the run).
        """
        tail = _ProgressTail(self.logs / "serverapp.log", self.say)
        watched = ["superlink", *(f"supernode-{i}" for i in range(self.supernodes))]
        stream = self.procs.popens["flwr-log"]
        status, last_ls, misses = "", -math.inf, 0
        while True:
            self.procs.check_alive(watched)
            tail.echo()
            now = time.monotonic()
            if now - last_ls >= (_LS_EVERY_S if stream.poll() is None else _POLL_S):
                last_ls = now
                try:
                    info, misses = self.run_info(run_id), 0
                except (RunError, subprocess.TimeoutExpired):
                    misses += 1
                    if misses >= 3:
                        raise
                    info = {"status": status}
                if str(info.get("status", "")).startswith("finished"):
                    self._drain_log(run_id, tail)
                    self.say(f"run {run_id} {info['status']} ({info.get('status-details', '')})")
                    return info
                status = str(info.get("status", ""))
                elapsed = float(info.get("elapsed") or 0.0)
                self.say(f"run {run_id} status {status or '?'} (run elapsed {elapsed:.0f} s)")
                self.procs.members()
                self.procs.record()
            if now >= deadline:
                self.flwr("stop", str(run_id), CONNECTION, timeout=30)
                log = self.logs / "serverapp.log"
                raise RunError(
                    f"run {run_id} did not finish before the timeout (status {status!r}); "
                    f"last lines of {log}:\n{tail_log(log)}"
                )
            time.sleep(max(0.0, min(1.0, deadline - now)))

    def _drain_log(self, run_id: int, tail: _ProgressTail) -> None:
        """Let ``flwr log --stream`` catch up (it ends with the run); fall back to ``flwr log --show``."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.procs.popens["flwr-log"].wait(timeout=10)
        log = self.logs / "serverapp.log"
        if not log.is_file() or log.stat().st_size == 0:
            shown = self.flwr("log", str(run_id), CONNECTION, "--show")
            log.write_text(shown.stdout + shown.stderr)
        tail.echo()


def federate(
    cfg: RunConfig,
    *,
    supernodes: int | None = None,
    tls: bool = False,
    node_auth: bool = True,
    timeout: float = 1800.0,
) -> dict[str, Any]:
    """Run ``cfg`` as a real multi-process federation on loopback and return the parsed ``result.json``.

    Parameters
    ----------
    cfg : RunConfig
        The run; an empty ``out-dir`` becomes a fresh folder under ./runs. Logs go to ``<out>/logs``.
    supernodes : int or None
        Number of SuperNodes; must equal ``num-clients`` (each SuperNode serves one partition). Default: that.
    tls : bool
        Serve the SuperLink's APIs (and each SuperNode's Runtime API) over TLS with certificates for this run.
        Implied by ``node_auth``.
    node_auth : bool
        SuperNode authentication: only the SuperNodes started here, with keys registered for this run, may
        join (see ``LocalFederation``). Needs TLS, so it turns TLS on.
    timeout : float
        Seconds for the whole federation, start-up included; then the run is stopped and ``RunError`` raised.

    Raises
    ------
    ValueError
        A bad argument, found before any process starts.
    RunError
        A process died, the run ended other than ``finished:completed``, the timeout passed, or no result.
    """
    if cfg.private and cfg.dp_randomness != "secret":
        raise ValueError(
            f"dp-randomness={cfg.dp_randomness!r} derives DP noise from the public seed (no guarantee against anyone "
            "who knows it); a deployment refuses it: use 'secret' (the default), or 'fedcompress simulate'"
        )
    count = cfg.num_clients if supernodes is None else supernodes
    if isinstance(count, bool) or not isinstance(count, int) or count != cfg.num_clients:
        raise ValueError(
            f"supernodes={supernodes!r} must equal num-clients={cfg.num_clients}: "
            "each SuperNode serves one data partition"
        )
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, int | float)
        or not (math.isfinite(timeout) and timeout > 0)
    ):
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    out = Path(cfg.out_dir).resolve() if cfg.out_dir else default_out_dir()
    _check_out_dir(out)
    if not cfg.resume and (out / RESULT_FILE).exists():
        raise ValueError(
            f"out-dir {str(out)!r} already holds a run ({RESULT_FILE}); "
            "pass resume=true to continue it or choose another folder"
        )
    cfg = cfg.replace(out_dir=str(out))
    deadline = time.monotonic() + timeout
    start_timeout = min(_START_TIMEOUT_S, timeout)
    federation = LocalFederation(out, supernodes=count, tls=tls, node_auth=node_auth, start_timeout=start_timeout)
    with FolderLock(out, name=RUN_LOCK, what="run"), federation as fed:  # one run writes into a folder at a time
        run_id = fed.submit(cfg.to_dict())
        info = fed.wait(run_id, deadline)
    if info["status"] != "finished:completed":
        log = out / "logs" / "serverapp.log"
        raise RunError(
            f"run {run_id} ended {info['status']!r} ({info.get('status-details', '')}); "
            f"last lines of {log} (also see superlink.log there):\n{tail_log(log)}"
        )
    try:
        return read_result(out)
    except FileNotFoundError as e:
        raise RunError(f"run {run_id} completed but wrote no {RESULT_FILE} in {out}") from e
