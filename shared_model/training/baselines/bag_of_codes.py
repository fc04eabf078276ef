"""Bag-of-codes features: how often each code occurred strictly before the prediction time."""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, MaxAbsScaler


def bag_of_codes(
    events: pd.DataFrame, labels: pd.DataFrame, vocabulary: pd.Index | None = None, *, window_days: int | None = None
) -> tuple[sp.csr_matrix, pd.Index]:
    """(label rows x codes) counts of each code before each row's prediction time.

    Static facts (time NaT, e.g. sex) count for every row. Codes outside `vocabulary` are
    dropped, so features built at another site line up column for column. With `window_days`,
    only events in the last `window_days` days before the prediction time count (and no static
    fact).
    """
    codes = events["code"].astype("category")
    vocabulary = pd.Index(codes.cat.categories) if vocabulary is None else vocabulary
    code_ids = vocabulary.get_indexer(codes.cat.categories)[codes.cat.codes.to_numpy()]
    row_of_label = np.arange(len(labels))
    joined = pd.DataFrame(
        {"subject_id": events["subject_id"].to_numpy(), "time": events["time"].to_numpy(), "code": code_ids}
    ).merge(
        pd.DataFrame(
            {
                "subject_id": labels["subject_id"].to_numpy(),
                "prediction_time": labels["prediction_time"].to_numpy(),
                "row": row_of_label,
            }
        ),
        on="subject_id",
    )
    before = (joined["time"] < joined["prediction_time"]) | joined["time"].isna()
    if window_days is not None:
        before &= joined["time"] >= joined["prediction_time"] - np.timedelta64(window_days, "D")
    before &= joined["code"] >= 0
    joined = joined[before]
    matrix = sp.coo_matrix(
        (np.ones(len(joined), dtype=np.float32), (joined["row"].to_numpy(), joined["code"].to_numpy())),
        shape=(len(labels), len(vocabulary)),
    ).tocsr()
    matrix.sum_duplicates()
    return matrix, vocabulary


def logreg_pipeline(*, seed: int = 0, C: float = 0.1) -> Pipeline:
    """log1p counts, max-abs scaling, L2 logistic regression with balanced classes (unfitted)."""
    return make_pipeline(
        FunctionTransformer(np.log1p, accept_sparse=True),
        MaxAbsScaler(),
        LogisticRegression(C=C, class_weight="balanced", max_iter=2000, random_state=seed),
    )


def fit_logreg(features: sp.csr_matrix, outcome: np.ndarray, *, seed: int = 0, C: float = 0.1) -> Pipeline:
    return logreg_pipeline(seed=seed, C=C).fit(features, outcome)
