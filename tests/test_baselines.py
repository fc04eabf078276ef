"""The count-feature baselines' features, checked on a hand-built patient."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from shared_model.training.baselines import bag_of_codes, windowed_counts


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


def _samples(subjects: np.ndarray, *, code_shift: int = 0) -> dict[str, np.ndarray]:
    n = len(subjects)
    visits = (subjects[:, None] * 7 + np.arange(4)[None, :]) % 997  # distinct per patient, not ids
    return {
        "subject_id": subjects,
        "codes": (visits[:, :, None] + code_shift).astype(np.int32),  # vocabulary ids
        "prediction_day": (18_000 + subjects % 7).astype(np.int32),
        "label": (subjects % 5 == 0).astype(np.float32),
        "demo": np.stack([subjects % 6, subjects % 2 + 1], axis=1).astype(np.int8),
        "visit_type": np.ones((n, 4), np.int8),
        "date_index": (visits % 366 + 1).astype(np.int16),
        "days_before": visits.astype(np.int32),
        "age_days": (visits + 3_000).astype(np.int32),
    }


def test_every_model_draws_the_same_cohort_whatever_its_vocabulary_or_the_ids() -> None:
    """The cohort depends on what the samples hold, not on ids, code ids or positions: a model
    whose vocabulary numbers codes differently and loses one patient (all their codes rare)
    trains on the same cohort minus that patient, and pseudonymised ids draw the same patients."""
    from shared_model.training.finetuning import draw_cohort

    subjects = np.arange(1000, 1600)
    full = {name: _samples(subjects) for name in ("train", "tuning", "held_out")}
    cohort = draw_cohort(full, 100, seed=3)
    dropped = int(cohort.train["subject_id"][10])
    other_vocabulary = {**full, "train": _samples(subjects[subjects != dropped], code_shift=5)}
    other = draw_cohort(other_vocabulary, 100, seed=3)
    assert set(cohort.train["subject_id"]) - set(other.train["subject_id"]) == {dropped}
    assert len(set(other.train["subject_id"]) - set(cohort.train["subject_id"])) == 1  # the next in line
    assert (cohort.tuning["subject_id"] == other.tuning["subject_id"]).all()
    pseudonymised = {
        name: {**arrays, "subject_id": arrays["subject_id"] * 7919 % 100_003} for name, arrays in full.items()
    }
    assert (draw_cohort(pseudonymised, 100, seed=3).train["prediction_day"] == cohort.train["prediction_day"]).all()
    assert (draw_cohort(pseudonymised, 100, seed=3).train["days_before"] == cohort.train["days_before"]).all()
    assert set(draw_cohort(full, 100, seed=4).train["subject_id"]) != set(cohort.train["subject_id"])


def test_subgroups_name_sex_and_age_band_from_the_demographics_field() -> None:
    from shared_model.evaluation.subgroups import demographic_groups

    groups = demographic_groups({"demo": np.array([[3, 1], [6, 2], [0, 0], [1, 2]], dtype=np.int8)})
    assert groups["sex"].tolist() == ["female", "male", "unknown", "male"]
    assert groups["age_band"].tolist() == ["2-5", "18+", "unknown", "<1"]


def test_calibration_metrics_by_hand() -> None:
    from shared_model.evaluation.metrics import binary_metrics, expected_calibration_error

    labels, probabilities = np.array([0, 1, 1, 1]), np.array([0.05, 0.05, 0.95, 0.95])
    # bin 0: predicted 0.05, observed 0.5, half the patients; bin 9: 0.95 vs 1.0, the other half
    assert expected_calibration_error(labels, probabilities) == pytest.approx(0.45 / 2 + 0.05 / 2)
    assert binary_metrics(labels, probabilities)["brier"] == pytest.approx((0.05**2 + 0.95**2 + 2 * 0.05**2) / 4)
    rng = np.random.default_rng(0)
    calibrated = rng.random(200_000)
    assert expected_calibration_error(rng.random(200_000) < calibrated, calibrated) < 0.01
