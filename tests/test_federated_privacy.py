"""Differential privacy in federated runs: record-level DP-SGD at every site (with each site's
own budget) and client-level DP through Flower's central DP wrappers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from client.app import make_client_app
from server.federation import run_federation
from shared_model.contract.checkpoint import load_checkpoint
from shared_model.contract.run_config import FederatedRunConfig
from shared_model.training.privacy import epsilon_spent
from tests.conftest import tensorboard_events
from tests.inprocess_grid import InProcessGrid
from tests.test_federation import TINY, federate


def test_record_level_dp_spends_exactly_the_target_epsilon(fed_sites: list[Path], tmp_path: Path) -> None:
    options = {"dp_epsilon": 4.0, "dp_clip_norm": 0.5, "batch_size": 25, "num_server_rounds": 1}
    grid, rounds = federate(fed_sites, tmp_path / "run", **options)
    assert (rounds["clients"] == 3).all() and (rounds["failed"] == 0).all()
    assert rounds["site_epsilon"].tolist() == [pytest.approx(4.0, rel=0.01)]
    metrics = [m.content.metric_records.get("metrics") for m in grid.sent if not m.has_error()]
    replies = [r for r in metrics if r is not None and "dp-epsilon" in r]
    assert len(replies) == 3 and all(0 < r["dp-delta"] < 1e-2 and r["dp-noise-multiplier"] > 0.3 for r in replies)
    # scalars about the training, nothing about a patient (no un-noised training loss)
    allowed = {"num-examples", "site-key", "train-seconds", "dp-epsilon", "dp-delta", "dp-noise-multiplier"}
    assert all(set(r) <= allowed for r in replies)
    weights = load_checkpoint(tmp_path / "run" / "checkpoint").weights
    assert all(np.isfinite(w).all() for w in weights)
    spent = [v for tag, values in tensorboard_events(tmp_path / "run" / "tensorboard").items()
             if tag.endswith("/dp-epsilon") for _, v in values]  # fmt: skip
    assert spent == [pytest.approx(4.0, rel=0.01)] * 3  # epsilon spent, per site, on the dashboard


def test_a_site_with_its_own_budget_refuses_to_overspend_or_to_train_without_dp(
    fed_sites: list[Path], tmp_path: Path
) -> None:
    for name, options in (("overspend", {"dp_epsilon": 4.0, "batch_size": 25}), ("no-dp", {})):
        settings = FederatedRunConfig(
            **{**TINY, "num_server_rounds": 1, **options},
            run_dir=str(tmp_path / name),
            data_paths=",".join(map(str, fed_sites)),
        )
        policy = tmp_path / "policy.toml"
        policy.write_text("lifetime_epsilon = 1.0\n")
        nodes = [{"partition-id": 0}, {"partition-id": 1, "policy": str(policy)}, {"partition-id": 2}]
        grid = InProcessGrid(make_client_app(settings.to_run_config()), nodes)
        run_federation(grid, settings)
        rounds = pd.read_csv(tmp_path / name / "rounds.csv")
        assert (rounds["failed"] == 1).all() and (rounds["clients"] == 2).all(), name
        reasons = [m.error.reason for m in grid.sent if m.has_error()]
        assert len(reasons) == 1 and all("refused by the site's policy" in r for r in reasons), reasons


@pytest.fixture(scope="module")
def clean_run(fed_sites: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One round without client-level DP, the same seed as the DP runs."""
    run_dir = tmp_path_factory.mktemp("clean") / "run"
    federate(fed_sites, run_dir, num_server_rounds=1)
    return run_dir


@pytest.mark.parametrize("clipping", ["fixed", "adaptive"])
def test_client_level_dp_clips_noises_and_reports_epsilon(
    fed_sites: list[Path], tmp_path: Path, clean_run: Path, clipping: str
) -> None:
    _, rounds = federate(
        fed_sites,
        tmp_path / "dp",
        num_server_rounds=1,
        client_dp_noise=1.0,
        client_dp_clipping=clipping,
        client_dp_clip_norm=0.05,
    )
    assert rounds["client_epsilon"].iloc[0] == pytest.approx(epsilon_spent(1.0, 1.0, 1, 1e-5))
    assert pd.read_csv(clean_run / "rounds.csv")["client_epsilon"].iloc[0] == 0.0
    start = load_checkpoint(clean_run / "checkpoints" / "round-001").weights
    dp = load_checkpoint(tmp_path / "dp" / "checkpoint").weights
    clean_final = load_checkpoint(clean_run / "checkpoint").weights
    assert any(not np.allclose(a, b) for a, b in zip(dp, clean_final, strict=True))  # clipped and noised
    assert len(dp) == len(start)


def test_a_site_sets_its_policy_and_state_when_it_joins(tmp_path: Path) -> None:
    from client.supernode import SuperNodeSettings, supernode_command

    policy = tmp_path / "policy.toml"
    command = supernode_command(
        SuperNodeSettings("127.0.0.1:9092", tmp_path / "site", None, None, insecure=True, policy=policy)
    )
    node_config = command[command.index("--node-config") + 1].split()
    assert f'policy="{policy.resolve()}"' in node_config
    assert f'state-dir="{(tmp_path / "site.site-state").resolve()}"' in node_config
    plain = supernode_command(SuperNodeSettings("127.0.0.1:9092", tmp_path / "site", None, None, insecure=True))
    assert not any(item.startswith("policy=") for item in plain[plain.index("--node-config") + 1].split())
