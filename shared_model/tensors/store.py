"""Sample shards on disk: tensorise a MEDS directory file by file into memory-mappable .npy arrays.

Layout: `DIR/<split>/shard-NNNNN/<field>.npy` plus `DIR/store.json`. Peak memory is bounded by
one MEDS data file, whatever the size of the dataset; training reads the arrays memory-mapped.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from shared_model.data.meds import iter_event_files, label_files, read_codes, read_labels, read_splits, subject_ids
from shared_model.data.paths import atomic_directory
from shared_model.settings import VocabularySettings
from shared_model.tensors.tasks import NEXT_VISIT
from shared_model.tensors.tensorize import FIELDS, Arrays, Layout, labelled_samples, next_visit_samples, select
from shared_model.tensors.vocabulary import Vocabulary, count_patients_per_code, parents_from_metadata

log = logging.getLogger(__name__)
SPLITS = ("train", "tuning", "held_out")


def streaming_code_counts(root: str | Path) -> pd.Series:
    """Patients per clinical code among train-split subjects, one data file at a time."""
    root = Path(root)
    total: pd.Series | None = None
    splits = read_splits(root, subject_ids(root)).set_index("subject_id")["split"]
    for _, events in iter_event_files(root):
        train = events["subject_id"].map(splits) == "train"
        counts = count_patients_per_code(events[train.to_numpy()])
        total = counts if total is None else total.add(counts, fill_value=0)
    return (total if total is not None else pd.Series(dtype=np.int64)).astype(np.int64)


def streaming_vocabulary(roots: list[str | Path], settings: VocabularySettings = VocabularySettings()) -> Vocabulary:
    """The pooled vocabulary of several MEDS directories, read one data file at a time."""
    total: pd.Series | None = None
    for root in roots:
        counts = streaming_code_counts(root)
        total = counts if total is None else total.add(counts, fill_value=0)
    return Vocabulary.from_counts(
        (total if total is not None else pd.Series(dtype=np.int64)).astype(np.int64),
        parents=parents_from_metadata(read_codes(r) for r in roots),
        settings=settings,
    )


def tensorize_to_shards(
    meds_root: str | Path,
    vocabulary: Vocabulary,
    out: str | Path,
    *,
    task: str = NEXT_VISIT,
    layout: Layout = Layout(),
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write the samples of `task` for every split; returns counts of events and samples."""
    meds_root = Path(meds_root)
    subjects = subject_ids(meds_root)
    split_of = read_splits(meds_root, subjects).set_index("subject_id")["split"]
    labels = None
    if task != NEXT_VISIT:
        if task not in label_files(meds_root):
            raise KeyError(f"{meds_root}: no labels for task {task!r}")
        labels = read_labels(meds_root, subjects)[task]
    stats: dict[str, Any] = {"events": 0, "samples": {s: 0 for s in SPLITS}, "task": task}
    with atomic_directory(Path(out), overwrite=overwrite) as tmp:
        for shard_index, (path, events) in enumerate(iter_event_files(meds_root)):
            if labels is None:
                arrays = next_visit_samples(events, vocabulary, layout)
            else:
                mine = labels[labels["subject_id"].isin(events["subject_id"].unique())]
                arrays = labelled_samples(events, mine, vocabulary, layout)
            split = split_of.reindex(arrays["subject_id"]).to_numpy(dtype=object)
            for name in SPLITS:
                part = select(arrays, split == name)
                if len(part["subject_id"]):
                    _write_part(tmp / name / f"shard-{shard_index:05d}", part)
                    stats["samples"][name] += len(part["subject_id"])
            stats["events"] += len(events)
            log.info("tensorised %s (%d events)", path.name, len(events))
        (tmp / "store.json").write_text(json.dumps({**stats, "layout": layout.__dict__}, indent=2))
    return stats


def _write_part(directory: Path, arrays: Arrays) -> None:
    directory.mkdir(parents=True)
    for name, values in arrays.items():
        np.save(directory / f"{name}.npy", values.astype(FIELDS[name][0], copy=False))


def open_shards(store: str | Path, split: str) -> list[Arrays]:
    """Memory-mapped sample arrays of one split, one dict per shard."""
    return [
        {name: np.load(d / f"{name}.npy", mmap_mode="r") for name in FIELDS}
        for d in sorted((Path(store) / split).glob("shard-*"))
    ]
