"""Gradient-boosted trees on MEDS-Tab-style features, the baseline EHR foundation models are
judged against (MEDS-Tab, CORE-BEHRT's and EHRSHOT's GBMs): each code's count in the last 30
days, the last 365 days and all history before the prediction time, plus age at it (sex is a
static code, counted in the all-history block)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
from lightgbm import LGBMClassifier

from shared_model.tensors.vocabulary import is_birth_code
from shared_model.training.baselines.bag_of_codes import bag_of_codes

WINDOWS_DAYS = (30, 365, None)
#: boosting rounds tried, simplest first: chosen by the same cross-validation rule as the
#: logistic regression's C (model_selection.choose_c: the simplest within one standard error)
TREES = (25, 50, 100, 200, 400)


def windowed_counts(
    events: pd.DataFrame, labels: pd.DataFrame, vocabulary: pd.Index | None = None
) -> tuple[sp.csr_matrix, pd.Index]:
    """(label rows x (codes x windows + age)) features; `vocabulary` as returned for the train rows."""
    blocks = []
    for window in WINDOWS_DAYS:
        counts, vocabulary = bag_of_codes(events, labels, vocabulary, window_days=window)
        blocks.append(counts)
    births = events.loc[is_birth_code(events["code"])].groupby("subject_id")["time"].min()
    # pandas arithmetic: any resolution on either side, NaT where no birth is known (reindex, not
    # map: Series.map with an empty datetime Series raises in pandas)
    birth = births.reindex(labels["subject_id"].to_numpy()).to_numpy()
    age_years = (pd.to_datetime(labels["prediction_time"]).to_numpy() - birth) / pd.Timedelta(days=365.25)
    age = np.asarray(age_years, np.float64).astype(np.float32).reshape(-1, 1)
    blocks.append(sp.csr_matrix(age))  # NaN: unknown, trees route it
    return sp.hstack(blocks, format="csr"), vocabulary


def gbm_classifier(*, seed: int = 0, trees: int = 100) -> LGBMClassifier:
    """Small, regularised, deterministic LightGBM (unfitted): cohorts hold 100-1000 patients."""
    return LGBMClassifier(
        n_estimators=int(trees),
        learning_rate=0.05,
        num_leaves=15,
        min_child_samples=10,
        subsample=0.8,
        subsample_freq=1,
        colsample_bytree=0.5,
        reg_lambda=1.0,
        random_state=seed,
        n_jobs=1,
        deterministic=True,
        force_col_wise=True,
        verbose=-1,
    )
