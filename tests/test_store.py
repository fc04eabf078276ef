"""Streaming tensorisation to memory-mapped shards equals the in-memory path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shared_model.data import read_meds
from shared_model.store import open_shards, streaming_vocabulary, tensorize_to_shards
from shared_model.tasks import task_arrays, training_vocabulary
from shared_model.tensorize import concat


@pytest.mark.parametrize("task", ["next_visit", "asthma"])
def test_shards_equal_in_memory_samples(small_sites: list[Path], tmp_path: Path, task: str) -> None:
    dataset = read_meds(small_sites[1])
    vocabulary = training_vocabulary([dataset])
    assert streaming_vocabulary([small_sites[1]]) == vocabulary
    stats = tensorize_to_shards(small_sites[1], vocabulary, tmp_path / "store", task=task)
    expected = task_arrays(dataset, task, vocabulary)
    assert stats["events"] == int(dataset.events["time"].notna().sum() + dataset.events["time"].isna().sum())
    for split in ("train", "tuning", "held_out"):
        shards = open_shards(tmp_path / "store", split)
        assert shards and isinstance(shards[0]["codes"], np.memmap)
        got = concat([{k: np.asarray(v) for k, v in s.items()} for s in shards])
        want = expected[split]
        order_got = np.lexsort((got["prediction_day"], got["subject_id"]))
        order_want = np.lexsort((want["prediction_day"], want["subject_id"]))
        for name in want:
            np.testing.assert_array_equal(got[name][order_got], want[name][order_want].astype(got[name].dtype), name)
        assert stats["samples"][split] == len(want["subject_id"])
