"""Vocabulary round (docs/architecture.md §2): sites report codes seen in >= k patients; the server sums the
counts, keeps the top `max_vocab` deterministically and broadcasts the result with each round."""

from __future__ import annotations

import logging
import time
from collections import Counter, defaultdict
from dataclasses import dataclass

import numpy as np
from flwr.app import ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

from server.exchange import send_and_receive
from server.registry import Registry, identity_problem
from server.replies import ReplyError, read_reply
from shared_model.contract.messages import VocabularyReply
from shared_model.settings import VocabularySettings
from shared_model.tensors.vocabulary import Vocabulary

log = logging.getLogger(__name__)


def wait_for_nodes(grid: Grid, minimum: int, timeout: float = 600.0, log_every: float = 30.0) -> list[int]:
    """The connected nodes once at least `minimum` are; a TimeoutError after `timeout` seconds.
    Logs once per `log_every` seconds while it waits (Flower's own wait logs every second, forever)."""
    deadline = time.monotonic() + timeout
    next_log = time.monotonic()
    while len(nodes := sorted(grid.get_node_ids())) < minimum:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(nodes)} of the required {minimum} sites connected after {timeout:.0f} s")
        if time.monotonic() >= next_log:
            log.info("waiting for sites: %d connected, %d required (up to %.0f s)", len(nodes), minimum, timeout)
            next_log += log_every
        time.sleep(1.0)
    return nodes


@dataclass(frozen=True)
class VocabularyRound:
    """The consortium vocabulary, each site's weight cap (its training patients, capped; by site
    key, which outlives node ids: a resumed simulation has new ones), the replies used (their
    privacy statements start the passport) and the replies dropped, with why."""

    vocabulary: Vocabulary
    weight_caps: dict[int, int]
    replies: list[Message]
    dropped: list[tuple[int, str]]


def vocabulary_round(
    grid: Grid,
    *,
    k: int,
    minimum_sites: int,
    settings: VocabularySettings,
    max_weight_ratio: float = 0.0,
    timeout: float | None = None,
    registry: Registry | None = None,
) -> VocabularyRound:
    """Ask every node for its k-anonymised code counts and sum those that read. A reply that does
    not read (shared_model.contract.messages.VocabularyReply), or reports a count below k, is dropped whole;
    so is one from a node that is not the site it declares (server.registry) or that declares a
    site another node already did; fewer than `minimum_sites` replies that read end the run."""
    nodes = wait_for_nodes(grid, minimum_sites, timeout or 600.0)
    messages = [
        Message(
            RecordDict({"config": ConfigRecord({"k-anonymity": k})}), dst_node_id=node, message_type="query.vocabulary"
        )
        for node in nodes
    ]
    used: list[tuple[Message, VocabularyReply]] = []
    dropped: list[tuple[int, str]] = []
    for reply in send_and_receive(grid, messages, timeout=timeout):
        node = reply.metadata.src_node_id
        if reply.has_error():
            log.warning("vocabulary round: node %d failed: %s", node, reply.error.reason)
            continue
        try:
            record: VocabularyReply = read_reply(reply, "query.vocabulary")["vocabulary"]
            if any(count < k for count in record.counts):  # a site must never send these
                raise ReplyError(f"the vocabulary reply has code counts below k={k}")
            problem = identity_problem(registry, node, record.site_key)
            if problem:
                raise ReplyError(problem)
        except ReplyError as exc:
            log.warning("vocabulary round: dropped the reply of node %d: %s", node, exc)
            dropped.append((node, str(exc)))
            continue
        used.append((reply, record))
    declared = Counter(record.site_key for _, record in used)
    for reply, _ in [entry for entry in used if declared[entry[1].site_key] > 1]:
        reason = "several nodes answered as the same site: none of them is taken"
        log.warning("vocabulary round: dropped the reply of node %d: %s", reply.metadata.src_node_id, reason)
        dropped.append((reply.metadata.src_node_id, reason))
    used = [entry for entry in used if declared[entry[1].site_key] == 1]
    if len(used) < minimum_sites:
        raise RuntimeError(
            f"vocabulary round: {len(used)} site(s) answered with a reply that reads, {minimum_sites} required"
        )
    totals: dict[str, int] = defaultdict(int)
    parents: dict[str, list[str]] = {}
    for _, record in sorted(used, key=lambda entry: (entry[1].site_key, entry[0].metadata.src_node_id)):
        for code, count, parent in zip(record.codes, record.counts, record.parents, strict=True):
            totals[code] += count
            if parent and code not in parents:
                parents[code] = [parent]
    vocabulary = Vocabulary.from_counts(dict(totals), parents=parents, settings=settings)
    patients = {record.site_key: record.patients for _, record in used}
    log.info(
        "vocabulary round: %d sites, %d codes, %d target groups",
        len(used),
        len(vocabulary.codes),
        vocabulary.n_groups,
    )
    return VocabularyRound(vocabulary, weight_caps(patients, max_weight_ratio), [r for r, _ in used], dropped)


def weight_caps(patients: dict[int, int], max_ratio: float) -> dict[int, int]:
    """Each site's aggregation weight cap: the training patients it reported, at most `max_ratio`
    times the median of the other nodes' reports (0: no ratio). A site's size is its own word; the
    ratio bounds how far one site's word moves the average, whatever it claims."""
    if not max_ratio or len(patients) < 2:
        return dict(patients)
    caps = {}
    for site, count in patients.items():
        others = float(np.median([c for n, c in patients.items() if n != site]))
        cap = max(1, int(max_ratio * others))
        if count > cap:
            log.warning(
                "site %d reports %d training patients, %g x the others' median: capped at %d",
                site,
                count,
                max_ratio,
                cap,
            )
        caps[site] = min(count, cap)
    return caps
