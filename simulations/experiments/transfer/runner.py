"""Run the grid: pretrain (cached), fine-tune every run, append it to results.csv as it finishes.

A killed experiment restarts where it stopped: finished runs are read back from results.csv,
finished pretrainings from their checkpoints, and a federated run resumes from its last round.
results.csv holds only what the seed determines (no timings), so the same seed rewrites it byte
for byte; timings go to timings.csv.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from shared_model.data import read_meds
from shared_model.data.paths import atomic_write_parquet
from shared_model.evaluation.metrics import per_sample_recall_at_k
from shared_model.model.config import ClaimTransformerConfig
from shared_model.settings import FinetuneSettings
from shared_model.tensors.tasks import NEXT_VISIT
from shared_model.training.finetuning import FinetuneOutcome, finetune_and_score
from simulations.experiments.common import (
    FederatedRunner,
    default_federated_runner,
    find_sites,
    same_settings_or_refuse,
)
from simulations.experiments.transfer.grid import BASELINE_MODES, TransferConfig, enumerate_runs
from simulations.experiments.transfer.pretraining import CheckpointCache, pretraining_job
from simulations.experiments.transfer.report import Report, write_outputs

log = logging.getLogger(__name__)
RESULT_NEUTRAL = ("bootstrap", "parallel_clients")  # settings that may change between restarts
METRIC_COLUMNS = ["auroc", "auprc", "brier", "ece", "recall@5", "recall@10", "recall@30"]
RESULT_COLUMNS = [
    "run_id",
    "task",
    "cohort_size",
    "finetune_site",
    "mode",
    "pretraining_sites",
    "seed",
    "train_size",
    "train_positives",
    "held_out_size",
    *METRIC_COLUMNS,
    "pretrained_checkpoint",
]


def _read_done(results_csv: Path) -> pd.DataFrame:
    if results_csv.exists():
        return pd.read_csv(results_csv, keep_default_na=False, na_values=[""])
    return pd.DataFrame(columns=RESULT_COLUMNS)


def _append(path: Path, row: dict, columns: list[str]) -> None:
    frame = pd.DataFrame([row], columns=columns)
    frame.to_csv(path, mode="a", header=not path.exists(), index=False)


def save_predictions(path: Path, task: str, outcome: FinetuneOutcome) -> None:
    """What the summaries need: labels, probabilities, sex and age band (binary tasks), or
    per-sample Recall@5/10/30 (next visit)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    targets, scores = outcome.held_out_targets, outcome.held_out_scores
    if task == NEXT_VISIT:
        np.savez_compressed(path, per_sample_recall=per_sample_recall_at_k(targets, scores).astype(np.float32))
    else:
        np.savez_compressed(
            path,
            labels=np.asarray(targets, dtype=np.int8),
            scores=np.asarray(scores, np.float32),
            **outcome.held_out_groups,
        )


def run_transfer_experiment(
    data: Path,
    out: Path,
    config: TransferConfig,
    *,
    pretrained: Path | None = None,
    federated_runner: FederatedRunner = default_federated_runner,
) -> Report:
    """Run (or resume) the grid in `out` and write its report (results.md, report.html, plots).

    `pretrained` (default `out/pretrained`) is where encoders are built and looked up; another
    grid's directory lets a second grid on the same sites reuse its encoders (each is keyed by its
    settings and the sites' data fingerprints, so a mismatch is rebuilt, never reused)."""
    out = Path(out)
    site_dirs = find_sites(data)
    out.mkdir(parents=True, exist_ok=True)
    grid = {k: v for k, v in config.to_dict().items() if k not in RESULT_NEUTRAL}
    same_settings_or_refuse(out / "config.json", {"config": grid, "sites": list(site_dirs)})
    cache = CheckpointCache(
        pretrained or out / "pretrained",
        site_dirs,
        parallel_clients=config.parallel_clients,
        federated_runner=federated_runner,
    )
    runs = enumerate_runs(config, list(site_dirs))
    results_csv = out / "results.csv"
    done = set(_read_done(results_csv)["run_id"])
    todo = [r for r in runs if r.run_id not in done]
    log.info("transfer grid: %d runs, %d already done, %d to run", len(runs), len(runs) - len(todo), len(todo))
    datasets = {}
    scratch_config = ClaimTransformerConfig(vocab_size=3, n_groups=1, time_encoding=config.time_encoding)
    finetune_seconds = 0.0
    jobs_left = {job for job in (pretraining_job(r, config) for r in todo) if job and not cache.built(job)}
    for index, run in enumerate(todo, start=1):
        job = pretraining_job(run, config)
        checkpoint = cache.get(job) if job else None
        jobs_left.discard(job)
        if run.site not in datasets:
            datasets[run.site] = read_meds(site_dirs[run.site])
        run_started = time.perf_counter()
        outcome = finetune_and_score(
            datasets[run.site],
            run.task,
            train_size=run.cohort_size or None,
            seed=run.seed,
            checkpoint=checkpoint,
            model=run.mode if run.mode in BASELINE_MODES else "transformer",
            settings=FinetuneSettings(seed=run.seed, epochs=config.finetune_epochs, guard=False),
            model_config=scratch_config,  # a pretrained checkpoint brings its own
            test_from=config.test_from_date,
        )
        save_predictions(out / "predictions" / f"{run.run_id}.npz", run.task, outcome)
        if outcome.predictions is not None:  # the same, for MEDS tools (meds-evaluation, MEDS-DEV)
            atomic_write_parquet(out / "predictions" / f"{run.run_id}.parquet", outcome.predictions)
        record = outcome.record
        _append(
            results_csv,
            {
                "run_id": run.run_id,
                "task": run.task,
                "cohort_size": run.cohort_size,
                "finetune_site": run.site,
                "mode": run.mode,
                "pretraining_sites": "+".join(run.pretraining),
                "seed": run.seed,
                "train_size": record["train_size"],
                "train_positives": record.get("train_positives"),
                "held_out_size": record["held_out_size"],
                **{k: record.get(k) for k in METRIC_COLUMNS},
                "pretrained_checkpoint": cache.directory(job).name if job else "",
            },
            RESULT_COLUMNS,
        )
        seconds = time.perf_counter() - run_started
        _append(out / "timings.csv", {"run_id": run.run_id, "seconds": round(seconds, 2)}, ["run_id", "seconds"])
        finetune_seconds += seconds
        remaining = len(todo) - index
        log.info(
            "[%d/%d] %s: %s; %d runs to go (about %.0f min of fine-tuning) and %d pretrainings to build",
            len(runs) - remaining,
            len(runs),
            run.run_id,
            _headline(record, run.task),
            remaining,
            finetune_seconds / index * remaining / 60,
            len(jobs_left),
        )
    return write_outputs(out, config, list(site_dirs), cache)


def _headline(record: dict, task: str) -> str:
    return f"Recall@10 {record['recall@10']:.3f}" if task == NEXT_VISIT else f"AUROC {record['auroc']:.3f}"
