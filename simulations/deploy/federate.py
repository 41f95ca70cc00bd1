"""``fedcompress federate``: a real multi-process federation on loopback, one SuperNode per data partition.

The federation is :class:`~simulations.deploy.federation.LocalFederation`; this module checks the arguments
before any process starts, holds the run folder's lock, submits the run and follows it to its result.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from fedcompress.config import RunConfig
from fedcompress.errors import RunError
from fedcompress.federation.results import RESULT_FILE, read_result
from fedcompress.files import FolderLock
from simulations.deploy.federation import START_TIMEOUT_S, LocalFederation
from simulations.deploy.progress import wait_for_run
from simulations.processes import tail_log
from simulations.run.folder import RUN_LOCK, check_out_dir, default_out_dir

__all__ = ["federate"]


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
    check_out_dir(out)
    if not cfg.resume and (out / RESULT_FILE).exists():
        raise ValueError(
            f"out-dir {str(out)!r} already holds a run ({RESULT_FILE}); "
            "pass resume=true to continue it or choose another folder"
        )
    cfg = cfg.replace(out_dir=str(out))
    deadline = time.monotonic() + timeout
    start_timeout = min(START_TIMEOUT_S, timeout)
    federation = LocalFederation(out, supernodes=count, tls=tls, node_auth=node_auth, start_timeout=start_timeout)
    with FolderLock(out, name=RUN_LOCK, what="run"), federation as fed:  # one run writes into a folder at a time
        run_id = fed.submit(cfg.to_dict())
        info = wait_for_run(fed, run_id, deadline)
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
