"""Tensorisation to the Claim-PT layout, checked against a hand-built patient."""

from __future__ import annotations

import numpy as np
import pandas as pd

from shared_model.tensors.tensorize import Layout, labelled_samples, next_visit_samples
from shared_model.tensors.vocabulary import Vocabulary, count_patients_per_code, default_group


def _events(rows: list[tuple[int, str | None, str]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["subject_id", "time", "code"])
    frame["time"] = pd.to_datetime(frame["time"], format="ISO8601").astype("datetime64[us]")
    frame["numeric_value"] = np.float32(np.nan)
    frame["code"] = frame["code"].astype("category")
    return frame


EVENTS = _events(
    [
        (7, None, "SEX/M"),
        (7, "2010-01-01", "MEDS_BIRTH"),
        (7, "2015-02-01", "VISIT/OP"),
        (7, "2015-02-01", "ICD10CM/J06.9"),
        (7, "2015-02-01", "CPT/99213"),
        (7, "2015-03-01 10:00", "VISIT/RX"),
        (7, "2015-03-01 11:00", "VISIT/ER"),
        (7, "2015-03-01", "ICD10CM/R06.2"),
        (7, "2015-04-01", "ICD10CM/J45.909"),
        (7, "2015-04-01", "ICD10CM/J45.20"),
        (7, "2015-04-01", "RARE/X"),
        (8, "2011-06-01", "MEDS_BIRTH"),
        (8, "2016-01-01", "ICD10CM/J06.9"),
        (8, "2016-06-01", "ICD10CM/H66.90"),
    ]
)


def _vocab() -> Vocabulary:
    counts = count_patients_per_code(EVENTS).drop("RARE/X")
    return Vocabulary.from_counts(counts)


def test_vocabulary_order_groups_and_round_trip() -> None:
    vocab = _vocab()
    assert vocab.codes[0] == "ICD10CM/J06.9"  # seen in 2 patients, first; ties by code
    assert list(vocab.codes[1:]) == sorted(vocab.codes[1:])
    assert "VISIT/OP" not in vocab.codes and "MEDS_BIRTH" not in vocab.codes
    assert set(vocab.groups) == {"ICD10CM/J06", "ICD10CM/R06", "ICD10CM/J45", "ICD10CM/H66"}
    assert vocab.code_group[vocab.codes.index("CPT/99213")] == -1  # procedures are not targets by default
    assert Vocabulary.from_json(vocab.to_json()) == vocab
    assert vocab.encode(["RARE/X", "ICD10CM/J06.9"]).tolist() == [1, 2]


def test_group_rule_prefers_parents_then_prefix() -> None:
    assert default_group("ICD10CM/J45.909") == "ICD10CM/J45"
    assert default_group("CPT/99213") == "CPT/992"
    assert default_group("NDC/00173-0682-20", {"NDC/00173-0682-20": ["RXNORM/435"]}) == "RXNORM/435"
    assert default_group("LOCAL") == "LOCAL"


def test_next_visit_sample_holds_out_last_visit_with_a_target() -> None:
    vocab = _vocab()
    arrays = next_visit_samples(
        EVENTS, vocab, Layout(max_visits=4, max_codes=3, max_visit_groups=2, max_target_groups=3)
    )
    first = np.flatnonzero(arrays["subject_id"] == 7)[0]
    # history: the 2015-02-01 and 2015-03-01 visits, right-aligned in 4 slots
    assert arrays["visit_type"][first].tolist() == [0, 0, 3, 4]  # OP, then ER (ER beats RX on one day)
    assert arrays["date_index"][first].tolist() == [0, 0, 32, 60]
    assert arrays["days_before"][first].tolist() == [0, 0, 59, 31]  # before 2015-04-01
    assert arrays["age_days"][first, 2] == (np.datetime64("2015-02-01") - np.datetime64("2010-01-01")).astype(int)
    codes = arrays["codes"][first]
    assert codes[:2].sum() == 0
    expected = sorted(vocab.encode(["ICD10CM/J06.9", "CPT/99213"]).tolist())
    assert codes[2].tolist() == expected + [0]  # most frequent (smallest id) first, zero padded
    j45 = vocab.groups.index("ICD10CM/J45")
    assert arrays["target_groups"][first].tolist() == [j45, -1, -1]  # two J45 codes, one group
    assert arrays["demo"][first].tolist() == [4, 2]  # 5 years old -> bucket [5, 12); male
    assert arrays["visit_groups"][first, 3].tolist() == [vocab.groups.index("ICD10CM/R06"), -1]


def test_labelled_samples_use_only_history_strictly_before_the_prediction_day() -> None:
    vocab = _vocab()
    labels = pd.DataFrame(
        {
            "subject_id": [7, 7, 8],
            "prediction_time": pd.to_datetime(
                ["2015-03-01 23:00", "2020-01-01", "2016-01-01"], format="ISO8601"
            ).astype("datetime64[us]"),
            "boolean_value": [True, False, True],
        }
    )
    arrays = labelled_samples(EVENTS, labels, vocab, Layout(max_visits=4))
    assert (arrays["visit_type"][0] > 0).sum() == 1  # the same-day visit is not history
    assert (arrays["visit_type"][1] > 0).sum() == 3
    assert (arrays["visit_type"][2] > 0).sum() == 0  # nothing before the first visit
    assert arrays["label"].tolist() == [1.0, 0.0, 1.0]
    # next-visit targets at a labelled time: the first visit on/after it
    assert arrays["target_groups"][0, 0] == vocab.groups.index("ICD10CM/R06")
    assert (arrays["target_groups"][1] == -1).all()


def test_unknown_codes_map_to_unk_and_truncation_keeps_most_frequent() -> None:
    vocab = _vocab()
    arrays = labelled_samples(
        EVENTS,
        pd.DataFrame(
            {
                "subject_id": [7],
                "prediction_time": pd.to_datetime(["2016-01-01"]).astype("datetime64[us]"),
                "boolean_value": [False],
            }
        ),
        vocab,
        Layout(max_visits=3, max_codes=2),
    )
    last_visit = arrays["codes"][0, -1]
    assert 1 in last_visit.tolist()  # RARE/X -> UNK id 1, which sorts first
    assert (arrays["visit_type"][0] > 0).sum() == 3


def test_only_the_last_max_visits_are_kept(small_sites) -> None:
    from shared_model.data import read_meds

    ds = read_meds(small_sites[0])
    vocab = Vocabulary.from_counts(count_patients_per_code(ds.events))
    arrays = next_visit_samples(ds.events, vocab, Layout(max_visits=5))
    n_visits = (arrays["visit_type"] > 0).sum(axis=1)
    assert n_visits.max() == 5 and n_visits.min() >= 1
    # right-aligned: once a slot is used, every later slot is used too
    used = arrays["visit_type"] > 0
    assert (np.diff(used.astype(int), axis=1) >= 0).all()
    assert (arrays["days_before"][used] > 0).all()


def test_other_producers_markers_give_the_same_visit_types_and_sex() -> None:
    """ADMISSION / ED_REGISTRATION markers and GENDER//F codes (other MEDS producers) set the visit
    type and sex as our VISIT/IP, VISIT/ER and SEX/F do."""
    ours = EVENTS.assign(code=EVENTS["code"].astype(str))
    foreign = ours.replace({"code": {"SEX/M": "GENDER//MALE", "VISIT/ER": "ED_REGISTRATION", "VISIT/OP": "ADMISSION"}})
    expected_ours = ours.replace({"code": {"VISIT/OP": "VISIT/IP"}})
    vocab = _vocab()
    a = next_visit_samples(expected_ours.assign(code=expected_ours["code"].astype("category")), vocab)
    b = next_visit_samples(foreign.assign(code=foreign["code"].astype("category")), vocab)
    np.testing.assert_array_equal(a["visit_type"], b["visit_type"])
    np.testing.assert_array_equal(a["demo"], b["demo"])
    assert (a["visit_type"] == 5).any() and (a["demo"][:, 1] == 2).any()  # an inpatient visit, a male
