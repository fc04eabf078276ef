"""Tensorisation does not depend on what the subject ids are: `claimpt site prepare` replaces them
by 63-bit HMAC pseudonyms, and every path from events to tensors must give the same tensors on
them as on the raw ids (any injective relabelling: random 63-bit, negative, extreme, reordered)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from client.local import site_samples
from client.prepare import relabel_subjects
from shared_model.data import MedsDataset, read_meds, write_meds
from shared_model.tensors.store import open_shards, tensorize_to_shards
from shared_model.tensors.tasks import NEXT_VISIT, task_arrays, task_samples, training_vocabulary
from shared_model.tensors.tensorize import (
    Arrays,
    concat,
    labelled_samples,
    latest_per_subject,
    next_visit_samples,
    select,
)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> MedsDataset:
    from simulations.synth import synthesize

    return read_meds(synthesize(tmp_path_factory.mktemp("ids"), [160], seed=5)[0])


@st.composite
def relabellings(draw, ids: np.ndarray, minimum: int = -(2**63)) -> np.ndarray:
    """New ids for `ids`, one each, all distinct: arbitrary int64s from `minimum` up (hypothesis
    reaches the extremes and, in memory, negatives) or the same ids in another order."""
    if draw(st.booleans()):
        return np.array(draw(st.permutations(ids.tolist())), dtype=np.int64)
    ints = st.integers(min_value=minimum, max_value=2**63 - 1)
    return np.array(draw(st.lists(ints, min_size=ids.size, max_size=ids.size, unique=True)), dtype=np.int64)


def back_to_raw(arrays: Arrays, dataset: MedsDataset, new_ids: np.ndarray) -> Arrays:
    raw = pd.Series(dataset.subject_ids, index=new_ids)
    return {**arrays, "subject_id": raw.reindex(arrays["subject_id"]).to_numpy(np.int64)}


def by_subject(arrays: Arrays) -> Arrays:
    return select(arrays, np.lexsort((arrays["prediction_day"], arrays["subject_id"])))


def assert_same(expected: Arrays, actual: Arrays) -> None:
    assert expected.keys() == actual.keys()
    for name in expected:
        np.testing.assert_array_equal(expected[name], actual[name], err_msg=name)


def test_history_never_reaches_past_the_prediction_time_with_pseudonym_sized_ids() -> None:
    """The reproduced case: three patients, prediction 2017-01-01, outcome visit 2018-06-01; with
    63-bit ids the old key `subject * span + day` overflowed and the outcome entered the history."""
    days = ["2015-03-01", "2016-05-02", "2017-06-01", "2018-06-01"]
    rows = [(i, d, c) for i in (1, 2, 3) for d in days for c in ("VISIT/OP", "ICD10CM/J45.909")]
    events = pd.DataFrame(rows, columns=["subject_id", "time", "code"]).assign(
        time=lambda f: pd.to_datetime(f["time"]).astype("datetime64[us]")
    )
    labels = pd.DataFrame(
        {
            "subject_id": [1, 2, 3],
            "boolean_value": [True, False, True],
            "prediction_time": pd.to_datetime(["2017-01-01"] * 3).astype("datetime64[us]"),
        }
    )
    vocabulary = training_vocabulary(
        [MedsDataset(Path("."), events, pd.DataFrame({"subject_id": [1, 2, 3], "split": ["train"] * 3}))]
    )
    small = labelled_samples(events, labels, vocabulary)
    assert ((small["visit_type"] > 0).sum(axis=1) == 2).all()
    pseudonyms = {1: 4_600_000_000_000_000_123, 2: 5_600_000_000_000_000_457, 3: 7_000_000_000_000_000_789}
    large = labelled_samples(
        events.replace({"subject_id": pseudonyms}), labels.replace({"subject_id": pseudonyms}), vocabulary
    )
    assert (large["days_before"] >= 0).all()
    for name in ("codes", "visit_type", "days_before", "target_groups"):
        np.testing.assert_array_equal(small[name], large[name], err_msg=name)


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(data=st.data())
def test_every_in_memory_path_is_invariant_to_relabelling(site: MedsDataset, data) -> None:
    new_ids = data.draw(relabellings(site.subject_ids))
    other = relabel_subjects(site, new_ids)
    vocabulary = training_vocabulary([site])
    assert vocabulary.to_json() == training_vocabulary([other]).to_json()
    # pretraining samples and labelled samples: the same rows, whatever the order
    assert_same(
        by_subject(next_visit_samples(site.events, vocabulary)),
        by_subject(back_to_raw(next_visit_samples(other.events, vocabulary), site, new_ids)),
    )
    assert_same(
        by_subject(labelled_samples(site.events, site.labels["asthma"], vocabulary)),
        by_subject(back_to_raw(labelled_samples(other.events, other.labels["asthma"], vocabulary), site, new_ids)),
    )
    # the split arrays that training and cohort draws read (and the ClientApp caches): same order too
    for task in (NEXT_VISIT, "asthma"):
        raw, relabelled = task_arrays(site, task, vocabulary), task_arrays(other, task, vocabulary)
        for split in raw:
            assert_same(raw[split], back_to_raw(relabelled[split], site, new_ids))
    # playground and embed: one sample per patient, in an order the ids do not decide
    assert_same(
        latest_per_subject(task_samples(site, "asthma", vocabulary)),
        back_to_raw(latest_per_subject(task_samples(other, "asthma", vocabulary)), site, new_ids),
    )


@settings(
    max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(data=st.data())
def test_shards_and_the_client_cache_are_invariant_to_relabelling(site: MedsDataset, tmp_path_factory, data) -> None:
    new_ids = data.draw(relabellings(site.subject_ids, minimum=0))  # MEDS files hold non-negative ids
    other = relabel_subjects(site, new_ids)
    root = tmp_path_factory.mktemp("relabelled")
    written = write_meds(root / "meds", other.events, other.splits, labels=dict(other.labels), codes=other.codes)
    vocabulary = training_vocabulary([site])
    for task in (NEXT_VISIT, "asthma"):
        raw_store = tensorize_to_shards(site.root, vocabulary, root / f"raw-{task}", task=task)
        new_store = tensorize_to_shards(written, vocabulary, root / f"new-{task}", task=task)
        assert raw_store == new_store
        for split in ("train", "tuning", "held_out"):
            raw = concat([{k: np.asarray(v) for k, v in s.items()} for s in open_shards(root / f"raw-{task}", split)])
            new = concat([{k: np.asarray(v) for k, v in s.items()} for s in open_shards(root / f"new-{task}", split)])
            assert_same(by_subject(raw), by_subject(back_to_raw(new, site, new_ids)))
    raw, new = (
        site_samples(str(site.root), vocabulary.to_json(), 11),
        site_samples(str(written), vocabulary.to_json(), 11),
    )
    for split in raw:
        assert_same(raw[split], back_to_raw(new[split], site, new_ids))
