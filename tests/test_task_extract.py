"""`claimpt task extract`: the built-in tasks, written as ACES task configurations, give exactly
the label rows the synthetic generator writes."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from shared_model.data import read_meds
from simulations.cli.app import app

TASKS = Path(__file__).parents[1] / "simulations" / "synth" / "tasks"


@pytest.mark.parametrize("task", ["asthma", "self_harm"])
def test_aces_configurations_reproduce_the_built_in_labels(task: str, small_sites: list[Path], tmp_path: Path) -> None:
    data = shutil.copytree(small_sites[0], tmp_path / "site")
    (data / "labels" / f"{task}.parquet").unlink()
    result = CliRunner().invoke(app, ["task", "extract", "--config", str(TASKS / f"{task}.yaml"), "--data", str(data)])
    assert result.exit_code == 0, result.output
    extracted, built_in = read_meds(data).labels[task], read_meds(small_sites[0]).labels[task]
    assert built_in["boolean_value"].sum() > 0
    pd.testing.assert_frame_equal(extracted, built_in)  # identical rows
    again = CliRunner().invoke(app, ["task", "extract", "--config", str(TASKS / f"{task}.yaml"), "--data", str(data)])
    assert again.exit_code == 2 and "--force" in again.output  # an existing label file is kept


def test_a_broken_task_configuration_is_bad_input(fed_sites: list[Path], tmp_path: Path) -> None:
    config = tmp_path / "broken.yaml"
    config.write_text("predicates:\n  a: {code: X}\ntrigger: nowhere\nwindows: {}\n")
    result = CliRunner().invoke(app, ["task", "extract", "--config", str(config), "--data", str(fed_sites[0])])
    assert result.exit_code == 2 and "broken.yaml" in result.output and "Traceback" not in result.output
    assert not (fed_sites[0] / "labels" / "broken.parquet").exists()


COREBEHRT = Path(__file__).parent / "data" / "corebehrt"
FOREIGN_TASK = Path(__file__).parents[1] / "simulations" / "experiments" / "tasks" / "lab_after_35.yaml"


def _extract(data: Path) -> pd.DataFrame:
    result = CliRunner().invoke(app, ["task", "extract", "--config", str(FOREIGN_TASK), "--data", str(data)])
    assert result.exit_code == 0, result.output
    return pd.read_parquet(data / "labels" / "lab_after_35.parquet")


def test_aces_task_on_another_projects_data_labels_every_file(tmp_path: Path) -> None:
    """CoreBEHRT's nanosecond timestamps made ACES fail (a SchemaError), and ACES' query changes
    the configuration it is given, so every data file after the first lost most of its rows."""
    labels = _extract(shutil.copytree(COREBEHRT, tmp_path / "all"))
    last = tmp_path / "tuning"  # the dataset's last file (held_out, train, tuning), alone
    shutil.copytree(COREBEHRT / "tuning", last / "data" / "tuning")
    alone = _extract(last)
    assert len(alone) > 20 and alone["boolean_value"].nunique() == 2
    pd.testing.assert_frame_equal(labels[labels["subject_id"].isin(alone["subject_id"])].reset_index(drop=True), alone)
    assert labels["subject_id"].nunique() > 300  # every file labelled (600 patients, about 2 in 3 eligible)
