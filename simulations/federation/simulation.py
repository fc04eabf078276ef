"""Federated pretraining in Flower's simulation engine: one virtual SuperNode per site directory."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any

import pandas as pd

from client.app import make_client_app
from server.app import make_server_app
from shared_model.contract.run_config import FederatedRunConfig
from simulations.federation.adversary import AdversaryMod

log = logging.getLogger(__name__)


def run_federated_simulation(
    site_dirs: list[Path],
    settings: FederatedRunConfig,
    *,
    parallel_clients: int = 2,
    adversary: str = "",
    ray_address: str = "",
) -> pd.DataFrame:
    """Run the ServerApp and one ClientApp per site; returns the per-round table (rounds.csv).

    `parallel_clients` ClientApps run at once, each with cores / parallel_clients CPUs;
    `adversary` makes sites misbehave (simulations.federation.adversary; simulation only). With
    `ray_address` ("auto" or HOST:PORT of a cluster started by `ray start --head`, other machines
    joined with `ray start --address`), the ClientApps run on that cluster, one CPU each, wherever
    Ray places them; every node needs this project installed and the site directories at the same
    paths."""
    from flwr.simulation import run_simulation

    if len(site_dirs) < settings.min_available_clients:
        raise ValueError(f"{len(site_dirs)} sites given, min-available-clients is {settings.min_available_clients}")
    overrides: dict[str, Any] = {
        **settings.to_run_config(),
        "data-paths": ",".join(str(Path(p).resolve()) for p in site_dirs),
        "run-dir": str(Path(settings.run_dir).resolve()),
    }
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    cores = os.cpu_count() or 2
    backend_config = {
        "client_resources": {"num_cpus": max(1, cores // max(1, parallel_clients)), "num_gpus": 0.0},
        "init_args": {"num_cpus": cores, "include_dashboard": False},
    }
    if ray_address:  # the cluster has its own CPUs: one per ClientApp
        backend_config = {
            "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
            "init_args": {"address": ray_address},
        }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        client_app = make_client_app(overrides, mods=[AdversaryMod(adversary)] if adversary else [])
        run_simulation(
            make_server_app(overrides), client_app, num_supernodes=len(site_dirs), backend_config=backend_config
        )
    rounds = Path(settings.run_dir) / "rounds.csv"
    final = Path(settings.run_dir) / "checkpoint" / "manifest.json"
    if not final.exists():
        raise RuntimeError(f"the federated run did not finish: {final} is missing (see the log above)")
    return pd.read_csv(rounds)
