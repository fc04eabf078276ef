"""The run configuration is written once: the dataclass. pyproject.toml and the command line
must follow it."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from shared_model.contract.run_config import FederatedRunConfig
from shared_model.model.config import ARCHITECTURE, ClaimTransformerConfig
from simulations.cli.app import app

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def test_pyproject_lists_every_run_config_key_with_its_default() -> None:
    listed = tomllib.loads(PYPROJECT.read_text())["tool"]["flwr"]["app"]["config"]
    assert listed == FederatedRunConfig().to_run_config()
    assert FederatedRunConfig.from_run_config(listed) == FederatedRunConfig()


def test_the_architecture_defaults_are_the_models_own() -> None:
    model = ClaimTransformerConfig(vocab_size=3, n_groups=1)
    assert {name: getattr(FederatedRunConfig(), name) for name in ARCHITECTURE} == {
        name: getattr(model, name) for name in ARCHITECTURE
    }


def test_pretrain_federated_has_one_option_per_run_config_key() -> None:
    command = typer.main.get_command(app).commands["pretrain"].commands["federated"]
    flags = {flag for param in command.params for flag in param.opts}
    for field in dataclasses.fields(FederatedRunConfig):
        flag = "--" + field.name.replace("_", "-")
        assert (flag in flags) == (field.name not in ("run_dir", "data_paths")), flag


@pytest.mark.parametrize("args", [["--strategy", "krum"], ["--num-server-rounds", "0"], ["--dp-epsilon", "-1"]])
def test_a_bad_run_config_is_refused_before_anything_runs(tmp_path: Path, args: list[str]) -> None:
    result = CliRunner().invoke(
        app, ["pretrain", "federated", "--data", str(tmp_path), "--out", str(tmp_path / "run"), *args]
    )
    assert result.exit_code == 2 and not (tmp_path / "run").exists()
