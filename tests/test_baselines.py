"""The count-feature baselines' features, checked on a hand-built patient."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from shared_model.baselines import bag_of_codes, windowed_counts


def _events() -> pd.DataFrame:
    rows = [
        (1, None, "SEX/F"),
        (1, "2010-01-01", "MEDS_BIRTH"),
        (1, "2016-05-01", "ICD10CM/J45.909"),  # 1,045 days before the prediction time
        (1, "2018-09-20", "ICD10CM/J45.909"),  # 102 days before
        (1, "2018-12-21", "ICD10CM/J45.909"),  # 10 days before
        (1, "2018-12-21", "CPT/99213"),
        (1, "2019-01-01", "ICD10CM/J45.909"),  # at the prediction time: never counted
        (2, "2017-03-01", "CPT/99213"),  # no birth: age unknown
    ]
    frame = pd.DataFrame(rows, columns=["subject_id", "time", "code"])
    frame["time"] = pd.to_datetime(frame["time"]).astype("datetime64[us]")
    return frame


LABELS = pd.DataFrame(
    {"subject_id": [1, 2], "prediction_time": pd.to_datetime(["2019-01-01", "2019-01-01"]).astype("datetime64[us]")}
)


def test_windowed_counts_count_each_window_and_age() -> None:
    features, vocabulary = windowed_counts(_events(), LABELS)
    n = len(vocabulary)
    dense = features.toarray()
    asthma, visit, sex = (vocabulary.get_loc(c) for c in ("ICD10CM/J45.909", "CPT/99213", "SEX/F"))
    assert dense[0, [asthma, n + asthma, 2 * n + asthma]].tolist() == [1, 2, 3]  # 30 days, 365 days, all
    assert dense[0, [visit, n + visit, 2 * n + visit]].tolist() == [1, 1, 1]
    assert dense[0, [sex, n + sex, 2 * n + sex]].tolist() == [0, 0, 1]  # static facts: all history only
    assert dense[0, -1] == pytest.approx(9.0, abs=0.01) and np.isnan(dense[1, -1])  # age in years; unknown
    assert dense[1, 2 * n + visit] == 1 and dense[1, visit] == 0
    # the all-history block is the logistic regression's bag of codes
    np.testing.assert_array_equal(dense[:, 2 * n : 3 * n], bag_of_codes(_events(), LABELS, vocabulary)[0].toarray())
