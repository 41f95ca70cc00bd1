"""Environment every Flower process we start needs (see notes/flower-1.42.md).

Without ``FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION`` a SuperLink builds a fresh venv per run and pulls a
CUDA torch; without our own ``FLWR_HOME`` runs share state with the user's other Flower work.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["flower_env", "prepare_flower_env"]


def flower_env(flwr_home: Path) -> dict[str, str]:
    """The variables to set, for a given FLWR_HOME."""
    return {
        "FLWR_HOME": str(flwr_home),
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        "RAY_DISABLE_USAGE_STATS": "1",
        "RAY_DEDUP_LOGS": "0",
        "PYTHONUNBUFFERED": "1",
    }


def prepare_flower_env(flwr_home: Path) -> dict[str, str]:
    """Set the variables in this process (for the simulation engine) and return them."""
    flwr_home.mkdir(parents=True, exist_ok=True)
    env = flower_env(flwr_home)
    os.environ.update(env)
    return env
