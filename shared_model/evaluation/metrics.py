"""Evaluation metrics (scikit-learn for ranking metrics) and bootstrap confidence intervals."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

CALIBRATION_BINS = 10


def binary_metrics(labels: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
    """Discrimination (AUROC, AUPRC) and calibration (Brier score, expected calibration error) of
    predicted probabilities."""
    labels = np.asarray(labels).astype(int)
    calibration = {
        "brier": float(brier_score_loss(labels, probabilities, pos_label=1)),
        "ece": expected_calibration_error(labels, probabilities),
    }
    one_class = labels.min() == labels.max()
    auprc = float("nan") if one_class else float(average_precision_score(labels, probabilities))
    return {"auroc": auroc(labels, probabilities), "auprc": auprc, **calibration}


def auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """AUROC of any scores (logits or probabilities); NaN when only one class is present."""
    labels = np.asarray(labels).astype(int)
    return float(roc_auc_score(labels, scores)) if labels.min() < labels.max() else float("nan")


def expected_calibration_error(labels: np.ndarray, probabilities: np.ndarray, bins: int = CALIBRATION_BINS) -> float:
    """Mean |observed rate - mean predicted probability| over equal-width probability bins,
    weighted by the share of patients in each bin (Naeini et al., 2015)."""
    labels, probabilities = np.asarray(labels, dtype=np.float64), np.asarray(probabilities, dtype=np.float64)
    which = np.clip((probabilities * bins).astype(int), 0, bins - 1)
    gap = np.abs(np.bincount(which, labels, bins) - np.bincount(which, probabilities, bins))
    return float(gap.sum() / max(len(labels), 1))


def recall_at_k(target_indices: np.ndarray, scores: np.ndarray, ks: Sequence[int] = (5, 10, 30)) -> dict[str, float]:
    """Mean over samples with any target of |top-k scored groups ∩ targets| / |targets|."""
    per_sample = per_sample_recall_at_k(target_indices, scores, ks)
    return {
        f"recall@{k}": float(per_sample[:, i].mean()) if len(per_sample) else float("nan") for i, k in enumerate(ks)
    }


def group_frequency_scores(train_targets: np.ndarray, n_groups: int, n_rows: int) -> np.ndarray:
    """The 'most frequent groups' predictor: every sample gets the training group frequencies."""
    flat = np.asarray(train_targets).ravel()
    counts = np.bincount(flat[flat >= 0], minlength=n_groups).astype(np.float64)
    return np.broadcast_to(counts, (n_rows, n_groups))


def per_sample_recall_at_k(
    target_indices: np.ndarray, scores: np.ndarray, ks: Sequence[int] = (5, 10, 30)
) -> np.ndarray:
    """Recall@k of every sample with a target (rows) for each k (columns); `recall_at_k` is its mean."""
    targets = np.asarray(target_indices)
    has_target = (targets >= 0).any(axis=1)
    targets, scores = targets[has_target], np.asarray(scores)[has_target]
    n_targets = (targets >= 0).sum(axis=1)
    ranking = np.argsort(-scores, axis=1, kind="stable")
    columns = []
    for k in ks:
        hits = (targets[:, :, None] == ranking[:, None, :k]).any(axis=2) & (targets >= 0)
        columns.append(hits.sum(axis=1) / n_targets)
    return np.stack(columns, axis=1) if columns else np.zeros((len(targets), 0))


def bootstrap_weights(n_rows: int, n_boot: int, seed: int | Sequence[int]) -> np.ndarray:
    """Multinomial resampling counts (n_boot x n_rows): row b is how often bootstrap sample b
    draws each row. The same seed and size give the same resamples, which pairs comparisons."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_rows, np.full(n_rows, 1.0 / n_rows), size=n_boot).astype(np.float64)


def weighted_auroc(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUROC under each row of `weights` (ties count one half), vectorised over bootstrap rows.

    Equals sklearn's roc_auc_score(labels, scores, sample_weight=w) for every row w."""
    labels = np.asarray(labels).astype(bool)
    weights = np.atleast_2d(weights)
    order = np.argsort(scores, kind="stable")
    _, starts = np.unique(np.asarray(scores)[order], return_index=True)
    positives = np.add.reduceat(weights[:, order] * labels[order], starts, axis=1)
    negatives = np.add.reduceat(weights[:, order] * ~labels[order], starts, axis=1)
    below = np.cumsum(negatives, axis=1) - negatives
    numerator = (positives * (below + 0.5 * negatives)).sum(axis=1)
    denominator = positives.sum(axis=1) * negatives.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, numerator / denominator, np.nan)


def weighted_average_precision(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Average precision (sklearn's step-wise definition) under each row of `weights`."""
    labels = np.asarray(labels).astype(bool)
    weights = np.atleast_2d(weights)
    order = np.argsort(-np.asarray(scores), kind="stable")
    _, starts = np.unique(-np.asarray(scores)[order], return_index=True)
    true_pos = np.cumsum(np.add.reduceat(weights[:, order] * labels[order], starts, axis=1), axis=1)
    all_pos = np.cumsum(np.add.reduceat(weights[:, order], starts, axis=1), axis=1)
    total_pos = true_pos[:, -1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(all_pos > 0, true_pos / all_pos, 0.0)
        recall_gain = np.diff(true_pos, axis=1, prepend=0.0) / total_pos
        return np.where(total_pos[:, 0] > 0, (recall_gain * precision).sum(axis=1), np.nan)
