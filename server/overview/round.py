"""The advisory round (docs/architecture.md §4): before a consortium trains anything, the server
asks each site for its summary (shared_model/contract/site_summary.py) and writes the consortium overview
and the summaries in the run directory. Sites appear under their pseudonyms."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from flwr.app import ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

from server.exchange import send_and_receive
from server.overview.overview import ConsortiumOverview, consortium_overview
from server.overview.predictor import TransferPredictor
from server.vocabulary_round import wait_for_nodes
from shared_model.contract.passport import pseudonym
from shared_model.contract.site_summary import SiteSummary, save_summaries

log = logging.getLogger(__name__)


def summary_query(k: int, predictor: TransferPredictor) -> ConfigRecord:
    """What the server asks: summaries at `k`, and, when the predictor uses it, the AUROC each site
    reaches alone on the predictor's task, measured by the predictor's recipe."""
    asked: dict[str, int | str] = {"k-anonymity": k}
    if predictor.own_auroc is not None:
        asked |= {"task": predictor.task, "own-auroc": json.dumps(predictor.own_auroc.to_dict())}
    return ConfigRecord(asked)


def advisory_round(grid: Grid, *, k: int, minimum_sites: int, predictor: TransferPredictor) -> dict[str, SiteSummary]:
    """Each answering site's summary by pseudonym; a reply that fails or does not read is left out."""
    nodes = wait_for_nodes(grid, minimum_sites)
    messages = [
        Message(RecordDict({"config": summary_query(k, predictor)}), dst_node_id=n, message_type="query.summary")
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


def run_advisory_round(
    grid: Grid, *, k: int, minimum_sites: int, run_dir: Path, predictor: TransferPredictor
) -> ConsortiumOverview:
    summaries = advisory_round(grid, k=k, minimum_sites=minimum_sites, predictor=predictor)
    overview = consortium_overview(summaries, predictor)
    overview.write(run_dir)
    save_summaries(summaries, run_dir / "summaries")  # what each site released, for the consortium's records
    log.info("advisory round: %d sites; overview written to %s", len(summaries), run_dir / "overview.md")
    return overview
