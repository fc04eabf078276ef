"""Means over seeds with 95% bootstrap intervals, and paired differences between modes.

Every cell resamples the site's held-out patients (the same resamples for every mode and cohort
size of one site and task, so differences between modes, and between cohort sizes, are paired)
and averages the metric over seeds within each resample: the interval is the held-out sampling
uncertainty of the seed mean.

"best-baseline" is, per site, task and cohort size, whichever count-feature baseline (logistic
regression or gradient-boosted trees) has the higher held-out mean: chosen on the test data, so
it favours the baselines, and a pretrained model that beats it beats each of them.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from shared_model.evaluation.metrics import bootstrap_weights, weighted_auroc, weighted_average_precision
from shared_model.tensors.tasks import NEXT_VISIT
from simulations.experiments.transfer.grid import BASELINE_MODES

CELL = ["task", "cohort_size", "finetune_site", "mode", "pretraining_sites"]
LEVEL = 0.95
BEST_BASELINE = "best-baseline"


def primary_metric(task: str) -> str:
    return "recall@10" if task == NEXT_VISIT else "auroc"


def metrics_of(task: str) -> tuple[str, ...]:
    return ("recall@5", "recall@10", "recall@30") if task == NEXT_VISIT else ("auroc", "auprc", "brier")


@dataclass(frozen=True)
class Cell:
    """One cell of the grid: its seed-mean, the bootstrap distribution of that mean, the runs'
    prediction files, and the bootstrap weights they were resampled with."""

    mean: dict[str, float]
    draws: dict[str, np.ndarray]
    seeds: int
    predictions: tuple[Path, ...]
    weights: np.ndarray
    train_positives: float  # mean over seeds (NaN for next_visit)
    source: str = ""  # best-baseline: the baseline it is


def _resample_seed(task: str, site: str, n: int) -> list[int]:
    return [zlib.crc32(f"{task}|{site}".encode()), n]


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
                labels, scores = stored["labels"], stored["scores"].astype(np.float64)
                per_run["auroc"].append(weighted_auroc(labels, scores, weights))
                per_run["auprc"].append(weighted_average_precision(labels, scores, weights))
                per_run["brier"].append(weights @ (scores - labels) ** 2 / weights.sum(axis=1))
    return {name: np.mean(values, axis=0) for name, values in per_run.items()}


def summarise(out: Path, n_boot: int) -> dict[tuple, Cell]:
    """One Cell per (task, cohort size, fine-tuning site, mode, pretraining sites)."""
    results = pd.read_csv(out / "results.csv", keep_default_na=False, na_values=[""])
    results["pretraining_sites"] = results["pretraining_sites"].fillna("")
    cells: dict[tuple, Cell] = {}
    weights_cache: dict[tuple, np.ndarray] = {}
    for key, group in results.groupby(CELL, sort=True):
        task, site = key[0], key[2]
        paths = [out / "predictions" / f"{run_id}.npz" for run_id in group["run_id"]]
        n = _rows(paths[0], task)
        if any(_rows(p, task) != n for p in paths):
            raise ValueError(f"runs of {key} were scored on held-out sets of different sizes")
        wkey = (task, site, n)
        if wkey not in weights_cache:
            weights_cache[wkey] = bootstrap_weights(n, n_boot, _resample_seed(task, site, n))
        draws = cell_draws(paths, task, weights_cache[wkey])
        mean = {m: float(group[m].mean()) for m in metrics_of(task)}
        positives = float(pd.to_numeric(group["train_positives"], errors="coerce").mean())
        cells[key] = Cell(mean, draws, len(group), tuple(paths), weights_cache[wkey], positives)
    return {**cells, **best_baselines(cells)}


def best_baselines(cells: dict[tuple, Cell]) -> dict[tuple, Cell]:
    """Per (task, cohort size, site) with both baselines: the better one's cell, named best-baseline."""
    found: dict[tuple, list[tuple[str, Cell]]] = {}
    for (task, size, site, mode, _), cell in cells.items():
        if mode in BASELINE_MODES:
            found.setdefault((task, size, site), []).append((mode, cell))
    best = {}
    for (task, size, site), candidates in found.items():
        if len(candidates) == len(BASELINE_MODES):
            mode, cell = max(candidates, key=lambda c: np.nan_to_num(c[1].mean[primary_metric(task)], nan=-1.0))
            best[(task, size, site, BEST_BASELINE, "")] = replace(cell, source=mode)
    return best


def _rows(path: Path, task: str) -> int:
    with np.load(path) as stored:
        return len(stored["per_sample_recall" if task == NEXT_VISIT else "labels"])


def format_cell(mean: float, lo: float, hi: float) -> str:
    """'mean [lo, hi]' to three decimals, or n/a for a cell with no finite value."""
    return "n/a" if not np.isfinite(mean) else f"{mean:.3f} [{lo:.3f}, {hi:.3f}]"


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
                    "train_positives": cell.train_positives,
                    "source": cell.source,
                }
            )
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class Difference:
    """mean(mode) - mean(baseline) on the primary metric, its paired bootstrap draws and interval."""

    mean: float
    draws: np.ndarray

    @property
    def interval(self) -> tuple[float, float]:
        return interval(self.draws)

    def __str__(self) -> str:
        lo, hi = self.interval
        return f"{self.mean:+.3f} [{lo:+.3f}, {hi:+.3f}]"


def paired_difference(
    cells: dict[tuple, Cell],
    task: str,
    size: int,
    site: str,
    mode: str,
    baseline: str,
    baseline_size: int | None = None,
) -> Difference | None:
    """mode at `size` minus baseline at `baseline_size` (default the same size), on the site's
    held-out patients resampled alike."""
    first = _find(cells, task, size, site, mode)
    second = _find(cells, task, size if baseline_size is None else baseline_size, site, baseline)
    if first is None or second is None:
        return None
    metric = primary_metric(task)
    return Difference(first.mean[metric] - second.mean[metric], first.draws[metric] - second.draws[metric])


def mean_difference(differences: list[Difference]) -> Difference:
    """The average of differences at independent sites or sizes, with the draws averaged alike."""
    return Difference(float(np.mean([d.mean for d in differences])), np.mean([d.draws for d in differences], axis=0))


def _find(cells: dict[tuple, Cell], task: str, size: int, site: str, mode: str) -> Cell | None:
    found = [c for (t, n, s, m, _), c in cells.items() if (t, n, s, m) == (task, size, site, mode)]
    return found[0] if len(found) == 1 else None
