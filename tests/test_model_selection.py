"""Choosing C: cross-validation over train + tuning with the one-standard-error rule."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression

from shared_model.training.model_selection import choose_c

CANDIDATES = (0.001, 0.01, 0.1, 1.0, 10.0)


def make_model(c: float) -> LogisticRegression:
    return LogisticRegression(C=c, max_iter=5000)


def scaled_signal(rng: np.random.Generator, n: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """The outcome depends on feature 0 only, stored at a tiny `scale`: a strong L2 penalty
    shrinks its weight below the noise features' and loses the signal."""
    y = rng.random(n) < 0.3
    x = rng.normal(size=(n, 20))
    x[:, 0] = (y + rng.normal(0, 0.3, n)) * scale
    return x, y


def one_feature(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """A single informative feature: any positive weight ranks patients identically."""
    y = rng.random(n) < 0.3
    return (y + rng.normal(0, 1.0, n))[:, None], y


def test_a_signal_that_needs_a_weak_penalty_gets_one() -> None:
    rng = np.random.default_rng(7)
    x, y = scaled_signal(rng, 300, scale=0.1)
    x_tuning, y_tuning = scaled_signal(rng, 100, scale=0.1)
    assert choose_c(make_model, CANDIDATES, x, y, x_tuning, y_tuning, seed=0) == 10.0


def test_the_strongest_penalty_within_one_standard_error_is_chosen() -> None:
    """Every C gives the same ranking, so every score ties and the rule takes the smallest C."""
    rng = np.random.default_rng(8)
    x, y = one_feature(rng, 300)
    x_tuning, y_tuning = one_feature(rng, 100)
    assert choose_c(make_model, CANDIDATES, x, y, x_tuning, y_tuning, seed=0) == min(CANDIDATES)


class SlightlyNoisierWhenSmall(ClassifierMixin, BaseEstimator):
    """Feature 0 is label + noise, feature 1 that noise: scoring feature 0 plus a little more of
    the noise, the less the larger C, ranks a little worse for small C (pairwise, never better),
    by far less than the folds' spread."""

    def __init__(self, c: float = 1.0):
        self.c = c

    def fit(self, x, y):
        self.classes_ = np.array([False, True])
        return self

    def decision_function(self, x):
        return x[:, 0] + 0.02 * -np.log10(self.c / 10.0) * x[:, 1]


def test_one_standard_error_rule_prefers_the_strong_penalty_over_a_slightly_better_weak_one() -> None:
    rng = np.random.default_rng(10)
    y = rng.random(400) < 0.3
    noise = rng.normal(size=400)
    x = np.column_stack([y + noise, noise])
    assert choose_c(SlightlyNoisierWhenSmall, CANDIDATES, x[:300], y[:300], x[300:], y[300:], seed=0) == 0.001
    # the scores do increase with C, so plain arg-max would have chosen another candidate
    from sklearn.metrics import roc_auc_score

    scores = [roc_auc_score(y, SlightlyNoisierWhenSmall(c).fit(x, y).decision_function(x)) for c in CANDIDATES]
    assert scores[-1] > scores[0]


def test_tuning_patients_take_part_in_the_choice() -> None:
    """A single positive in train: cross-validation is possible only with the tuning patients
    (without them the middle candidate would be the fallback)."""
    rng = np.random.default_rng(9)
    x, y = one_feature(rng, 60)
    y[:] = False
    y[0] = True
    x_tuning, y_tuning = one_feature(rng, 300)
    assert choose_c(make_model, CANDIDATES, x, y, x_tuning, y_tuning, seed=0) == min(CANDIDATES)


def test_sparse_features_and_too_few_positives() -> None:
    x = sp.random(40, 30, density=0.2, format="csr", random_state=0)
    y = np.zeros(40, bool)
    y[0] = True
    assert choose_c(make_model, CANDIDATES, x, y, x[:10], np.zeros(10, bool), seed=0) == 0.1
