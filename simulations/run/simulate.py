"""``fedcompress simulate``: one federation on Flower's simulation engine (Ray), in this process.

The run folder is checked before Ray starts (a file in its place, a finished run, a corrupt checkpoint to resume
all fail in one line, in a second) and locked while the run writes to it: a second run into the same folder is
refused while the first lives, and the lock goes with the process however it ends.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fedcompress.config import RunConfig
from fedcompress.errors import RunError
from fedcompress.federation.results import read_result
from fedcompress.files import FolderLock
from simulations.deploy.flower_env import prepare_flower_env
from simulations.run.folder import RUN_LOCK, check_run_folder, default_out_dir, make_run_folder

__all__ = ["run_apps", "simulate"]


def simulate(
    cfg: RunConfig, *, cpus_per_client: float = 1.0, gpus_per_client: float = 0.0, quiet: bool = True
) -> dict[str, Any]:
    """Run ``cfg`` with ``num-clients`` virtual SuperNodes and return the parsed ``result.json``.

    Parameters
    ----------
    cfg : RunConfig
        The run; an empty ``out-dir`` becomes a fresh folder under ./runs.
    cpus_per_client : float
        Ray CPUs per virtual client (fractions allowed); on 2 cores, 1 gives two clients at a time.
    gpus_per_client : float
        Ray GPUs per virtual client (0.5: two clients share one GPU); 0 hides GPUs from clients.
    quiet : bool
        Hide Flower's and Ray's INFO logs (our progress lines still print).
    """
    from clients.app import build_client_app
    from server.app import build_server_app

    out = Path(cfg.out_dir).expanduser().resolve() if cfg.out_dir else default_out_dir()
    cfg = cfg.replace(out_dir=str(out))
    # Only this harness may opt clients in to noise from the public seed (``dp-randomness = "seeded"``).
    client_app = build_client_app(allow_seeded_noise=cfg.dp_randomness == "seeded", state_dir=out)
    result = run_apps(
        build_server_app(cfg),
        client_app,
        cfg,
        cpus_per_client=cpus_per_client,
        gpus_per_client=gpus_per_client,
        quiet=quiet,
    )
    if result["status"] == "running":
        raise RunError(f"the simulation stopped before finishing (status 'running' in {out / 'result.json'})")
    return result


class _DropKnownNotices(logging.Filter):
    """Flower's lines that say nothing our own lines do not.

    Its deprecation notice for the engine (we call it on purpose), and the Ray tracebacks of a client that raised
    (the server logs "client error: <reason>" for it, one line per client).
    """

    _KNOWN = (
        "`run_simulation` function is deprecated",
        "An exception was raised when processing a message by RayBackend",
        "ray::ClientAppActor",
        "Traceback (most recent call last)",
    )

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(known in message for known in self._KNOWN)


@contextlib.contextmanager
def _quiet_engine(quiet: bool) -> Iterator[None]:
    """Flower at WARNING, without its deprecation notice for the engine, and without Ray's accelerator tip."""
    if not quiet:
        yield
        return
    flwr_log = logging.getLogger("flwr")
    level, notice = flwr_log.level, _DropKnownNotices()
    flwr_log.setLevel(logging.WARNING)
    flwr_log.addFilter(notice)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Tip: In future versions of Ray", category=FutureWarning)
            yield
    finally:
        flwr_log.removeFilter(notice)
        flwr_log.setLevel(level)


def run_apps(
    server_app: Any,
    client_app: Any,
    cfg: RunConfig,
    *,
    cpus_per_client: float = 1.0,
    gpus_per_client: float = 0.0,
    quiet: bool = True,
) -> dict[str, Any]:
    """Run a ServerApp and a ClientApp on ``num-clients`` virtual SuperNodes; return ``cfg.out_dir``'s result.

    The one place a federation meets Flower's simulation engine (our apps, and the Flower DP baseline's).
    ``cfg.out_dir`` must be absolute; Flower's home goes inside it. The folder is locked (``RUN_LOCK``) and
    checked (:func:`check_run_folder`) before Ray starts.

    Raises
    ------
    ConfigError
        The folder cannot be a run folder, or cannot be resumed.
    RunError
        Another run holds the folder, or the simulation wrote no result.
    """
    from flwr.simulation import run_simulation

    out = Path(cfg.out_dir)
    make_run_folder(out)
    with FolderLock(out, name=RUN_LOCK, what="run"):
        check_run_folder(cfg)
        prepare_flower_env(out / ".flwr")
        with _quiet_engine(quiet):
            run_simulation(
                server_app=server_app,
                client_app=client_app,
                num_supernodes=cfg.num_clients,
                backend_config={
                    "client_resources": {"num_cpus": cpus_per_client, "num_gpus": gpus_per_client},
                    # Actors' own output (Flower's "Manually terminating ClientAppActor" at shutdown) only with
                    # --verbose: a failing client is reported by the server with its reason either way.
                    "init_args": {"logging_level": 30, "log_to_driver": not quiet},
                },
                verbose_logging=False,
            )
        try:
            return read_result(out)
        except FileNotFoundError as e:
            raise RunError(f"the simulation wrote no result in {out}; see the log above") from e
