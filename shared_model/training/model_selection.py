"""Choosing a regularisation strength on a small labelled cohort.

A cohort of 100-300 patients comes with a tuning set of 100, which at 10-15% prevalence holds
10-15 positives: its AUROC has a standard error of ~0.04, larger than the differences between
candidate strengths, so picking the best of five on it picks noise, and the weakest penalty
(which overfits most) is picked often enough to cost 0.03-0.05 held-out AUROC in those runs.
Cross-validation over train + tuning uses every labelled patient for the choice, and the
one-standard-error rule (Hastie, Tibshirani & Friedman, ESL 7.10) takes the strongest penalty
whose score is within one standard error of the best: the choice the data cannot tell apart
from the best, and the one least likely to overfit. The model is then fitted on the train
cohort only, so the tuning patients inform the choice, never the fit (as with early stopping).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.model_selection import StratifiedKFold, cross_val_score

log = logging.getLogger(__name__)
MAX_FOLDS = 5


def choose_c(
    make_model: Callable[[float], Any],
    candidates: Sequence[float],
    x_train,
    y_train: np.ndarray,
    x_tuning,
    y_tuning: np.ndarray,
    seed: int,
) -> float:
    """The strongest penalty (smallest C) within one standard error of the best cross-validated
    AUROC over train + tuning. `make_model(C)` returns an unfitted scikit-learn classifier."""
    candidates = sorted(candidates)
    x = sp.vstack([x_train, x_tuning]).tocsr() if sp.issparse(x_train) else np.concatenate([x_train, x_tuning])
    y = np.concatenate([np.asarray(y_train, bool), np.asarray(y_tuning, bool)])
    folds = min(MAX_FOLDS, int(y.sum()), int((~y).sum()))
    if folds < 2:
        log.info("too few positives or negatives to cross-validate C: using C=%s", candidates[len(candidates) // 2])
        return candidates[len(candidates) // 2]
    splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)
    scores = np.array([cross_val_score(make_model(c), x, y, cv=splitter, scoring="roc_auc") for c in candidates])
    means = np.nanmean(scores, axis=1)
    best = int(np.nanargmax(means))
    standard_error = np.nanstd(scores[best], ddof=1) / np.sqrt(folds)
    chosen = next(c for c, mean in zip(candidates, means, strict=True) if mean >= means[best] - standard_error)
    log.debug("C by %d-fold CV: %s -> %s", folds, dict(zip(candidates, means.round(4), strict=True)), chosen)
    return chosen
