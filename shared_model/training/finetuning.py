"""Fine-tune one task at one site on a small labelled cohort; evaluate on the site's held-out split.

Models: "transformer" (from a pretrained checkpoint, or from scratch without one), and the
count-feature baselines "logreg" (bag-of-codes logistic regression) and "gbm" (LightGBM on
windowed code counts), their one parameter by cross-validation over train + tuning. All draw the
same cohort.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from shared_model.contract.checkpoint import KIND_PRETRAINING, KIND_TASK, Checkpoint, assign_weights, save_checkpoint
from shared_model.data import DataValidationError, MedsDataset
from shared_model.data.paths import atomic_write_parquet
from shared_model.evaluation.metrics import auroc, binary_metrics, recall_at_k
from shared_model.evaluation.predictions import meds_predictions, probabilities
from shared_model.evaluation.subgroups import demographic_groups
from shared_model.model.config import ClaimTransformerConfig
from shared_model.model.transformer import TASK_BINARY, PretrainingModel, TaskModel, build_encoder
from shared_model.settings import MODELS
from shared_model.tensors.tasks import NEXT_VISIT, task_arrays, task_kind, task_target, training_vocabulary
from shared_model.tensors.tensorize import Arrays, select
from shared_model.tensors.vocabulary import Vocabulary
from shared_model.training import guard
from shared_model.training.baselines import TREES, bag_of_codes, gbm_classifier, logreg_pipeline, windowed_counts
from shared_model.training.fit import FinetuneSettings, finetune, predict_task, seed_everything
from shared_model.training.guard import PRETRAINED, SCRATCH
from shared_model.training.model_selection import choose_c

log = logging.getLogger(__name__)
PREDICTIONS_FILE = "predictions.parquet"  # the held-out split's, MEDS-DEV format
MIN_TUNING = 100
LOGREG_C = (0.01, 0.1, 1.0)


@dataclass(frozen=True)
class Cohort:
    train: Arrays
    tuning: Arrays
    held_out: Arrays


def out_of_time(splits: dict[str, Arrays], test_from: dt.date, source: Path) -> dict[str, Arrays]:
    """Temporal validation: train and tune on prediction times before `test_from`, evaluate on
    held-out patients' prediction times from that day on (coding practice drifts between years).
    A training sample's label window may still reach past the cut, as when a model is trained on
    last year's patients and used from today."""
    cut = (np.datetime64(test_from, "D") - np.datetime64(0, "D")).astype(np.int64)
    kept = {
        name: select(
            arrays, (arrays["prediction_day"] >= cut) if name == "held_out" else (arrays["prediction_day"] < cut)
        )
        for name, arrays in splits.items()
    }
    empty = [name for name, arrays in kept.items() if not len(arrays["subject_id"])]
    if empty:
        side = {"held_out": f"from {test_from} on"}
        raise DataValidationError(
            source,
            f"prediction times on both sides of the out-of-time cut {test_from}",
            found="no sample in " + ", ".join(f"{name} ({side.get(name, f'before {test_from}')})" for name in empty),
        )
    return kept


#: what a sample holds that neither the subject's id nor the vocabulary changes
VOCABULARY_FREE = ("prediction_day", "label", "demo", "visit_type", "date_index", "days_before", "age_days")


def _first(arrays: Arrays, count: int, seed: int) -> np.ndarray:
    """The `count` samples ranked first by a seeded hash of their vocabulary-free content, in
    order. The rank depends on neither the subject id (raw and pseudonymised data draw the same
    cohort) nor the codes' vocabulary ids, so models whose vocabularies keep slightly different
    samples (one lacking a patient whose codes are all rare) draw the same cohort save that
    patient, and the comparison between them stays paired."""
    n = len(arrays["subject_id"])
    columns = [
        np.ascontiguousarray(arrays[name]).reshape(n, -1).view(np.uint8).reshape(n, -1) for name in VOCABULARY_FREE
    ]
    rows = np.concatenate(columns, axis=1) if n else np.zeros((0, 0), np.uint8)
    key = seed.to_bytes(8, "little", signed=True)
    keys = [hashlib.blake2b(row.tobytes(), digest_size=8, key=key).digest() for row in rows]
    return np.sort(np.argsort(np.array(keys, dtype="S8"), kind="stable")[:count])


def draw_cohort(splits: dict[str, Arrays], train_size: int | None, seed: int) -> Cohort:
    """`train_size` samples from the train split (None: all), and a tuning set of a quarter of that
    size (at least 100) from the tuning split, for early stopping and model choice."""
    n_train = len(splits["train"]["subject_id"])
    size = n_train if train_size is None else min(train_size, n_train)
    tuning_size = min(len(splits["tuning"]["subject_id"]), max(MIN_TUNING, size // 4))
    train, tuning = splits["train"], splits["tuning"]
    return Cohort(
        select(train, _first(train, size, seed)), select(tuning, _first(tuning, tuning_size, seed)), splits["held_out"]
    )


def _labels_frame(arrays: Arrays) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "subject_id": arrays["subject_id"],
            "prediction_time": arrays["prediction_day"].astype("datetime64[D]").astype("datetime64[us]"),
            "boolean_value": arrays["label"] > 0.5,
        }
    )


GUARD_BASELINE = "logreg"  # the count baseline the guard compares against (the cheaper of the two)
#: baseline -> (features, classifier for a parameter value, candidate values simplest first, record key)
BASELINES: dict[str, tuple[Callable, Callable, tuple, str]] = {
    "logreg": (bag_of_codes, lambda c, seed: logreg_pipeline(seed=seed, C=c), LOGREG_C, "logreg_c"),
    "gbm": (windowed_counts, lambda trees, seed: gbm_classifier(seed=seed, trees=trees), TREES, "gbm_trees"),
}


def baseline_scores(
    model: str, dataset: MedsDataset, cohort: Cohort, seed: int, scored: MedsDataset
) -> tuple[np.ndarray, np.ndarray, float]:
    """A count-feature baseline (logistic regression or gradient-boosted trees) whose one parameter
    is chosen like the transformer's probe (model_selection.choose_c: cross-validation over train +
    tuning, the simplest candidate within one standard error); returns held-out probabilities (of
    the held-out patients in `scored`: `dataset` or a sample scored in its place), the tuning
    patients' probabilities and the chosen value. Fitted on the train cohort only."""
    features, classifier, candidates, _ = BASELINES[model]
    train, tuning, held_out = (_labels_frame(a) for a in (cohort.train, cohort.tuning, cohort.held_out))
    x_train, vocabulary = features(dataset.events, train)
    x_tuning, _ = features(dataset.events, tuning, vocabulary)
    x_held_out, _ = features(scored.events, held_out, vocabulary)
    y_train = train["boolean_value"].to_numpy()
    if len(np.unique(y_train)) < 2:
        rate = float(y_train.mean())
        return np.full(len(held_out), rate), np.full(len(tuning), rate), float("nan")
    y_tuning = tuning["boolean_value"].to_numpy()
    chosen = choose_c(lambda value: classifier(value, seed), candidates, x_train, y_train, x_tuning, y_tuning, seed)
    fitted = classifier(chosen, seed).fit(x_train, y_train)
    return fitted.predict_proba(x_held_out)[:, 1], fitted.predict_proba(x_tuning)[:, 1], chosen


@dataclass(frozen=True)
class FinetuneOutcome:
    """The metrics record plus what it was computed from, for bootstrap intervals and paired
    comparisons: held-out labels (binary) or target groups (next visit), and the model's scores."""

    record: dict[str, Any]
    held_out_targets: np.ndarray
    held_out_scores: np.ndarray
    held_out_groups: dict[str, np.ndarray]  # sex and age band of each held-out sample
    predictions: pa.Table | None = None  # binary tasks: the held-out predictions, MEDS-DEV format


def _guarded(
    pretrained: TaskModel,
    config: ClaimTransformerConfig,
    dataset: MedsDataset,
    cohort: Cohort,
    settings: FinetuneSettings,
    seed: int,
    scored: MedsDataset,
) -> tuple[TaskModel, dict[str, Any]]:
    """The default path's guard (shared_model.training.guard): the same network from scratch and the count
    baseline fitted on the same cohort; the pretrained model is kept unless the tuning patients
    show it clearly worse. The record also holds each candidate's held-out AUROC, for studies of
    the guard: they play no part in the choice."""
    seed_everything(seed)
    scratch = finetune(
        build_encoder(config), TASK_BINARY, 1, cohort.train, cohort.tuning, "label", settings, config.n_layers,
        pretrained=False,
    )  # fmt: skip
    baseline_held_out, baseline_tuning, _ = baseline_scores(GUARD_BASELINE, dataset, cohort, seed, scored)
    candidates = {PRETRAINED: pretrained, SCRATCH: scratch}
    tuning = {name: predict_task(model, cohort.tuning, "label") for name, model in candidates.items()}
    choice = guard.choose(
        cohort.tuning["label"], tuning[PRETRAINED], tuning[SCRATCH], GUARD_BASELINE, baseline_tuning, seed
    )
    labels = cohort.held_out["label"]
    held_out = {
        name: auroc(labels, predict_task(model, cohort.held_out, "label")) for name, model in candidates.items()
    }
    held_out[GUARD_BASELINE] = auroc(labels, baseline_held_out)
    log.info("guard: kept the %s model: %s", choice.chosen, choice.reason)
    if choice.baseline_better:
        log.warning(
            "the count baseline (%s) beats the chosen transformer on the tuning patients (AUROC %.3f vs %.3f): "
            "consider `--model %s`",
            GUARD_BASELINE,
            choice.tuning_auroc[GUARD_BASELINE],
            choice.tuning_auroc[choice.chosen],
            GUARD_BASELINE,
        )
    record = {**choice.to_record(), "held_out_auroc": {k: round(v, 4) for k, v in held_out.items()}}
    return candidates[choice.chosen], record


def run_finetune(dataset: MedsDataset, task: str, **options: Any) -> dict[str, Any]:
    """Fine-tune and evaluate; returns the metrics record (callers write it to out/metrics.json)."""
    return finetune_and_score(dataset, task, **options).record


def finetune_and_score(
    dataset: MedsDataset,
    task: str,
    *,
    train_size: int | None,
    seed: int,
    checkpoint: Checkpoint | None = None,
    model: str = "transformer",
    settings: FinetuneSettings | None = None,
    model_config: ClaimTransformerConfig | None = None,
    out: Path | None = None,
    test_from: dt.date | None = None,
    scored_on: MedsDataset | None = None,
) -> FinetuneOutcome:
    """Draw the cohort, fit the model, score the site's held-out split (with `test_from`: only
    its prediction times from that day on, the cohort's before it; with `scored_on`: that
    dataset's held-out split instead, such as a simulated site's population sample)."""
    if model not in MODELS:
        raise ValueError(f"model must be one of {MODELS}, got {model!r}")
    if model in BASELINES and task == NEXT_VISIT:
        raise ValueError(f"the {model} baseline supports binary tasks only")
    if scored_on is not None and test_from is not None:
        raise ValueError("scored_on and test_from cannot be combined")
    settings = settings or FinetuneSettings(seed=seed)
    started = time.perf_counter()
    vocabulary, config = _vocabulary_and_config(dataset, checkpoint, model_config)
    splits = task_arrays(dataset, task, vocabulary)
    if test_from is not None:
        source = dataset.root / "labels" / f"{task}.parquet" if task != NEXT_VISIT else dataset.root
        splits = out_of_time(splits, test_from, source)
    cohort = draw_cohort(splits, train_size, seed)
    scored = dataset if scored_on is None else scored_on
    if scored_on is not None:
        cohort = replace(cohort, held_out=task_arrays(scored_on, task, vocabulary)["held_out"])
    record = _cohort_record(task, model, checkpoint is not None, seed, cohort, test_from)
    if model in BASELINES:
        scores, _, record[BASELINES[model][3]] = baseline_scores(model, dataset, cohort, seed, scored)
    else:
        n_outputs = vocabulary.n_groups if task == NEXT_VISIT else 1
        task_model = _fitted_transformer(
            dataset, task, n_outputs, cohort, checkpoint, config, settings, seed, scored, record
        )
        scores = predict_task(task_model, cohort.held_out, task_target(task))
        record["settings"] = asdict(settings)
        if out is not None:
            _save_task_model(out, task_model, task, config, vocabulary)
    targets = cohort.held_out["target_groups" if task == NEXT_VISIT else "label"]
    predictions = None
    if task != NEXT_VISIT:
        # binary metrics are those of the published probabilities (float32, as MEDS-DEV stores them),
        # so that any tool reading predictions.parquet finds the same numbers
        scores = probabilities(scores, logits=model not in BASELINES)
        predictions = meds_predictions(cohort.held_out, scores, scored.labels[task])
        if out is not None:
            atomic_write_parquet(out / PREDICTIONS_FILE, predictions)
    record.update(recall_at_k(targets, scores) if task == NEXT_VISIT else binary_metrics(targets, scores))
    record["seconds"] = round(time.perf_counter() - started, 2)
    log.info(
        "%s %s n=%s: %s",
        task,
        model,
        record["train_size"],
        {k: round(v, 4) for k, v in record.items() if k.startswith(("auroc", "auprc", "recall"))},
    )
    return FinetuneOutcome(record, targets, scores, demographic_groups(cohort.held_out), predictions)


def _vocabulary_and_config(
    dataset: MedsDataset, checkpoint: Checkpoint | None, model_config: ClaimTransformerConfig | None
) -> tuple[Vocabulary, ClaimTransformerConfig]:
    """The checkpoint's vocabulary and model, or (from scratch) the site's own vocabulary and
    `model_config` sized to it."""
    if checkpoint is not None:
        if checkpoint.kind != KIND_PRETRAINING:
            raise ValueError(f"fine-tuning starts from a pretraining checkpoint, got kind {checkpoint.kind!r}")
        return checkpoint.vocabulary, checkpoint.config
    vocabulary = training_vocabulary([dataset])
    config = model_config or ClaimTransformerConfig(vocab_size=vocabulary.size, n_groups=vocabulary.n_groups)
    sized = {**config.to_dict(), "vocab_size": vocabulary.size, "n_groups": vocabulary.n_groups}
    return vocabulary, ClaimTransformerConfig.from_dict(sized)


def _cohort_record(
    task: str, model: str, pretrained: bool, seed: int, cohort: Cohort, test_from: dt.date | None
) -> dict[str, Any]:
    """metrics.json's description of the run and its cohort, before any metric."""
    record: dict[str, Any] = {
        "task": task,
        "model": model,
        "pretrained": pretrained,
        "seed": seed,
        "train_size": len(cohort.train["subject_id"]),
        "tuning_size": len(cohort.tuning["subject_id"]),
        "held_out_size": len(cohort.held_out["subject_id"]),
    }
    if test_from is not None:
        record["test_from"] = test_from.isoformat()
    if task != NEXT_VISIT:
        record["held_out_positives"] = int(cohort.held_out["label"].sum())
        record["train_positives"] = int(cohort.train["label"].sum())
    return record


def _fitted_transformer(
    dataset: MedsDataset,
    task: str,
    n_outputs: int,
    cohort: Cohort,
    checkpoint: Checkpoint | None,
    config: ClaimTransformerConfig,
    settings: FinetuneSettings,
    seed: int,
    scored: MedsDataset,
    record: dict[str, Any],
) -> TaskModel:
    """The transformer fine-tuned on the cohort (from the checkpoint's encoder, or from scratch),
    and for a binary task from a checkpoint, the guard's choice (written into `record`)."""
    seed_everything(seed)
    if checkpoint is not None:
        pretrained = PretrainingModel(config)
        assign_weights(pretrained, checkpoint)
        encoder = pretrained.encoder
    else:
        encoder = build_encoder(config)
    task_model = finetune(
        encoder,
        task_kind(task),
        n_outputs,
        cohort.train,
        cohort.tuning,
        task_target(task),
        settings,
        config.n_layers,
        pretrained=checkpoint is not None,
    )
    if checkpoint is not None and settings.guard and task != NEXT_VISIT:
        task_model, record["guard"] = _guarded(task_model, config, dataset, cohort, settings, seed, scored)
    return task_model


def _save_task_model(
    out: Path, task_model: TaskModel, task: str, config: ClaimTransformerConfig, vocabulary: Vocabulary
) -> None:
    save_checkpoint(
        out / "checkpoint",
        task_model,
        config,
        vocabulary,
        kind=KIND_TASK,
        extra={
            "task": task,
            "task_kind": task_kind(task),
            "n_outputs": task_model.head.units,
            "code_counts": task_model.code_counts is not None,
        },
    )
