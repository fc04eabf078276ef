"""A tiny end-to-end run: central pretraining, then fine-tuning (pretrained, scratch, logreg)."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pytest
from meds_evaluation.evaluate import evaluate_binary_classification
from typer.testing import CliRunner

from shared_model.contract.checkpoint import assign_weights, load_checkpoint, save_checkpoint
from shared_model.data import read_meds
from shared_model.model.transformer import PretrainingModel
from shared_model.settings import FinetuneSettings
from shared_model.tensors.tasks import task_arrays, training_vocabulary
from shared_model.training.finetuning import finetune_and_score, out_of_time
from simulations.cli.app import app
from simulations.synth import synthesize_populations
from tests.conftest import tensorboard_events

TINY = ["--d-model", "16", "--ffn-dim", "16"]


@pytest.fixture(scope="module")
def pretrained(small_sites: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("central")
    args = [
        "pretrain",
        "central",
        *[a for p in small_sites for a in ("--data", str(p))],
        "--out",
        str(run),
        "--epochs",
        "2",
        "--batch-size",
        "64",
        "--seed",
        "3",
        *TINY,
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return run


def test_central_pretraining_writes_checkpoint_and_beats_nothing_trivially(pretrained: Path) -> None:
    checkpoint = load_checkpoint(pretrained / "checkpoint")
    assert checkpoint.kind == "pretraining" and checkpoint.manifest["mode"] == "central"
    assert checkpoint.config.d_model == 16
    metrics = json.loads((pretrained / "metrics.json").read_text())
    for k in ("recall@5", "recall@10", "recall@30"):
        assert 0.0 < metrics["nvp_held_out"][k] <= 1.0
    assert (
        metrics["nvp_held_out"]["recall@30"]
        >= metrics["nvp_held_out"]["recall@10"]
        >= metrics["nvp_held_out"]["recall@5"]
    )
    assert set(metrics["nvp_held_out_by_site"]) == {"site-1", "site-2", "site-3"}
    assert (pretrained / "history.csv").read_text().startswith("epoch,")
    train = tensorboard_events(pretrained / "tensorboard" / "train")  # per epoch: losses, recall, learning rate
    for tag in ("epoch_loss", "epoch_nvp_loss", "epoch_cp_loss", "epoch_held_out_recall@10", "epoch_learning_rate"):
        assert [step for step, _ in train[tag]] == [0, 1], tag
    assert train["epoch_learning_rate"][0][1] == pytest.approx(1e-3)
    assert train["epoch_held_out_recall@10"][-1][1] == pytest.approx(
        pd.read_csv(pretrained / "history.csv")["held_out_recall@10"].iloc[-1], rel=1e-5
    )
    assert "epoch_loss" in tensorboard_events(pretrained / "tensorboard" / "validation")


@pytest.mark.parametrize(
    ("extra", "pretrained_flag"),
    [
        (["--model", "transformer"], True),
        (["--model", "transformer", "--adaptation", "probe-then-finetune", "--gradual-unfreeze", "--no-guard"], True),
        (["--model", "transformer", "--adaptation", "finetune", "--no-guard"], True),
        (["--model", "transformer", *TINY], False),
        (["--model", "logreg"], False),
        (["--model", "gbm"], False),
    ],
)
def test_finetune_variants_write_metrics(
    pretrained: Path, small_sites: list[Path], tmp_path: Path, extra: list[str], pretrained_flag: bool
) -> None:
    args = [
        "finetune",
        "--data",
        str(small_sites[0]),
        "--task",
        "asthma",
        "--train-size",
        "200",
        "--epochs",
        "2",
        "--out",
        str(tmp_path / "ft"),
        "--seed",
        "1",
        *extra,
    ]
    if pretrained_flag:
        args += ["--checkpoint", str(pretrained / "checkpoint")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "ft" / "metrics.json").read_text())
    assert metrics["train_size"] == 200 and metrics["pretrained"] is pretrained_flag
    assert ("guard" in metrics) is (pretrained_flag and "--no-guard" not in extra)  # the default path is guarded
    assert 0.0 <= metrics["auroc"] <= 1.0 and 0.0 <= metrics["auprc"] <= 1.0
    assert metrics["held_out_positives"] > 0
    # the held-out predictions in the MEDS-DEV format: meds-evaluation reads them, finds our AUROC
    predictions = pl.read_parquet(tmp_path / "ft" / "predictions.parquet")
    assert len(predictions) == metrics["held_out_size"]
    scored = evaluate_binary_classification(predictions)["samples_equally_weighted"]
    assert scored["roc_auc_score"] == pytest.approx(metrics["auroc"], abs=1e-6)
    labels = read_meds(small_sites[0]).labels["asthma"]
    assert predictions.join(
        pl.from_pandas(labels), on=["subject_id", "prediction_time", "boolean_value"]
    ).height == len(predictions)  # every row is one of the task's label rows


def test_the_guard_replaces_a_collapsed_encoder_by_scratch(
    pretrained: Path, small_sites: list[Path], tmp_path: Path
) -> None:
    """An encoder that maps every patient to one point (the collapse seen on CoreBEHRT's data) is
    at chance for any probe of its patient vectors: the default path keeps the same network trained
    from scratch instead, says so in metrics.json, and reports the kept model's held-out AUROC.
    (Without the count head, which would rescue such an encoder by itself.)"""
    checkpoint = load_checkpoint(pretrained / "checkpoint")
    model = PretrainingModel(checkpoint.config)
    assign_weights(model, checkpoint)
    layer = model.encoder.get_layer("patient_vector")
    layer.set_weights([np.zeros_like(w) for w in layer.get_weights()])  # every patient vector 0
    save_checkpoint(tmp_path / "collapsed", model, checkpoint.config, checkpoint.vocabulary, extra={"mode": "central"})
    out = tmp_path / "ft"
    args = ["finetune", "--data", str(small_sites[0]), "--task", "asthma", "--train-size", "300", "--seed", "1"]
    args += ["--no-code-counts", "--checkpoint", str(tmp_path / "collapsed"), "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    guard = metrics["guard"]
    assert guard["tuning_auroc"]["pretrained"] == 0.5  # constant scores: chance
    assert guard["chosen"] == "scratch" and "standard error" in guard["reason"]
    assert metrics["auroc"] == pytest.approx(guard["held_out_auroc"]["scratch"], abs=1e-4)
    assert metrics["auroc"] > guard["held_out_auroc"]["pretrained"] == 0.5


def test_next_visit_finetuning_reports_recall(pretrained: Path, small_sites: list[Path], tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        [
            "finetune",
            "--data",
            str(small_sites[1]),
            "--task",
            "next_visit",
            "--train-size",
            "150",
            "--probe-epochs",
            "2",
            "--out",
            str(tmp_path / "nv"),
            "--checkpoint",
            str(pretrained / "checkpoint"),
        ],
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "nv" / "metrics.json").read_text())
    assert {"recall@5", "recall@10", "recall@30"} <= set(metrics)
    task_checkpoint = load_checkpoint(tmp_path / "nv" / "checkpoint")
    assert task_checkpoint.kind == "task" and task_checkpoint.manifest["task"] == "next_visit"


def test_same_seed_same_pretrained_weights(small_sites: list[Path], tmp_path: Path) -> None:
    runs = []
    for name in ("a", "b"):
        args = [
            "pretrain",
            "central",
            "--data",
            str(small_sites[2]),
            "--out",
            str(tmp_path / name),
            "--epochs",
            "1",
            "--seed",
            "7",
            *TINY,
        ]
        assert CliRunner().invoke(app, args).exit_code == 0
        runs.append(load_checkpoint(tmp_path / name / "checkpoint").weights)
    for a, b in zip(*runs, strict=True):
        np.testing.assert_array_equal(a, b)


def test_finetune_rejects_unknown_task(small_sites: list[Path], tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["finetune", "--data", str(small_sites[0]), "--task", "diabetes", "--out", str(tmp_path / "x")]
    )
    assert result.exit_code == 2 and "diabetes" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "x").exists()  # nothing written


def test_out_of_time_trains_before_the_cut_and_tests_from_it(small_sites: list[Path], tmp_path: Path) -> None:
    cut = "2020-07-01"
    base = ["finetune", "--data", str(small_sites[0]), "--task", "asthma", "--model", "gbm"]
    result = CliRunner().invoke(app, [*base, "--train-size", "150", "--test-from", cut, "--out", str(tmp_path / "ft")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "ft" / "metrics.json").read_text())["test_from"] == cut
    predictions = pl.read_parquet(tmp_path / "ft" / "predictions.parquet").to_pandas()
    assert (predictions["prediction_time"] >= pd.Timestamp(cut)).all()
    dataset = read_meds(small_sites[0])
    splits = task_arrays(dataset, "asthma", training_vocabulary([dataset]))
    kept = out_of_time(splits, date.fromisoformat(cut), tmp_path)
    day = (np.datetime64(cut) - np.datetime64(0, "D")).astype(int)
    assert all((kept[name]["prediction_day"] < day).all() for name in ("train", "tuning"))
    assert (kept["held_out"]["prediction_day"] >= day).all() and len(kept["held_out"]["label"]) > 0
    assert len(kept["held_out"]["label"]) < len(splits["held_out"]["label"])
    for bad, says in (("2099-01-01", "no sample in held_out"), ("2020-13-01", "Invalid value")):
        result = CliRunner().invoke(app, [*base, "--test-from", bad, "--out", str(tmp_path / bad)])
        assert result.exit_code == 2 and says in result.output and "Traceback" not in result.output, result.output
        assert not (tmp_path / bad / "metrics.json").exists()


def test_summarize_puts_results_side_by_side(tmp_path: Path) -> None:
    for name, record in {
        "a": {"model": "transformer", "pretrained": True, "auroc": 0.81234},
        "b": {"model": "logreg", "pretrained": False, "auroc": 0.79},
    }.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.json").write_text(
            json.dumps({**record, "task": "asthma", "train_size": 300, "data": f"/x/site-{name}", "auprc": 0.5})
        )
    result = CliRunner().invoke(
        app, ["summarize", str(tmp_path / "a" / "metrics.json"), str(tmp_path / "b" / "metrics.json")]
    )
    assert result.exit_code == 0, result.output
    assert "pretrained" in result.output and "logreg" in result.output and "0.812" in result.output


@pytest.mark.parametrize("model", ["transformer", "logreg"])
def test_a_model_can_be_scored_on_another_sample_of_the_sites_population(
    model: str, small_sites: list[Path], tmp_path: Path
) -> None:
    """`scored_on`: every held-out patient of that dataset is scored, on its own events, and
    nothing of the site's own held-out split."""
    population = read_meds(synthesize_populations(tmp_path, [1500, 1000, 800], 11, 300)[0])
    outcome = finetune_and_score(
        read_meds(small_sites[0]),
        "asthma",
        train_size=200,
        seed=0,
        model=model,
        settings=FinetuneSettings(seed=0, epochs=1),
        scored_on=population,
    )
    labels = population.labels["asthma"]
    assert (
        outcome.record["held_out_size"] == len(labels)
        and outcome.record["held_out_positives"] == labels["boolean_value"].sum()
    )
    assert set(outcome.predictions.column("subject_id").to_pylist()) == set(labels["subject_id"])
    assert len(np.unique(outcome.held_out_scores)) > 10  # read from the population's events, not a blank
    with pytest.raises(ValueError, match="cannot be combined"):
        finetune_and_score(
            read_meds(small_sites[0]), "asthma", train_size=50, seed=0, scored_on=population, test_from=date(2020, 1, 1)
        )
