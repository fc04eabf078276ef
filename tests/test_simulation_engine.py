"""Federated pretraining through Flower's real simulation engine (Ray), as `claimpt` runs it, on a
two-node Ray cluster started outside it (a Ray instance of its own differs only in who starts
Ray), with SecAgg+ on: one engine run for both, as each costs about a minute."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
from typer.testing import CliRunner

from shared_model.contract.checkpoint import load_checkpoint
from shared_model.contract.passport import pseudonym, site_key
from shared_model.runtime.processes import executable, start_group, stop_group
from simulations.cli.app import app
from simulations.federation.local_deployment import free_port


def pretrain_federated(fed_sites: list[Path], out: Path, rounds: int, *extra: str):
    """`claimpt pretrain federated` on the test sites with a small model, as a user runs it."""
    args = [
        "pretrain",
        "federated",
        *[a for p in fed_sites for a in ("--data", str(p))],
        "--out",
        str(out),
        "--num-server-rounds",
        str(rounds),
        "--d-model",
        "16",
        "--ffn-dim",
        "16",
        "--k-anonymity",
        "5",
        *extra,
    ]
    return CliRunner().invoke(app, args)


PLACEMENT = """
import json, ray, ray._private.state as state
ray.init(address=%r, logging_level="ERROR")
cpus = {n["NodeID"]: n["Resources"].get("CPU", 0) for n in ray.nodes() if n["Alive"]}
actors = [a for a in state.actors().values() if "ClientApp" in a["ActorClassName"]]
print(json.dumps([cpus.get(a["Address"]["NodeID"], -1) for a in actors]))
"""


def _client_actor_node_cpus(address: str) -> list[float]:
    """For every ClientApp actor the cluster has run, the CPU count of the node it ran on."""
    result = subprocess.run(
        [sys.executable, "-c", PLACEMENT % address], capture_output=True, text=True, timeout=120, check=True
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def _alive_nodes(address: str) -> int:
    status = subprocess.run(
        [executable("ray"), "status", "--address", address], capture_output=True, text=True, timeout=60, check=False
    )
    healthy = status.stdout.split("Healthy:", 1)[-1].split("Pending:", 1)[0]
    return sum("node_" in line for line in healthy.splitlines()) if status.returncode == 0 else 0


@contextmanager
def two_node_ray_cluster(logs: Path) -> Iterator[str]:
    """`ray start --head` with no CPU for tasks and a second node joining with one CPU, both on
    127.0.0.1 and in the foreground (--block), so stopping their process groups stops exactly
    this cluster. Anything that needs a CPU can only run on the node that joined."""
    port = free_port()
    temp = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))  # short: Ray's socket paths have a length limit
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    common = ["--block", "--disable-usage-stats"]
    head = start_group(
        [executable("ray"), "start", "--head", f"--port={port}", "--num-cpus=0", f"--temp-dir={temp}", *common],
        env=env,
        log_file=logs / "ray-head.log",
    )
    nodes = [head]
    try:
        address = f"127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while _alive_nodes(address) < 1 and time.monotonic() < deadline:
            time.sleep(1)
        nodes.append(
            start_group(
                [executable("ray"), "start", f"--address={address}", "--num-cpus=1", *common],
                env=env,
                log_file=logs / "ray-worker.log",
            )
        )
        while _alive_nodes(address) < 2 and time.monotonic() < deadline:
            time.sleep(1)
        assert _alive_nodes(address) == 2, (logs / "ray-head.log").read_text() + (logs / "ray-worker.log").read_text()
        yield address
    finally:
        for node in reversed(nodes):
            stop_group(node, grace_seconds=20)
        shutil.rmtree(temp, ignore_errors=True)


def test_secure_aggregation_on_a_ray_cluster_started_outside_it_and_a_resume(
    fed_sites: list[Path], tmp_path: Path
) -> None:
    """A round through Flower's simulation engine on a Ray cluster it did not start (messages
    serialised between apps), SecAgg+'s four stages in it; the passport says every site's update
    was summed. Then the same command resumes to a second round: the engine gives the sites new
    node ids, and the resumed round once used no update while the command exited 0."""
    with two_node_ray_cluster(tmp_path) as address:
        args = ("--ray-address", address, "--seed", "4", "--secure-aggregation")
        result = pretrain_federated(fed_sites, tmp_path / "run", 1, *args)
        placed_on = _client_actor_node_cpus(address)
        resumed = pretrain_federated(fed_sites, tmp_path / "run", 2, *args, "--resume")
    assert result.exit_code == 0, result.output
    assert placed_on and set(placed_on) == {1}  # every ClientApp ran on the node that joined
    assert resumed.exit_code == 0, resumed.output
    rounds = pd.read_csv(tmp_path / "run" / "rounds.csv")
    assert rounds["clients"].tolist() == [3, 3] and rounds["failed"].tolist() == [0, 0]
    assert rounds["eval_recall@10"].between(0, 1).all()
    assert "eval_recall@10" in result.output  # the per-round table is printed
    manifest = load_checkpoint(tmp_path / "run" / "checkpoint").manifest
    assert manifest["mode"] == "federated" and manifest["round"] == 2 and manifest["secure_aggregation"] is True
    assert manifest["rounds_trained"] == [1, 2]
    passport = manifest["passport"]
    assert passport["secure_aggregation"] and sorted(passport["sites"]) == sorted(
        pseudonym(site_key(site.name)) for site in fed_sites
    )
    assert all(site["rounds_joined"] == [1, 2] and site["k_anonymity"] >= 5 for site in passport["sites"].values())
    # the same two rounds uninterrupted, in-process: the resumed round made round 2's step. Mostly
    # bit-identical, but one run in three on a loaded 2-core machine differed by up to 0.009 in a
    # few rows (cause not found: the in-process run is bit-reproducible and independent of the
    # sites' order; SecAgg+'s stochastic rounding draws from numpy's global state in the Ray
    # actors, and RMSprop turns tiny differences into whole steps). A resume that used no update
    # would sit at round 1's weights: a gap as large as round 2's whole step.
    from tests.test_federation import federate

    federate(fed_sites, tmp_path / "uninterrupted", seed=4, secure_aggregation=True, num_server_rounds=2)
    uninterrupted = load_checkpoint(tmp_path / "uninterrupted" / "checkpoint").weights
    round_1 = load_checkpoint(tmp_path / "run" / "checkpoints" / "round-001").weights
    resumed = load_checkpoint(tmp_path / "run" / "checkpoint").weights
    step = _norm([u - r for u, r in zip(uninterrupted, round_1, strict=True)])
    gap = _norm([a - u for a, u in zip(resumed, uninterrupted, strict=True)])
    assert step > 0 and gap < 0.25 * step, (gap, step)


def _norm(arrays: list[np.ndarray]) -> float:
    return float(np.sqrt(sum(np.sum(np.square(a.astype(np.float64))) for a in arrays)))
