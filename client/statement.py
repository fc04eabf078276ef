"""What a site states about its own privacy in a run: the site's half of the privacy passport.

Sent with the vocabulary reply and with every evaluation reply (plain messages in every run,
SecAgg+ included, so the server hears it whatever hides the updates): the k the site applies,
its policy and the policy's digest, and, from the site's own privacy ledger, the record-level
DP it has spent in this run. The server signs it into each checkpoint's passport
(server.passport), and the site can later check the signed copy against its ledger
(client.passport_check). Only settings and accounting leave the site: no patient, code or count.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

from flwr.app import ConfigRecord, Context

from client.ledger import ledger_of
from client.policy import SitePolicy

LEDGER_ACCOUNTANT = "rdp"  # the ledger composes its rounds with the RDP accountant


def policy_json(policy: SitePolicy) -> str:
    return json.dumps(dataclasses.asdict(policy), sort_keys=True)


def privacy_statement(context: Context, policy: SitePolicy, k: int, site_key: int) -> ConfigRecord:
    ledger = ledger_of(context)
    entries = [e for e in ledger.entries() if e.run == context.run_id]
    latest = entries[-1] if entries else None
    document = policy_json(policy)
    return ConfigRecord(
        {
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
    )
