"""Turn a MEDS dataset into split sample arrays for pretraining or a downstream task."""

from __future__ import annotations

import numpy as np
import pandas as pd

from shared_model.data import MedsDataset
from shared_model.settings import VocabularySettings
from shared_model.tensors.tensorize import Arrays, Layout, content_order, labelled_samples, next_visit_samples, select
from shared_model.tensors.vocabulary import Vocabulary, count_patients_per_code, parents_from_metadata

NEXT_VISIT = "next_visit"
MAX_TASK_NAME = 100


def is_task_name(name: object) -> bool:
    """A task's name as its label file is named (labels/<task>.parquet): letters, digits, - and _."""
    return isinstance(name, str) and len(name) <= MAX_TASK_NAME and name.replace("_", "").replace("-", "").isalnum()


def task_kind(task: str) -> str:
    return "multilabel" if task == NEXT_VISIT else "binary"


def task_target(task: str) -> str:
    return "target_groups" if task == NEXT_VISIT else "label"


def split_of(dataset: MedsDataset, subject_ids: np.ndarray) -> np.ndarray:
    splits = dataset.splits.set_index("subject_id")["split"]
    return splits.reindex(subject_ids).to_numpy(dtype=object)


def task_samples(dataset: MedsDataset, task: str, vocabulary: Vocabulary, layout: Layout = Layout()) -> Arrays:
    """Every sample of `task` ("next_visit" or a label task), whatever its subject's split."""
    if task == NEXT_VISIT:
        return next_visit_samples(dataset.events, vocabulary, layout)
    if task not in dataset.labels:
        raise KeyError(f"{dataset.root}: no labels for task {task!r} (have {sorted(dataset.labels)})")
    return labelled_samples(dataset.events, dataset.labels[task], vocabulary, layout)


def task_arrays(
    dataset: MedsDataset, task: str, vocabulary: Vocabulary, layout: Layout = Layout()
) -> dict[str, Arrays]:
    """{"train": ..., "tuning": ..., "held_out": ...} samples of `task` ("next_visit" or a label task),
    each in content order: a cohort drawn from them, and every batch, is the same on raw and on
    pseudonymised ids."""
    arrays = task_samples(dataset, task, vocabulary, layout)
    arrays = select(arrays, content_order(arrays))
    split = split_of(dataset, arrays["subject_id"])
    return {name: select(arrays, split == name) for name in ("train", "tuning", "held_out")}


def train_code_counts(dataset: MedsDataset) -> pd.Series:
    """Patients per clinical code among the dataset's train-split subjects: what vocabularies are
    built from, centrally and (k-anonymised) by each site."""
    return count_patients_per_code(dataset.events[dataset.events["subject_id"].isin(train_subjects(dataset))])


def k_anonymous_train_code_counts(dataset: MedsDataset, k: int) -> pd.Series:
    """`train_code_counts` without the codes fewer than `k` patients have, sorted by code: what a
    site may release (the vocabulary round, the advisory round's summary)."""
    counts = train_code_counts(dataset)
    return counts[counts >= k].sort_index()


def split_subjects(dataset: MedsDataset, split: str) -> pd.Series:
    """The subject ids of one of the dataset's splits ("train", "tuning", "held_out")."""
    return dataset.splits.loc[dataset.splits["split"] == split, "subject_id"]


def train_subjects(dataset: MedsDataset) -> pd.Series:
    """The subject ids of the dataset's train split: whom every count a site releases covers."""
    return split_subjects(dataset, "train")


def train_patients(dataset: MedsDataset) -> int:
    return len(train_subjects(dataset))


def training_vocabulary(datasets: list[MedsDataset], settings: VocabularySettings = VocabularySettings()) -> Vocabulary:
    """Vocabulary from the train-split subjects of the given (pooled) datasets."""
    counts = None
    for ds in datasets:
        site_counts = train_code_counts(ds)
        counts = site_counts if counts is None else counts.add(site_counts, fill_value=0)
    return Vocabulary.from_counts(
        counts.astype(np.int64),
        parents=parents_from_metadata(d.codes for d in datasets),
        settings=settings,
    )
