"""The Flower ServerApp: ``flwr run`` reads settings from the run config; the Python API passes a RunConfig."""

from __future__ import annotations

import logging

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedcompress.config import RunConfig
from server.loop import run_server

__all__ = ["app", "build_server_app"]


def _configure_logging() -> None:
    logging.getLogger("fedcompress").setLevel(logging.INFO)


def build_server_app(cfg: RunConfig | None = None) -> ServerApp:
    """A ServerApp that runs ``cfg`` (or, when None, the settings in ``context.run_config``)."""
    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        _configure_logging()
        run_server(grid, cfg if cfg is not None else RunConfig.from_mapping(dict(context.run_config)))

    return server_app


app = build_server_app()
