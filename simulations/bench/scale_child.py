"""The scale test's child process (`python -m simulations.bench.scale_child STORE SITE...`): tensorise
the sites into memory-mapped shards, then pretrain one epoch streaming from them, and print the
figures as one JSON line. A process of its own, so its peak memory is the figure (the generator's
memory does not count)."""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

from shared_model.model.config import ClaimTransformerConfig
from shared_model.settings import PretrainSettings
from shared_model.tensors.store import open_shards, streaming_vocabulary, tensorize_to_shards
from shared_model.training.fit import fit_pretraining, new_pretraining_model
from simulations.bench.model import PAPER_GROUPS, PAPER_VOCAB


def peak_rss_mb() -> float:
    """VmHWM, not getrusage: Linux carries the parent's peak into ru_maxrss across exec."""
    with open("/proc/self/status") as status:
        return int(next(line for line in status if line.startswith("VmHWM:")).split()[1]) / 1024


def main(argv: list[str]) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    store, sites = Path(argv[0]), [Path(p) for p in argv[1:]]
    start = time.perf_counter()
    vocabulary = streaming_vocabulary(sites)
    events = sum(tensorize_to_shards(p, vocabulary, store / p.name)["events"] for p in sites)
    figures = {"events": events, "seconds": time.perf_counter() - start, "peak_rss_mb": peak_rss_mb()}
    parts = [
        shard
        for p in sites
        for split in ("train", "tuning", "held_out")
        for shard in open_shards(store / p.name, split)
    ]
    # the paper's table sizes (larger than the synthetic vocabulary's): the epoch costs what it would on real claims
    config = ClaimTransformerConfig(
        vocab_size=max(vocabulary.size, PAPER_VOCAB), n_groups=max(vocabulary.n_groups, PAPER_GROUPS)
    )
    model = new_pretraining_model(config, 0)
    start = time.perf_counter()
    fit_pretraining(model, parts, None, PretrainSettings(epochs=1, seed=0), early_stopping=False)
    figures.update(
        epoch_samples=sum(len(p["subject_id"]) for p in parts),
        epoch_seconds=time.perf_counter() - start,
        epoch_peak_rss_mb=peak_rss_mb(),
        vocab_size=vocabulary.size,
        model_vocab_size=config.vocab_size,
        model_groups=config.n_groups,
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main(sys.argv[1:])
