"""Evaluation metrics (scikit-learn for ranking metrics) and bootstrap confidence intervals."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score


def binary_metrics(labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    labels = np.asarray(labels).astype(int)
    if labels.min() == labels.max():
        return {"auroc": float("nan"), "auprc": float("nan")}
    return {"auroc": float(roc_auc_score(labels, scores)), "auprc": float(average_precision_score(labels, scores))}


def recall_at_k(target_indices: np.ndarray, scores: np.ndarray, ks: Sequence[int] = (5, 10, 30)) -> dict[str, float]:
    """Mean over samples with any target of |top-k scored groups ∩ targets| / |targets|."""
    targets = np.asarray(target_indices)
    has_target = (targets >= 0).any(axis=1)
    targets, scores = targets[has_target], np.asarray(scores)[has_target]
    n_targets = (targets >= 0).sum(axis=1)
    ranking = np.argsort(-scores, axis=1, kind="stable")
    result = {}
    for k in ks:
        top = ranking[:, :k]
        hits = (targets[:, :, None] == top[:, None, :]).any(axis=2) & (targets >= 0)
        result[f"recall@{k}"] = float((hits.sum(axis=1) / n_targets).mean()) if len(targets) else float("nan")
    return result


def group_frequency_scores(train_targets: np.ndarray, n_groups: int, n_rows: int) -> np.ndarray:
    """The 'most frequent groups' predictor: every sample gets the training group frequencies."""
    flat = np.asarray(train_targets).ravel()
    counts = np.bincount(flat[flat >= 0], minlength=n_groups).astype(np.float64)
    return np.broadcast_to(counts, (n_rows, n_groups))


def bootstrap_interval(labels: np.ndarray, scores: np.ndarray, metric: Callable[[np.ndarray, np.ndarray], float],
                       *, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of `metric` over resampled rows (resamples with one class skipped)."""
    rng = np.random.default_rng(seed)
    labels, scores = np.asarray(labels), np.asarray(scores)
    values = []
    for _ in range(n_boot):
        rows = rng.integers(0, len(labels), len(labels))
        if labels[rows].min() == labels[rows].max():
            continue
        values.append(metric(labels[rows], scores[rows]))
    lo, hi = np.percentile(values, [(1 - level) / 2 * 100, (1 + level) / 2 * 100])
    return float(lo), float(hi)
