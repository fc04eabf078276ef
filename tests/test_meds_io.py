"""Reading MEDS written by us and by other tools (meds-testing-helpers)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import meds
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shared_model.data import DataValidationError, read_meds, summarize
from shared_model.data.meds import SPLITS, assign_splits, write_meds
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


def test_written_files_follow_the_meds_schemas(tiny_meds: Path) -> None:
    """Checked by the `meds` package itself (it raises on a missing or mistyped column)."""
    shards = sorted((tiny_meds / "data").glob("*/*.parquet"))
    assert shards, "data/<split>/<shard>.parquet expected"
    for shard in shards:
        meds.DataSchema.validate(pq.read_table(shard))
    meds.LabelSchema.validate(pq.read_table(tiny_meds / "labels" / "asthma.parquet"))
    meds.CodeMetadataSchema.validate(pq.read_table(tiny_meds / meds.code_metadata_filepath))
    meds.SubjectSplitSchema.validate(pq.read_table(tiny_meds / meds.subject_splits_filepath))
    meds.DatasetMetadataSchema.validate(json.loads((tiny_meds / meds.dataset_metadata_filepath).read_text()))


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


# --- layouts: the MEDS root, the data/ folder itself, splits from folder names ---


def _bare_copy(tiny_meds: Path, target: Path, *, keep_metadata: bool) -> Path:
    """The dataset as another tool hands it over: `data/` contents only (split folders)."""
    shutil.copytree(tiny_meds / "data", target)
    if keep_metadata:
        shutil.copytree(tiny_meds / "metadata", target.parent / "metadata")
        shutil.copytree(tiny_meds / "labels", target.parent / "labels")
    return target


def test_reads_the_data_folder_itself_with_split_folders_as_splits(tiny_meds: Path, tmp_path: Path) -> None:
    bare = _bare_copy(tiny_meds, tmp_path / "export", keep_metadata=False)
    (bare / "labels").mkdir()  # a bare folder's labels/ is not read as events
    shutil.copy(tiny_meds / "labels" / "asthma.parquet", bare / "labels" / "asthma.parquet")
    original, ds = read_meds(tiny_meds), read_meds(bare)
    assert len(ds.events) == len(original.events)
    pd.testing.assert_frame_equal(ds.splits, original.splits)  # from data/<split>/ folder names
    assert list(ds.labels) == ["asthma"]


def test_the_data_folder_of_a_meds_root_finds_its_metadata(tiny_meds: Path, tmp_path: Path) -> None:
    data = _bare_copy(tiny_meds, tmp_path / "root" / "data", keep_metadata=True)
    ds = read_meds(data)
    assert ds.root == tmp_path / "root" and ds.metadata["dataset_name"] == "tiny" and "asthma" in ds.labels


def test_unknown_split_folder_is_refused(tiny_meds: Path, tmp_path: Path) -> None:
    bare = _bare_copy(tiny_meds, tmp_path / "export", keep_metadata=False)
    (bare / "test").mkdir()  # beside train/: a split name this tool does not know
    shutil.copy(sorted(bare.glob("*/*.parquet"))[0], bare / "test" / "0.parquet")
    with pytest.raises(DataValidationError, match=r"export/test.*split folders only.*train, tuning or held_out"):
        read_meds(bare)


def test_subject_in_two_split_folders_is_refused(tiny_meds: Path, tmp_path: Path) -> None:
    bare = _bare_copy(tiny_meds, tmp_path / "export", keep_metadata=False)
    first = sorted(bare.glob("*/*.parquet"))[0]
    other = next(s for s in SPLITS if s != first.parent.name)
    (bare / other).mkdir(exist_ok=True)
    shutil.copy(first, bare / other / "copy.parquet")
    with pytest.raises(DataValidationError, match="one split folder"):
        read_meds(bare)


def test_unknown_split_name_in_subject_splits_is_refused(tiny_meds: Path) -> None:
    path = tiny_meds / "metadata" / "subject_splits.parquet"
    table = pq.read_table(path)
    pq.write_table(table.set_column(1, "split", pa.array(["train", "test"][: table.num_rows])), path)
    with pytest.raises(DataValidationError, match=r"row 2.*column 'split'.*train, tuning or held_out.*test"):
        read_meds(tiny_meds)
