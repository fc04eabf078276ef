"""The Flower ServerApp: `flwr run .` and the simulation runner both start here (DESIGN 4)."""

from __future__ import annotations

import logging
from typing import Any

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from server.federation import run_federation
from shared_model.run_config import FederatedRunConfig

log = logging.getLogger(__name__)


def make_server_app(overrides: dict[str, Any] | None = None, signer=None) -> ServerApp:
    """A ServerApp whose run config is Flower's, updated by `overrides` (used by simulations)."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        settings = FederatedRunConfig.from_run_config({**dict(context.run_config), **(overrides or {})})
        if not settings.run_dir:
            raise ValueError("run-dir must be set in the run config (where checkpoints are written)")
        run_federation(grid, settings, signer=signer)

    return app


app = make_server_app()
