"""Reading MEDS written by us and by other tools (meds-testing-helpers)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from shared_model.data import read_meds, summarize
from shared_model.data.meds import assign_splits, write_meds
from tests.conftest import tiny_events


def test_round_trip_keeps_events_splits_and_labels(tiny_meds: Path) -> None:
    ds = read_meds(tiny_meds)
    expected = tiny_events()
    assert len(ds.events) == len(expected)
    assert set(ds.events["code"].astype(str)) == set(expected["code"])
    assert ds.events["time"].isna().sum() == 2  # the two static SEX facts
    # sorted by subject, static facts first, then time
    first = ds.events[ds.events["subject_id"] == 1]
    assert pd.isna(first["time"].iloc[0]) and first["time"].iloc[1:].is_monotonic_increasing
    assert set(ds.splits["subject_id"]) == {1, 2}
    assert ds.labels["asthma"]["boolean_value"].tolist() == [True, False]
    assert ds.metadata["dataset_name"] == "tiny"


def test_written_files_follow_the_meds_schema(tiny_meds: Path) -> None:
    shards = sorted((tiny_meds / "data").glob("*/*.parquet"))
    assert shards, "data/<split>/<shard>.parquet expected"
    schema = pq.read_schema(shards[0])
    assert str(schema.field("subject_id").type) == "int64"
    assert str(schema.field("time").type) == "timestamp[us]"
    assert str(schema.field("code").type) == "string"
    assert str(schema.field("numeric_value").type) == "float"
    assert str(pq.read_schema(tiny_meds / "labels" / "asthma.parquet").field("boolean_value").type) == "bool"


def test_write_refuses_to_overwrite_and_leaves_no_temporary_directory(tiny_meds: Path) -> None:
    before = sorted(p.name for p in tiny_meds.parent.iterdir())
    with pytest.raises(FileExistsError):
        write_meds(tiny_meds, tiny_events(), assign_splits(np.array([1, 2])))
    assert sorted(p.name for p in tiny_meds.parent.iterdir()) == before


def test_reads_meds_testing_helpers_static_dataset_with_tasks(simple_static_MEDS_dataset_with_task: Path) -> None:
    ds = read_meds(simple_static_MEDS_dataset_with_task)
    assert ds.events["subject_id"].nunique() == 6
    assert "boolean_value_task" in ds.labels  # sharded task_labels/<task>/*.parquet layout
    assert len(ds.labels["boolean_value_task"]) == 21
    assert ds.events["numeric_value"].notna().any()
    assert set(ds.splits["split"]) == {"train", "tuning", "held_out"}
    summary = summarize(ds)
    assert summary.subjects == 6 and summary.labels[0].rows == 21


def test_reads_meds_testing_helpers_static_dataset(simple_static_MEDS: Path) -> None:
    ds = read_meds(simple_static_MEDS)
    assert ds.labels == {}
    assert len(ds.events) > 0 and ds.codes["code"].size >= 1


def test_reads_meds_testing_helpers_generated_dataset(tmp_path: Path) -> None:
    out = tmp_path / "generated"
    subprocess.run(
        [
            str(Path(sys.executable).parent / "build_sample_MEDS_dataset"),
            "seed=3",
            "N_subjects=60",
            "do_overwrite=False",
            f"output_dir={out}",
            "dataset_spec/data_generator=sample",
        ],
        check=True,
        capture_output=True,
    )
    ds = read_meds(out)
    assert ds.events["subject_id"].nunique() == 60
    assert ds.codes.empty or "code" in ds.codes  # its codes.parquet may be empty
    assert len(ds.splits) == 60
