"""`claimpt task extract`: labels from an ACES task configuration, checked against the same
definition computed by hand with pandas."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from shared_model.data import read_meds
from simulations.cli.app import app

CONFIG = Path(__file__).parents[1] / "docs" / "examples" / "aces" / "asthma_within_a_year.yaml"


def _by_hand(events: pd.DataFrame) -> pd.DataFrame:
    """At every visit of a patient with no asthma code up to it: asthma within the next 365 days?"""
    code = events["code"].astype(str)
    timed = events[events["time"].notna()]
    visits = timed.loc[code[timed.index].str.startswith("VISIT/"), ["subject_id", "time"]].drop_duplicates()
    asthma = timed.loc[code[timed.index].str.startswith("ICD10CM/J45"), ["subject_id", "time"]]
    rows = []
    for (subject, when), _ in visits.groupby(["subject_id", "time"]):
        times = asthma.loc[asthma["subject_id"] == subject, "time"]
        if (times <= when).any():
            continue
        label = ((times > when) & (times <= when + pd.Timedelta(days=365))).any()
        rows.append((subject, when, bool(label)))
    return pd.DataFrame(rows, columns=["subject_id", "prediction_time", "boolean_value"])


def test_aces_config_labels_match_the_definition_and_feed_finetuning(fed_sites: list[Path], tmp_path: Path) -> None:
    data = shutil.copytree(fed_sites[2], tmp_path / "site")
    result = CliRunner().invoke(app, ["task", "extract", "--config", str(CONFIG), "--data", str(data)])
    assert result.exit_code == 0, result.output
    labels = read_meds(data).labels["asthma_within_a_year"]
    expected = _by_hand(read_meds(fed_sites[2]).events).astype({"prediction_time": "datetime64[us]"})
    assert len(labels) == len(expected) and labels["boolean_value"].any()
    pd.testing.assert_frame_equal(labels, expected.sort_values(["subject_id", "prediction_time"], ignore_index=True))
    again = CliRunner().invoke(app, ["task", "extract", "--config", str(CONFIG), "--data", str(data)])
    assert again.exit_code == 2 and "--force" in again.output  # an existing label file is kept


def test_a_broken_task_configuration_is_bad_input(fed_sites: list[Path], tmp_path: Path) -> None:
    config = tmp_path / "broken.yaml"
    config.write_text("predicates:\n  a: {code: X}\ntrigger: nowhere\nwindows: {}\n")
    result = CliRunner().invoke(app, ["task", "extract", "--config", str(config), "--data", str(fed_sites[0])])
    assert result.exit_code == 2 and "broken.yaml" in result.output and "Traceback" not in result.output
    assert not (fed_sites[0] / "labels" / "broken.parquet").exists()
