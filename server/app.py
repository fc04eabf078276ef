"""The Flower ServerApp: `flwr run .` and the simulation runner both start here (docs/architecture.md §4)."""

from __future__ import annotations

import logging
import os
from typing import Any

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from server.exchange import short_object_retries
from server.federation import run_federation
from server.superlink import SIGNING_KEY_ENV
from shared_model.contract.run_config import FederatedRunConfig
from shared_model.contract.signing import Signer, load_signer

log = logging.getLogger(__name__)


def signer_for(settings: FederatedRunConfig) -> Signer | None:
    """The run config's `signing-key`, else the key the server operator exported (`claimpt server
    start` sets $CLAIMPT_SIGNING_KEY for the SuperLink and so for every ServerApp it spawns)."""
    path = settings.signing_key or os.environ.get(SIGNING_KEY_ENV, "")
    if not path:
        log.warning("no signing key: checkpoints are written unsigned (sites cannot verify them)")
        return None
    log.info("signing every checkpoint manifest with %s", path)
    return load_signer(path)


def make_server_app(overrides: dict[str, Any] | None = None, signer: Signer | None = None) -> ServerApp:
    """A ServerApp whose run config is Flower's, updated by `overrides` (used by simulations)."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        settings = FederatedRunConfig.from_run_config({**dict(context.run_config), **(overrides or {})})
        if not settings.run_dir:
            raise ValueError("run-dir must be set in the run config (where checkpoints are written)")
        short_object_retries()
        run_federation(grid, settings, signer=signer or signer_for(settings))

    return app


app = make_server_app()
