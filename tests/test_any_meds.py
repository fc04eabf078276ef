"""Any MEDS dataset, end to end through the command line: a foreign vocabulary in a bare data
folder, and the meds-testing-helpers datasets (validate -> pretrain -> finetune)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from shared_model.contract.checkpoint import load_checkpoint
from shared_model.data import read_meds
from shared_model.settings import VocabularySettings
from shared_model.tensors.vocabulary import Vocabulary, is_marker
from simulations.cli.app import app

TINY = ["--d-model", "16", "--ffn-dim", "16", "--epochs", "1"]


def _claimpt(*args: str) -> str:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


def _validate_pretrain_finetune(data: Path, task: str, tmp_path: Path) -> tuple[Path, dict]:
    _claimpt("validate", data)
    _claimpt("pretrain", "central", "--data", data, "--out", tmp_path / "run", *TINY)
    ft = tmp_path / "ft"
    checkpoint = tmp_path / "run" / "checkpoint"
    _claimpt("finetune", "--data", data, "--task", task, "--checkpoint", checkpoint, "--out", ft, "--no-guard")
    return tmp_path / "run" / "checkpoint", json.loads((ft / "metrics.json").read_text())


def test_foreign_vocabulary_in_a_bare_data_folder_runs_end_to_end(tmp_path: Path) -> None:
    _claimpt("synth", "--out", tmp_path / "sites", "--sites", "1", "--patients", "1200", "--style", "foreign")
    data = tmp_path / "sites" / "site-1"
    assert not (data / "data").exists() and (data / "train").is_dir()  # the bare layout
    checkpoint, metrics = _validate_pretrain_finetune(data, "asthma", tmp_path)
    vocabulary = load_checkpoint(checkpoint).vocabulary
    assert vocabulary.target_vocabularies == ("*",)  # no ICD10CM/ code: the documented fallback
    groups = pd.Series(vocabulary.groups)
    assert len(groups) > 50 and not is_marker(groups).any()
    assert {"ADMISSION", "LAB/GL"} <= set(vocabulary.codes)  # markers stay inputs
    assert metrics["pretrained"] and metrics["held_out_positives"] > 0 and 0 <= metrics["auroc"] <= 1


def test_meds_testing_helpers_generated_dataset_runs_end_to_end(tmp_path: Path) -> None:
    data = tmp_path / "generated"
    builder = Path(sys.executable).parent / "build_sample_MEDS_dataset"
    subprocess.run(
        [
            builder,
            "seed=1",
            "N_subjects=200",
            "do_overwrite=False",
            f"output_dir={data}",
            "dataset_spec/data_generator=sample",
        ],
        check=True,
        capture_output=True,
    )
    checkpoint, metrics = _validate_pretrain_finetune(data, "next_visit", tmp_path)
    assert load_checkpoint(checkpoint).vocabulary.n_groups > 0
    assert 0 < metrics["recall@10"] <= 1


def test_meds_testing_helpers_static_dataset_pretraining_is_refused_clearly(
    simple_static_MEDS_dataset_with_task: Path, tmp_path: Path
) -> None:
    """One visit day per subject: nothing to pretrain on, said in one line (exit 2, nothing
    written); fine-tuning its task from scratch still works."""
    data = simple_static_MEDS_dataset_with_task
    _claimpt("validate", data)
    result = CliRunner().invoke(app, ["pretrain", "central", "--data", str(data), "--out", str(tmp_path / "run")])
    assert result.exit_code == 2 and "next-visit pretraining has no sample" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "run").exists()
    _claimpt("finetune", "--data", data, "--task", "boolean_value_task", "--out", tmp_path / "ft", *TINY)
    assert json.loads((tmp_path / "ft" / "metrics.json").read_text())["train_size"] > 0


@pytest.mark.parametrize(
    ("targets", "expected_groups"),
    [
        ("ICD10CM", ["ICD10CM/J45"]),
        ("CPT", ["CPT/992"]),
        ("*", ["ICD10CM/J45", "CPT/992", "DE10"]),
        ("D*", ["DE10"]),  # a pattern: the home-grown diagnosis codes
        ("CPT,D*", ["CPT/992", "DE10"]),
        ("SNOMED", ["ICD10CM/J45", "CPT/992", "DE10"]),  # none in the data: the fallback
    ],
)
def test_target_vocabularies_setting_and_fallback(targets: str, expected_groups: list[str]) -> None:
    counts = {"ICD10CM/J45.909": 9, "CPT/99213": 8, "DE10": 7, "ADMISSION": 50, "LAB//GL": 40, "MEDS_DEATH": 3}
    vocabulary = Vocabulary.from_counts(counts, settings=VocabularySettings(target_vocabularies=targets))
    assert list(vocabulary.groups) == expected_groups
    assert len(vocabulary.codes) == len(counts)  # markers still embedded as inputs


def test_group_budget_keeps_the_most_frequent_groups() -> None:
    counts = {f"DX{i:03d}": 100 - i for i in range(30)}
    vocabulary = Vocabulary.from_counts(counts, settings=VocabularySettings(target_vocabularies="*", max_groups=5))
    assert list(vocabulary.groups) == ["DX000", "DX001", "DX002", "DX003", "DX004"]
    assert sum(g >= 0 for g in vocabulary.code_group) == 5


def _at_resolution(source: Path, out: Path, unit: str, birth_code: str) -> Path:
    """A copy of a MEDS directory with every timestamp (data and labels) at `unit` and the birth
    event under another producer's code."""
    shutil.copytree(source, out)
    for path in out.rglob("*.parquet"):
        table = pq.read_table(path)
        for index, column in enumerate(table.schema):
            if pa.types.is_timestamp(column.type):
                table = table.set_column(index, column.name, table.column(index).cast(pa.timestamp(unit)))
        if "code" in table.column_names:
            codes = table.column("code").to_pandas().replace({"MEDS_BIRTH": birth_code})
            table = table.set_column(table.column_names.index("code"), "code", pa.array(codes, pa.string()))
        pq.write_table(table, path)
    return out


def test_every_model_reads_any_timestamp_resolution_and_birth_code_alike(tmp_path: Path) -> None:
    """Another project's MEDS data: nanosecond timestamps and `DOB` for birth. The GBM baseline
    raised a TypeError on it, and every age was unknown."""
    _claimpt("synth", "--out", tmp_path / "sites", "--sites", "1", "--patients", "1200", "--style", "foreign")
    source = tmp_path / "sites" / "site-1"
    assert (source / "train").is_dir()
    aurocs: dict[str, set[float]] = {"logreg": set(), "gbm": set(), "transformer": set()}
    for unit, birth in (("us", "MEDS_BIRTH"), ("ns", "DOB"), ("ms", "DOB")):
        data = _at_resolution(source, tmp_path / f"{unit}-{birth}", unit, birth)
        for model in aurocs:
            out = tmp_path / f"ft-{unit}-{model}"
            _claimpt(
                "finetune",
                "--data",
                data,
                "--task",
                "asthma",
                "--model",
                model,
                "--train-size",
                "300",
                "--out",
                out,
                *TINY,
            )
            aurocs[model].add(round(json.loads((out / "metrics.json").read_text())["auroc"], 9))
    # the same metrics at every resolution and birth code, and metrics there are
    assert all(len(values) == 1 and 0 <= min(values) <= 1 for values in aurocs.values()), aurocs


COREBEHRT = Path(__file__).parent / "data" / "corebehrt"
TASK_DIR = Path(__file__).parents[1] / "simulations" / "experiments" / "tasks"


def test_pretraining_keeps_another_projects_patients_apart(tmp_path: Path) -> None:
    """On CoreBEHRT's example data the pretrained encoder mapped every patient to one point: the
    heads' biases started at 0 (probability 0.5 for each of 1,000 rare groups), and training drove
    every patient vector into tanh's saturated corner to bring those probabilities down. A fresh
    encoder's vectors spread about 0.3 across patients; the collapsed ones less than 0.001."""
    data = shutil.copytree(COREBEHRT, tmp_path / "corebehrt")
    run = tmp_path / "pre"
    _claimpt("pretrain", "central", "--data", data, "--out", run, "--epochs", "5", "--batch-size", "32", "--seed", "1")
    _claimpt("embed", "--checkpoint", run / "checkpoint", "--data", data, "--out", tmp_path / "emb")
    vectors = pd.read_parquet(tmp_path / "emb" / "embeddings.parquet").filter(regex=r"^e\d+$").to_numpy()
    assert len(vectors) >= 500
    assert vectors.std(axis=0).mean() > 0.1
    assert (np.abs(vectors) > 0.99).mean() < 0.1  # not pinned to tanh's corners


def test_split_makes_sites_of_another_projects_data(tmp_path: Path) -> None:
    """`claimpt split`: every subject at one site with its split, rows and labels unchanged
    (nanosecond timestamps too); with skew 1 each site holds one band of event volume."""
    data = shutil.copytree(COREBEHRT, tmp_path / "corebehrt")
    _claimpt("task", "extract", "--config", TASK_DIR / "lab_after_35.yaml", "--data", data)
    out = tmp_path / "sites"
    _claimpt("split", "--data", data, "--out", out, "--sites", "3", "--skew", "1", "--seed", "4")
    source = read_meds(data)
    sites = [read_meds(out / f"site-{i}") for i in (1, 2, 3)]
    events = pd.concat([s.events for s in sites])
    assert len(events) == len(source.events)
    assert events["subject_id"].nunique() == source.events["subject_id"].nunique()
    assert pq.read_schema(next((out / "site-1" / "data" / "train").glob("*.parquet"))).field("time").type.unit == "ns"
    splits = pd.concat([s.splits for s in sites]).sort_values("subject_id", ignore_index=True)
    pd.testing.assert_frame_equal(splits, source.splits.sort_values("subject_id", ignore_index=True))  # kept
    volume = [s.events[s.events["time"].notna()].groupby("subject_id").size() for s in sites]
    assert volume[0].max() <= volume[1].min() and volume[1].max() <= volume[2].min()
    labels = pd.concat([s.labels["lab_after_35"] for s in sites]).sort_values(["subject_id", "prediction_time"])
    pd.testing.assert_frame_equal(labels.reset_index(drop=True), source.labels["lab_after_35"])
    again = CliRunner().invoke(app, ["split", "--data", str(data), "--out", str(out)])
    assert again.exit_code == 2 and "exists" in again.output  # nothing is overwritten
    skewed = CliRunner().invoke(app, ["split", "--data", str(data), "--out", str(tmp_path / "x"), "--skew", "0.1"])
    assert skewed.exit_code == 2 and not (tmp_path / "x").exists()


def test_split_carries_a_datasets_metadata(small_sites: list[Path], tmp_path: Path) -> None:
    """Splits given by metadata/subject_splits.parquet stay each subject's; codes.parquet (the
    parents that make the pretraining groups) goes to every site."""
    out = tmp_path / "sites"
    _claimpt("split", "--data", small_sites[0], "--out", out, "--sites", "2", "--skew", "0.5")
    source = read_meds(small_sites[0])
    sites = [read_meds(out / f"site-{i}") for i in (1, 2)]
    splits = pd.concat([s.splits for s in sites]).sort_values("subject_id", ignore_index=True)
    pd.testing.assert_frame_equal(splits, source.splits.sort_values("subject_id", ignore_index=True))
    assert all(s.codes is not None and len(s.codes) == len(source.codes) for s in sites)
