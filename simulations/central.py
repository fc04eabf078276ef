"""Central (pooled) pretraining: the comparison for federated pretraining, on data one party holds."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from shared_model.checkpoint import save_checkpoint
from shared_model.config import ClaimTransformerConfig
from shared_model.data import read_meds
from shared_model.metrics import group_frequency_scores, recall_at_k
from shared_model.tasks import NEXT_VISIT, task_arrays, training_vocabulary
from shared_model.training import HeldOutRecall, PretrainSettings, evaluate_nvp, pretrain

log = logging.getLogger(__name__)


def run_central_pretraining(
    data_dirs: list[Path],
    out: Path,
    *,
    settings: PretrainSettings,
    model_options: dict[str, Any] | None = None,
    min_count: int = 1,
    max_vocab: int | None = None,
) -> dict[str, Any]:
    """Pool the sites, build the vocabulary on their train splits, pretrain NVP + CP with early
    stopping on the pooled tuning split; write RUN/checkpoint, RUN/history.csv, RUN/metrics.json."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sites = [read_meds(p) for p in data_dirs]
    vocabulary = training_vocabulary(sites, min_count=min_count, max_size=max_vocab)
    log.info("vocabulary: %d codes, %d target groups", len(vocabulary.codes), vocabulary.n_groups)
    config = ClaimTransformerConfig(vocab_size=vocabulary.size, n_groups=vocabulary.n_groups, **(model_options or {}))
    splits = [task_arrays(site, NEXT_VISIT, vocabulary) for site in sites]
    model, history = pretrain(
        config,
        [s["train"] for s in splits],
        [s["tuning"] for s in splits],
        settings,
        callbacks=[HeldOutRecall([s["held_out"] for s in splits])],
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
    metrics.update(mode="central", seed=settings.seed, epochs_run=len(history.get("loss", [])))
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def nvp_report(model, splits: list[dict], names: list[str], n_groups: int) -> dict[str, Any]:
    """NVP Recall@k on the held-out splits (pooled and per site) and the most-frequent-groups baseline."""
    held_out = [s["held_out"] for s in splits]
    train_targets = np.concatenate([s["train"]["target_groups"] for s in splits])
    pooled_targets = np.concatenate([h["target_groups"] for h in held_out])
    baseline = recall_at_k(pooled_targets, group_frequency_scores(train_targets, n_groups, len(pooled_targets)))
    return {
        "nvp_held_out": evaluate_nvp(model, held_out),
        "nvp_held_out_by_site": {name: evaluate_nvp(model, [h]) for name, h in zip(names, held_out, strict=True)},
        "most_frequent_groups_baseline": baseline,
        "held_out_samples": int(len(pooled_targets)),
    }
