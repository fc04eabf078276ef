"""Federated pretraining through Flower's real simulation engine (Ray), as `claimpt` runs it."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from shared_model.checkpoint import load_checkpoint
from simulations.cli.app import app


def test_pretrain_federated_in_the_simulation_engine(fed_sites: list[Path], tmp_path: Path) -> None:
    args = [
        "pretrain",
        "federated",
        *[a for p in fed_sites for a in ("--data", str(p))],
        "--out",
        str(tmp_path / "run"),
        "--num-server-rounds",
        "2",
        "--d-model",
        "16",
        "--ffn-dim",
        "16",
        "--k-anonymity",
        "5",
        "--seed",
        "4",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    rounds = pd.read_csv(tmp_path / "run" / "rounds.csv")
    assert rounds["round"].tolist() == [1, 2] and (rounds["clients"] == 3).all()
    assert rounds["eval_recall@10"].between(0, 1).all()
    assert "eval_recall@10" in result.output  # the per-round table is printed
    checkpoint = load_checkpoint(tmp_path / "run" / "checkpoint")
    assert checkpoint.manifest["mode"] == "federated" and checkpoint.manifest["round"] == 2


def test_secure_aggregation_in_the_simulation_engine(fed_sites: list[Path], tmp_path: Path) -> None:
    """SecAgg+'s four stages through Flower's real transport (messages serialised between apps)."""
    args = [
        "pretrain",
        "federated",
        *[a for p in fed_sites for a in ("--data", str(p))],
        "--out",
        str(tmp_path / "run"),
        "--num-server-rounds",
        "1",
        "--d-model",
        "16",
        "--ffn-dim",
        "16",
        "--k-anonymity",
        "5",
        "--secure-aggregation",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    rounds = pd.read_csv(tmp_path / "run" / "rounds.csv")
    assert (
        rounds["clients"].tolist() == [3]
        and rounds["failed"].tolist() == [0]
        and rounds["eval_recall@10"].between(0, 1).all()
    )
    manifest = load_checkpoint(tmp_path / "run" / "checkpoint").manifest
    assert manifest["secure_aggregation"] is True
