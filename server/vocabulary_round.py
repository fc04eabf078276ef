"""Vocabulary round (docs/architecture.md §2): sites report codes seen in >= k patients; the server sums the
counts, keeps the top `max_vocab` deterministically and broadcasts the result with each round."""

from __future__ import annotations

import logging
import time
from collections import defaultdict

from flwr.app import ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

from server.exchange import send_and_receive
from shared_model.settings import VocabularySettings
from shared_model.vocabulary import Vocabulary

log = logging.getLogger(__name__)


def wait_for_nodes(grid: Grid, minimum: int, timeout: float = 600.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while len(nodes := sorted(grid.get_node_ids())) < minimum:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(nodes)} of the required {minimum} SuperNodes connected")
        log.info("waiting for SuperNodes: %d connected, %d required", len(nodes), minimum)
        time.sleep(1.0)
    return nodes


def vocabulary_round(
    grid: Grid,
    *,
    k: int,
    minimum_sites: int,
    settings: VocabularySettings,
) -> tuple[Vocabulary, dict[int, int], list[Message]]:
    """The consortium vocabulary, each node's reported training patients (which cap its FedAvg
    weight later) and the replies used (their privacy statements start the passport)."""
    nodes = wait_for_nodes(grid, minimum_sites)
    messages = [
        Message(
            RecordDict({"config": ConfigRecord({"k-anonymity": k})}), dst_node_id=node, message_type="query.vocabulary"
        )
        for node in nodes
    ]
    replies = [r for r in send_and_receive(grid, messages) if not _failed(r)]
    if len(replies) < minimum_sites:
        raise RuntimeError(f"vocabulary round: {len(replies)} site(s) answered, {minimum_sites} required")
    totals: dict[str, int] = defaultdict(int)
    parents: dict[str, list[str]] = {}
    patients: dict[int, int] = {}
    for reply in sorted(replies, key=lambda r: int(r.content["vocabulary"]["site-key"])):
        record = reply.content["vocabulary"]
        patients[reply.metadata.src_node_id] = int(record["patients"])
        for code, count, parent in zip(record["codes"], record["counts"], record["parents"], strict=True):
            if int(count) < k:  # defence in depth: a site must never send these
                log.warning("node %d sent code count below k=%d; ignored", reply.metadata.src_node_id, k)
                continue
            totals[str(code)] += int(count)
            if parent and code not in parents:
                parents[str(code)] = [str(parent)]
    vocabulary = Vocabulary.from_counts(dict(totals), parents=parents, settings=settings)
    log.info(
        "vocabulary round: %d sites, %d codes, %d target groups",
        len(replies),
        len(vocabulary.codes),
        vocabulary.n_groups,
    )
    return vocabulary, patients, replies


def _failed(reply: Message) -> bool:
    if reply.has_error():
        log.warning("vocabulary round: node %d failed: %s", reply.metadata.src_node_id, reply.error.reason)
        return True
    return False
