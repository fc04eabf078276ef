"""Judging the fine-tuned models as clinical models: calibration, subgroups, and the curves of
AUROC against labelled patients averaged over sites.

Everything is computed from the stored held-out predictions of each cell (labels, probabilities,
sex and age band), resampled with the cell's own bootstrap weights, so subgroup intervals are
paired across modes like the main table's.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.calibration import calibration_curve

from shared_model.evaluation.metrics import auroc, expected_calibration_error, weighted_auroc
from simulations.experiments.transfer.plots import size_label
from simulations.experiments.transfer.summary import Cell, format_cell, interval, primary_metric

MIN_CLASS = 5  # a subgroup AUROC with fewer positives (or negatives) in the held-out set is not shown
SUBGROUPS = {"sex": "sex", "age_band": "age band"}


def _binary_cells(cells: dict[tuple, Cell], task: str, size: int) -> dict[tuple[str, str], Cell]:
    return {(site, mode): c for (t, n, site, mode, _), c in cells.items() if (t, n) == (task, size)}


def _load(cell: Cell) -> list[dict[str, np.ndarray]]:
    runs = []
    for path in cell.predictions:
        with np.load(path) as stored:
            runs.append({name: stored[name] for name in stored.files})
    return runs


def calibration_table(cells: dict[tuple, Cell], task: str, sizes: list[int], modes: list[str]) -> pd.DataFrame:
    """Rows (site, cohort size), columns modes: 'Brier [95% CI] / ECE' (ECE: mean over seeds)."""
    out = []
    for size in sizes:
        by_site: dict[str, dict[str, str]] = {}
        for (site, mode), cell in sorted(_binary_cells(cells, task, size).items()):
            if mode not in modes:
                continue
            ece = np.mean([expected_calibration_error(r["labels"], r["scores"]) for r in _load(cell)])
            brier = cell.mean["brier"], *interval(cell.draws["brier"])
            by_site.setdefault(site, {})[mode] = f"{format_cell(*brier)} / {ece:.3f}"
        out += [{"site": site, "n": size_label(size), **row} for site, row in by_site.items()]
    return pd.DataFrame(out)


def reliability(cells: dict[tuple, Cell], task: str, size: int, modes: list[str], bins: int = 10) -> pd.DataFrame:
    """Observed rate against mean predicted probability in quantile bins, pooled over seeds."""
    frames = []
    for (site, mode), cell in sorted(_binary_cells(cells, task, size).items()):
        if mode not in modes:
            continue
        runs = _load(cell)
        labels = np.concatenate([r["labels"] for r in runs])
        scores = np.concatenate([r["scores"] for r in runs]).astype(np.float64)
        observed, predicted = calibration_curve(labels, scores, n_bins=bins, strategy="quantile")
        frames.append(pd.DataFrame({"site": site, "mode": mode, "predicted": predicted, "observed": observed}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def subgroup_table(cells: dict[tuple, Cell], task: str, size: int, modes: list[str]) -> pd.DataFrame:
    """AUROC [95% CI] by sex and by age band, per site and mode (mean over seeds)."""
    out = []
    by_site: dict[str, dict[str, Cell]] = {}
    for (site, mode), cell in sorted(_binary_cells(cells, task, size).items()):
        if mode in modes:
            by_site.setdefault(site, {})[mode] = cell
    for site, at_site in by_site.items():
        runs = {mode: _load(cell) for mode, cell in at_site.items()}
        first = next(iter(runs.values()))[0]  # every run of a site scores the same held-out patients
        for column, label in SUBGROUPS.items():
            if column not in first:
                continue  # predictions stored before subgroups were
            for value in sorted(set(first[column])):
                mask = first[column] == value
                positives = int(first["labels"][mask].sum())
                row = {
                    "site": site,
                    "subgroup": f"{label} {value}",
                    "patients": int(mask.sum()),
                    "positives": positives,
                }
                enough = MIN_CLASS <= positives <= mask.sum() - MIN_CLASS
                for mode in modes:
                    if mode in at_site:
                        auroc_of = _subgroup_auroc(runs[mode], at_site[mode].weights, column, value)
                        row[mode] = format_cell(*auroc_of) if enough else "too few"
                out.append(row)
    return pd.DataFrame(out)


def _subgroup_auroc(
    runs: list[dict[str, np.ndarray]], weights: np.ndarray, column: str, value: str
) -> tuple[float, float, float]:
    means, draws = [], []
    for run in runs:
        mask = run[column] == value
        means.append(auroc(run["labels"][mask], run["scores"][mask]))
        draws.append(weighted_auroc(run["labels"][mask], run["scores"][mask], weights[:, mask]))
    return float(np.mean(means)), *interval(np.mean(draws, axis=0))


def site_average(cells: dict[tuple, Cell], task: str, modes: list[str]) -> pd.DataFrame:
    """Per mode and cohort size: the primary metric averaged over sites, its interval from the
    sites' bootstrap draws averaged alike, and the mean labelled positives per cohort."""
    metric = primary_metric(task)
    grouped: dict[tuple[str, int], list[Cell]] = {}
    for (t, size, _, mode, _), cell in cells.items():
        if t == task and mode in modes:
            grouped.setdefault((mode, size), []).append(cell)
    rows = []
    for (mode, size), group in sorted(grouped.items()):
        lo, hi = interval(np.mean([c.draws[metric] for c in group], axis=0))
        rows.append(
            {
                "mode": mode,
                "cohort_size": size,
                "positives": float(np.mean([c.train_positives for c in group])),
                "mean": float(np.mean([c.mean[metric] for c in group])),
                "lo": lo,
                "hi": hi,
                "sites": len(group),
            }
        )
    return pd.DataFrame(rows)
