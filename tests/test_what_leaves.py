"""What leaves a site, complete: every key of every record of every message the production ClientApp
sends in a full run (vocabulary, training with and without record-level DP, evaluation, the
advisory summary, the privacy statement) is on the one list in the code
(shared_model.contract.messages.released), and docs/deployment.md's table says the same."""

from __future__ import annotations

import json
import re
from pathlib import Path

from flwr.app import ArrayRecord

from client.app import make_client_app
from client.policy import SitePolicy
from server.federation import run_federation
from shared_model.contract.messages import ARRAYS, STATEMENT, SUMMARY_FIELDS, released
from shared_model.contract.run_config import FederatedRunConfig
from shared_model.contract.wire import unpack
from tests.inprocess_grid import InProcessGrid

DEPLOYMENT = Path(__file__).resolve().parents[1] / "docs" / "deployment.md"
TABLE = re.compile(r"<!-- what-leaves -->\n(.*?)<!-- /what-leaves -->", re.S)


def captured_keys(grids: list[InProcessGrid]) -> tuple[dict[tuple[str, str], set[str]], list[dict]]:
    """(message type, record) -> the keys sent, and every JSON text a record carried."""
    keys: dict[tuple[str, str], set[str]] = {}
    texts = []
    for grid in grids:
        for reply in grid.sent:
            if reply.has_error():
                continue
            for name, record in unpack(reply.content).items():
                sent = {ARRAYS} if isinstance(record, ArrayRecord) else set(record)
                keys.setdefault((reply.metadata.message_type, name), set()).update(sent)
                texts += [
                    (name, json.loads(record[key])) for key in ("summary", "policy") if key in sent and name != ARRAYS
                ]
    return keys, texts


def test_every_key_a_site_sends_is_on_the_one_list(fed_sites: list[Path], tmp_path: Path) -> None:
    private = tmp_path / "private.toml"
    private.write_text("dp_epsilon = 8.0\n")  # this site trains with DP-SGD: its metrics differ
    sharing = tmp_path / "sharing.toml"
    sharing.write_text("share_task_counts = true\n")
    common = {
        "num_server_rounds": 1,
        "min_available_clients": 3,
        "k_anonymity": 5,
        "max_vocab": 300,
        "d_model": 16,
        "ffn_dim": 16,
        "batch_size": 25,
        "data_paths": ",".join(str(p) for p in fed_sites),
    }
    grids = []
    for run, policies, extra in (
        ("train", [str(private), "", ""], {"num_server_rounds": 2}),  # round 2 carries round 1's evaluation
        ("advise", [str(sharing)] * 3, {"advise_only": True}),
    ):
        settings = FederatedRunConfig(**{**common, **extra}, run_dir=str(tmp_path / run))
        nodes = [{"partition-id": i, **({"policy": p} if p else {})} for i, p in enumerate(policies)]
        grids.append(InProcessGrid(make_client_app(settings.to_run_config()), nodes))
        run_federation(grids[-1], settings)
    keys, texts = captured_keys(grids)
    assert keys == {where: set(names) for where, names in released().items()}
    summaries = [text for name, text in texts if name == "summary"]
    policies = [text for name, text in texts if name == STATEMENT]
    assert summaries and all(set(s) == set(SUMMARY_FIELDS) for s in summaries)
    assert policies and all(set(p) == set(SitePolicy.__dataclass_fields__) for p in policies)


def released_table() -> str:
    rows = ["| message | record | keys |", "|---|---|---|"]
    for (message_type, record), names in released().items():
        rows.append(f"| `{message_type}` | `{record}` | " + ", ".join(f"`{n}`" for n in names) + " |")
    return "\n".join(rows) + "\n"


def test_the_deployment_guide_lists_what_leaves_a_site() -> None:
    found = TABLE.search(DEPLOYMENT.read_text())
    assert found, "docs/deployment.md has no <!-- what-leaves --> table"
    assert found.group(1) == released_table(), "replace the table in docs/deployment.md by:\n" + released_table()
