"""``fedcompress simulate``: one federation on Flower's simulation engine (Ray), in this process."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from fedcompress.config import RunConfig
from fedcompress.errors import RunError
from fedcompress.federation.results import read_result
from simulations.flower_env import prepare_flower_env

__all__ = ["default_out_dir", "run_apps", "simulate"]


def default_out_dir() -> Path:
    """A fresh run folder under ./runs."""
    return (Path("runs") / time.strftime("run-%Y%m%d-%H%M%S")).resolve()


def simulate(cfg: RunConfig, *, cpus_per_client: float = 1.0, quiet: bool = True) -> dict[str, Any]:
    """Run ``cfg`` with ``num-clients`` virtual SuperNodes and return the parsed ``result.json``.

    Parameters
    ----------
    cfg : RunConfig
        The run; an empty ``out-dir`` becomes a fresh folder under ./runs.
    cpus_per_client : float
        Ray CPUs per virtual client (fractions allowed); on 2 cores, 1 gives two clients at a time.
    quiet : bool
        Hide Flower's and Ray's INFO logs (our progress lines still print).
    """
    from clients.app import build_client_app
    from server.app import build_server_app

    out = Path(cfg.out_dir).resolve() if cfg.out_dir else default_out_dir()
    cfg = cfg.replace(out_dir=str(out))
    # Only this harness may opt clients in to noise from the public seed (``dp-randomness = "seeded"``).
    client_app = build_client_app(allow_seeded_noise=cfg.dp_randomness == "seeded", state_dir=out)
    result = run_apps(build_server_app(cfg), client_app, cfg, cpus_per_client=cpus_per_client, quiet=quiet)
    if result["status"] == "running":
        raise RunError(f"the simulation stopped before finishing (status 'running' in {out / 'result.json'})")
    return result


def run_apps(
    server_app: Any, client_app: Any, cfg: RunConfig, *, cpus_per_client: float = 1.0, quiet: bool = True
) -> dict[str, Any]:
    """Run a ServerApp and a ClientApp on ``num-clients`` virtual SuperNodes; return ``cfg.out_dir``'s result.

    The one place a federation meets Flower's simulation engine (our apps, and the Flower DP baseline's).
    ``cfg.out_dir`` must be absolute; Flower's home goes inside it.
    """
    from flwr.simulation import run_simulation

    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    prepare_flower_env(out / ".flwr")
    if quiet:
        logging.getLogger("flwr").setLevel(logging.WARNING)
    run_simulation(
        server_app=server_app,
        client_app=client_app,
        num_supernodes=cfg.num_clients,
        backend_config={
            "client_resources": {"num_cpus": cpus_per_client},
            "init_args": {"logging_level": 30, "log_to_driver": True},
        },
        verbose_logging=False,
    )
    try:
        return read_result(out)
    except FileNotFoundError as e:
        raise RunError(f"the simulation wrote no result in {out}; see the log above") from e
