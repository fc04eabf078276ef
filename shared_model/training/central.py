"""Central (pooled) pretraining: the comparison for federated pretraining, on data one party holds."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd

from shared_model.contract.checkpoint import save_checkpoint
from shared_model.data import DataValidationError, read_meds
from shared_model.evaluation.metrics import group_frequency_scores, recall_at_k
from shared_model.model.config import ClaimTransformerConfig
from shared_model.settings import VocabularySettings
from shared_model.tensors.store import SPLITS, open_shards, streaming_vocabulary, tensorize_to_shards
from shared_model.tensors.tasks import NEXT_VISIT, task_arrays, training_vocabulary
from shared_model.tensors.tensorize import Arrays
from shared_model.tensors.vocabulary import Vocabulary
from shared_model.training.fit import HeldOutRecall, PretrainSettings, evaluate_nvp, pretrain

log = logging.getLogger(__name__)


def _pretraining_data(
    data_dirs: list[Path], out: Path, settings: VocabularySettings, stream: bool
) -> tuple[Vocabulary, list[dict[str, list[Arrays]]]]:
    """The pooled vocabulary and every site's next-visit samples per split (in memory, or in
    memory-mapped shards under RUN/shards/)."""
    if stream:
        vocabulary = streaming_vocabulary(data_dirs, settings)
        for path in data_dirs:
            tensorize_to_shards(path, vocabulary, out / "shards" / Path(path).name, overwrite=True)
        splits = [{name: open_shards(out / "shards" / Path(p).name, name) for name in SPLITS} for p in data_dirs]
    else:
        sites = [read_meds(p) for p in data_dirs]
        vocabulary = training_vocabulary(sites, settings)
        splits = [{name: [part] for name, part in task_arrays(site, NEXT_VISIT, vocabulary).items()} for site in sites]
    if not any(len(part["subject_id"]) for s in splits for part in s["train"]):
        raise DataValidationError(
            ", ".join(str(p) for p in data_dirs),
            "train-split subjects with events on at least two days, a later one holding a code of the target "
            f"coding systems ({', '.join(vocabulary.target_vocabularies)}): next-visit pretraining has no sample",
            found="none",
        )
    return vocabulary, splits


def run_central_pretraining(
    data_dirs: list[Path],
    out: Path,
    *,
    settings: PretrainSettings,
    model_options: dict[str, Any] | None = None,
    vocabulary_settings: VocabularySettings = VocabularySettings(),
    stream: bool = False,
) -> dict[str, Any]:
    """Pool the sites, build the vocabulary on their train splits, pretrain NVP + CP with early
    stopping on the pooled tuning split; write RUN/checkpoint, RUN/history.csv, RUN/metrics.json.

    With `stream`, every site is first tensorised file by file into memory-mapped shards
    (RUN/shards/<site>/, shared_model.tensors.store) and training reads them from disk: peak memory is
    bounded by one MEDS data file and a batch, whatever the cohort's size."""
    out = Path(out)
    fresh = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        vocabulary, splits = _pretraining_data(data_dirs, out, vocabulary_settings, stream)
    except DataValidationError:
        if fresh:  # bad input writes nothing
            shutil.rmtree(out, ignore_errors=True)
        raise
    log.info("vocabulary: %d codes, %d target groups", len(vocabulary.codes), vocabulary.n_groups)
    config = ClaimTransformerConfig(vocab_size=vocabulary.size, n_groups=vocabulary.n_groups, **(model_options or {}))
    model, history = pretrain(
        config,
        [part for s in splits for part in s["train"]],
        [part for s in splits for part in s["tuning"]],
        settings,
        callbacks=[
            HeldOutRecall([part for s in splits for part in s["held_out"]]),  # before TensorBoard: it logs these
            keras.callbacks.TensorBoard(out / "tensorboard", write_graph=False, profile_batch=0),
        ],
    )
    save_checkpoint(
        out / "checkpoint",
        model,
        config,
        vocabulary,
        extra={
            "mode": "central",
            "sites": [str(p) for p in data_dirs],
            "seed": settings.seed,
            "epochs_run": len(history.get("loss", [])),
        },
    )
    pd.DataFrame(history).rename_axis("epoch").to_csv(out / "history.csv")
    metrics = nvp_report(model, splits, [Path(p).name for p in data_dirs], vocabulary.n_groups)
    metrics.update(
        mode="central", seed=settings.seed, precision=model.precision, epochs_run=len(history.get("loss", []))
    )
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def nvp_report(model, splits: list[dict[str, list[Arrays]]], names: list[str], n_groups: int) -> dict[str, Any]:
    """NVP Recall@k on the held-out splits (pooled and per site) and the most-frequent-groups
    baseline; `splits` holds each site's parts per split."""
    held_out = [part for s in splits for part in s["held_out"]]
    train_targets = np.concatenate([part["target_groups"] for s in splits for part in s["train"]])
    pooled_targets = np.concatenate([part["target_groups"] for part in held_out])
    baseline = recall_at_k(pooled_targets, group_frequency_scores(train_targets, n_groups, len(pooled_targets)))
    return {
        "nvp_held_out": evaluate_nvp(model, held_out),
        "nvp_held_out_by_site": {
            name: evaluate_nvp(model, site["held_out"]) for name, site in zip(names, splits, strict=True)
        },
        "most_frequent_groups_baseline": baseline,
        "held_out_samples": int(len(pooled_targets)),
    }
