"""What a site states about its own privacy in a run: the site's half of the privacy passport.

Sent with the vocabulary reply and with every evaluation reply (plain messages in every run,
SecAgg+ included, so the server hears it whatever hides the updates): the k the site applies,
its policy and the policy's digest, and, from the site's own privacy ledger, the record-level
DP it has spent in this run. The server signs it into each checkpoint's passport
(server.passport), and the site can later check the signed copy against its ledger
(client.passport_check). Only settings and accounting leave the site: no patient, code or count.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
from pathlib import Path

from flwr.app import ConfigRecord, Context

from client.ledger import ledger_of
from client.node_config import IDENTITY_KEY
from client.policy import SitePolicy
from shared_model.contract.app_bundle import load_signing_key
from shared_model.contract.messages import statement_payload

LEDGER_ACCOUNTANT = "rdp"  # the ledger composes its rounds with the RDP accountant


def policy_json(policy: SitePolicy) -> str:
    return json.dumps(dataclasses.asdict(policy), sort_keys=True)


def privacy_statement(context: Context, policy: SitePolicy, k: int, site_key: int) -> ConfigRecord:
    ledger = ledger_of(context)
    entries = [e for e in ledger.entries() if e.run == context.run_id]
    latest = entries[-1] if entries else None
    document = policy_json(policy)
    statement = {
        "site-key": site_key,
        "k-anonymity": k,
        "policy": document,
        "policy-sha256": hashlib.sha256(document.encode()).hexdigest(),
        "dp-rounds": len(entries),
        "dp-epsilon": ledger.epsilon(latest.delta, run=context.run_id) if latest else 0.0,
        "dp-delta": latest.delta if latest else 0.0,
        "dp-noise-multiplier": latest.noise_multiplier if latest else 0.0,
        "dp-accountant": LEDGER_ACCOUNTANT,
    }
    return ConfigRecord({**statement, "signature": _signature(context, statement)})


def _signature(context: Context, statement: dict) -> str:
    """The site's signature of its statement with its identity key (`site join --identity-key`),
    which the coordinator enrolled for it: no site can file claims under another's pseudonym.
    Empty without a key (simulations)."""
    path = context.node_config.get(IDENTITY_KEY)
    if not path:
        return ""
    signature = load_signing_key(Path(str(path))).sign(statement_payload(statement, context.run_id))
    return base64.urlsafe_b64encode(signature).decode()
