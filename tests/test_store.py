"""Streaming tensorisation to memory-mapped shards equals the in-memory path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shared_model.data import read_meds
from shared_model.tensors.store import open_shards, streaming_vocabulary, tensorize_to_shards
from shared_model.tensors.tasks import task_arrays, training_vocabulary
from shared_model.tensors.tensorize import concat


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


def test_central_pretraining_streams_from_shards(small_sites: list[Path], tmp_path: Path) -> None:
    """`claimpt pretrain central --stream`: the sites go to shards first and training reads them
    memory-mapped; the vocabulary and the held-out samples are those of the in-memory path."""
    from typer.testing import CliRunner

    from shared_model.contract.checkpoint import load_checkpoint
    from simulations.cli.app import app

    args = ["pretrain", "central", "--data", str(small_sites[2]), "--out", str(tmp_path / "run"), "--stream",
            "--epochs", "1", "--d-model", "16", "--ffn-dim", "16"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert open_shards(tmp_path / "run" / "shards" / small_sites[2].name, "train")
    dataset = read_meds(small_sites[2])
    vocabulary = training_vocabulary([dataset])
    assert load_checkpoint(tmp_path / "run" / "checkpoint").vocabulary == vocabulary
    metrics = (tmp_path / "run" / "metrics.json").read_text()
    held_out = len(task_arrays(dataset, "next_visit", vocabulary)["held_out"]["subject_id"])
    assert f'"held_out_samples": {held_out}' in metrics
