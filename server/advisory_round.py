"""The advisory round (docs/architecture.md §4): before a consortium trains anything, the server
asks each site for its k-anonymised summary (shared_model/site_summary.py), predicts who helps
whom and writes the advice in the run directory. Sites appear under their pseudonyms."""

from __future__ import annotations

import logging
from pathlib import Path

from flwr.app import ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

from server.advisor import Advice, advise, load_predictor
from server.exchange import send_and_receive
from server.vocabulary_round import wait_for_nodes
from shared_model.passport import pseudonym
from shared_model.site_summary import SiteSummary

log = logging.getLogger(__name__)


def advisory_round(grid: Grid, *, k: int, minimum_sites: int) -> dict[str, SiteSummary]:
    """Each answering site's summary by pseudonym; a reply that fails or does not read is left out."""
    nodes = wait_for_nodes(grid, minimum_sites)
    messages = [
        Message(RecordDict({"config": ConfigRecord({"k-anonymity": k})}), dst_node_id=n, message_type="query.summary")
        for n in nodes
    ]
    summaries: dict[str, SiteSummary] = {}
    for reply in send_and_receive(grid, messages):
        node = reply.metadata.src_node_id
        if reply.has_error():
            log.warning("advisory round: node %d failed: %s", node, reply.error.reason)
            continue
        try:
            record = reply.content["summary"]
            summary = SiteSummary.from_json(str(record["summary"]))
            name = pseudonym(int(record["site-key"]))
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("advisory round: node %d sent a summary that does not read (%s); left out", node, exc)
            continue
        summaries[name] = summary
    if len(summaries) < minimum_sites:
        raise RuntimeError(f"advisory round: {len(summaries)} site(s) answered, {minimum_sites} required")
    return summaries


def run_advisory_round(grid: Grid, *, k: int, minimum_sites: int, run_dir: Path) -> Advice:
    summaries = advisory_round(grid, k=k, minimum_sites=minimum_sites)
    advice = advise(summaries, load_predictor())
    advice.write(run_dir)
    log.info("advisory round: %d sites; advice written to %s", len(summaries), run_dir / "advice.md")
    return advice
