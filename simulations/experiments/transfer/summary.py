"""Means over seeds with 95% bootstrap intervals, and paired differences between modes.

Every cell resamples the site's held-out patients (the same resamples for every mode of one site,
task and cohort size, so differences between modes are paired) and averages the metric over
seeds within each resample: the interval is the held-out sampling uncertainty of the seed mean.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from shared_model.metrics import bootstrap_weights, weighted_auroc, weighted_average_precision
from shared_model.tasks import NEXT_VISIT

CELL = ["task", "cohort_size", "finetune_site", "mode", "pretraining_sites"]
LEVEL = 0.95


def primary_metric(task: str) -> str:
    return "recall@10" if task == NEXT_VISIT else "auroc"


def metrics_of(task: str) -> tuple[str, ...]:
    return ("recall@5", "recall@10", "recall@30") if task == NEXT_VISIT else ("auroc", "auprc")


@dataclass(frozen=True)
class Cell:
    """One cell of the grid: its seed-mean and the bootstrap distribution of that mean."""

    mean: dict[str, float]
    draws: dict[str, np.ndarray]
    seeds: int


def _resample_seed(task: str, size: int, site: str, n: int) -> list[int]:
    return [zlib.crc32(f"{task}|{size}|{site}".encode()), n]


def cell_draws(predictions: list[Path], task: str, weights: np.ndarray) -> dict[str, np.ndarray]:
    """Bootstrap draws (one per weights row) of each metric averaged over the runs' predictions."""
    per_run: dict[str, list[np.ndarray]] = {m: [] for m in metrics_of(task)}
    for path in predictions:
        with np.load(path) as stored:
            if task == NEXT_VISIT:
                recall = stored["per_sample_recall"].astype(np.float64)
                for i, name in enumerate(metrics_of(task)):
                    per_run[name].append(weights @ recall[:, i] / weights.sum(axis=1))
            else:
                per_run["auroc"].append(weighted_auroc(stored["labels"], stored["scores"], weights))
                per_run["auprc"].append(weighted_average_precision(stored["labels"], stored["scores"], weights))
    return {name: np.mean(values, axis=0) for name, values in per_run.items()}


def summarise(out: Path, n_boot: int) -> dict[tuple, Cell]:
    """One Cell per (task, cohort size, fine-tuning site, mode, pretraining sites)."""
    results = pd.read_csv(out / "results.csv", keep_default_na=False, na_values=[""])
    results["pretraining_sites"] = results["pretraining_sites"].fillna("")
    cells: dict[tuple, Cell] = {}
    weights_cache: dict[tuple, np.ndarray] = {}
    for key, group in results.groupby(CELL, sort=True):
        task, size, site = key[0], int(key[1]), key[2]
        paths = [out / "predictions" / f"{run_id}.npz" for run_id in group["run_id"]]
        n = _rows(paths[0], task)
        if any(_rows(p, task) != n for p in paths):
            raise ValueError(f"runs of {key} were scored on held-out sets of different sizes")
        wkey = (task, size, site, n)
        if wkey not in weights_cache:
            weights_cache[wkey] = bootstrap_weights(n, n_boot, _resample_seed(task, size, site, n))
        draws = cell_draws(paths, task, weights_cache[wkey])
        mean = {m: float(group[m].mean()) for m in metrics_of(task)}
        cells[key] = Cell(mean, draws, len(group))
    return cells


def _rows(path: Path, task: str) -> int:
    with np.load(path) as stored:
        return len(stored["per_sample_recall" if task == NEXT_VISIT else "labels"])


def interval(draws: np.ndarray) -> tuple[float, float]:
    finite = draws[np.isfinite(draws)]
    if not len(finite):
        return float("nan"), float("nan")
    lo, hi = np.percentile(finite, [(1 - LEVEL) / 2 * 100, (1 + LEVEL) / 2 * 100])
    return float(lo), float(hi)


def cell_table(cells: dict[tuple, Cell]) -> pd.DataFrame:
    """Long table: one row per cell and metric with mean and interval."""
    rows = []
    for (task, size, site, mode, pretraining), cell in cells.items():
        for metric, mean in cell.mean.items():
            lo, hi = interval(cell.draws[metric])
            rows.append(
                {
                    "task": task,
                    "cohort_size": size,
                    "finetune_site": site,
                    "mode": mode,
                    "pretraining_sites": pretraining,
                    "metric": metric,
                    "mean": mean,
                    "lo": lo,
                    "hi": hi,
                    "seeds": cell.seeds,
                }
            )
    return pd.DataFrame(rows)


def paired_difference(
    cells: dict[tuple, Cell], task: str, size: int, site: str, mode: str, baseline: str
) -> tuple[float, float, float] | None:
    """mean(mode) - mean(baseline) on the primary metric, with its paired bootstrap interval."""
    first, second = _find(cells, task, size, site, mode), _find(cells, task, size, site, baseline)
    if first is None or second is None:
        return None
    metric = primary_metric(task)
    lo, hi = interval(first.draws[metric] - second.draws[metric])
    return first.mean[metric] - second.mean[metric], lo, hi


def _find(cells: dict[tuple, Cell], task: str, size: int, site: str, mode: str) -> Cell | None:
    found = [c for (t, n, s, m, _), c in cells.items() if (t, n, s, m) == (task, size, site, mode)]
    return found[0] if len(found) == 1 else None
