"""Builds the privacy passport (shared_model.contract.passport) round by round as the run goes.

Two sources, kept apart in the record: what the server saw (each round, whose update it used,
dropped or got an error from, from the strategy's RoundReport) and what each site stated about
itself (client.statement, in its vocabulary and evaluation replies: k, policy, the record-level
DP its own ledger spent). The passport goes into every checkpoint's signed manifest, so a resumed
run continues from the last checkpoint's.
"""

from __future__ import annotations

import base64
import copy
import json
import logging

from cryptography.exceptions import InvalidSignature
from flwr.app import Message

from server.registry import Registry
from server.validation import RoundReport
from shared_model.contract.messages import STATEMENT, PrivacyStatement, statement_payload
from shared_model.contract.passport import (
    ClientLevelDP,
    Incident,
    Passport,
    RequestedDP,
    SiteRecord,
    SpentDP,
    pseudonym,
    site_key,
)
from shared_model.contract.run_config import FederatedRunConfig
from shared_model.settings import settings_from

log = logging.getLogger(__name__)
MAX_REASON = 200  # characters of a failure reason kept (a site's error text is its own choice)


class PassportRecorder:
    def __init__(
        self,
        settings: FederatedRunConfig,
        run_id: str,
        previous: Passport | None = None,
        registry: Registry | None = None,
    ) -> None:
        """`registry`: the consortium's enrolment (server.registry). Where it binds node ids, a
        node is the site it was enrolled as (by name); with identity keys, a statement is recorded
        only if its site's key signed it. Without one (simulations), a site is what it states."""
        self.settings, self.run_id, self.registry = settings, run_id, registry
        self.sites: dict[str, SiteRecord] = copy.deepcopy(previous.sites) if previous else {}
        self.flower_runs: list[int] = list(previous.flower_runs) if previous else []
        self.site_keys: dict[int, int] = {}  # node id -> its site's key

    def _site(self, node: int) -> SiteRecord:
        enrolled = self.registry.name_of(node) if self.registry is not None else None
        if enrolled is not None:
            self.site_keys[node] = site_key(enrolled)
        name = pseudonym(self.site_keys[node]) if node in self.site_keys else f"node-{node}"
        site = self.sites.setdefault(name, SiteRecord())
        if enrolled is not None:
            site.name = enrolled
        return site

    def read_replies(self, replies: list[Message]) -> None:
        """Learn which site each node is (the site key its replies carry) and take each site's
        statement from its vocabulary or evaluation reply."""
        for reply in replies:
            run = int(reply.metadata.run_id)
            if run not in self.flower_runs:
                self.flower_runs.append(run)
            if reply.has_error():
                continue
            node = reply.metadata.src_node_id
            metrics = next(iter(reply.content.metric_records.values()), None)
            # with a registry, only the enrolment or a signed statement names a node
            key = metrics.get("site-key") if metrics is not None and self.registry is None else None
            if isinstance(key, int) and not isinstance(key, bool):
                self.site_keys[node] = key
            if STATEMENT not in reply.content.config_records:
                continue
            try:
                self._take_statement(node, run, reply.content.config_records[STATEMENT])
            except (KeyError, TypeError, ValueError) as exc:  # a careless or hostile site stops nothing
                log.warning("node %d sent a privacy statement that does not read (%s): ignored", node, exc)

    def _take_statement(self, node: int, run: int, record) -> None:
        """Everything is read before anything is recorded: a statement that does not read changes nothing."""
        statement = settings_from(PrivacyStatement, dict(record), what="privacy statement")
        verified = False
        if self.registry is not None:
            enrolled = self.registry.name_of(node)
            if self.registry.binds_nodes and (enrolled is None or site_key(enrolled) != statement.site_key):
                raise ValueError("the statement names another site than the node's enrolment")
            key = self.registry.identity_of(statement.site_key)
            if key is None and not self.registry.binds_nodes:
                raise ValueError("the statement names a site that is not enrolled")
            if key is not None:
                try:
                    key.verify(base64.urlsafe_b64decode(statement.signature), statement_payload(dict(record), run))
                except (InvalidSignature, ValueError) as exc:
                    raise ValueError("the statement is not signed by the enrolled key of the site it names") from exc
                verified = True
        policy = json.loads(statement.policy)
        if not isinstance(policy, dict):
            raise TypeError("the policy is not a table")
        self.site_keys[node] = statement.site_key
        site = self._site(node)
        site.k_anonymity, site.policy, site.policy_sha256 = statement.k_anonymity, policy, statement.policy_sha256
        site.statement_verified = verified
        site.record_level_dp[str(run)] = SpentDP(
            rounds=statement.dp_rounds,
            epsilon=statement.dp_epsilon,
            delta=statement.dp_delta,
            noise_multiplier=statement.dp_noise_multiplier,
            accountant=statement.dp_accountant,
        )

    def training_round(self, server_round: int, report: RoundReport) -> None:
        """Whose update was used, dropped or failed; every site the run knows that sent nothing
        (down, or cut off) missed the round."""
        seen = {id(self._site(node)) for node in [*report.accepted, *(n for n, _ in report.dropped + report.failures)]}
        for site in self.sites.values():
            if id(site) not in seen:
                site.rounds_missed.append(server_round)
        for node in report.accepted:
            self._site(node).rounds_joined.append(server_round)
        for node, reason in report.dropped:
            self._site(node).updates_dropped.append(Incident(server_round, reason[:MAX_REASON]))
        for node, reason in report.failures:
            self._site(node).rounds_failed.append(Incident(server_round, reason[:MAX_REASON]))

    def replies_dropped(self, server_round: int, stage: str, dropped: list[tuple[int, str]]) -> None:
        """Replies the server did not take (they did not read), with why: a vocabulary reply
        (round 0) or an evaluation."""
        for node, reason in dropped:
            self._site(node).replies_dropped.append(Incident(server_round, reason[:MAX_REASON], stage))

    def document(self, through_round: int, client_level_epsilon: float) -> Passport:
        s = self.settings
        return Passport(
            run_id=self.run_id,
            flower_runs=list(self.flower_runs),
            through_round=through_round,
            strategy=s.strategy,
            secure_aggregation=s.secure_aggregation,
            k_anonymity_requested=s.k_anonymity,
            record_level_dp_requested=RequestedDP(s.dp_epsilon, s.dp_delta, s.dp_clip_norm, s.dp_accountant),
            client_level_dp=ClientLevelDP(
                noise_multiplier=s.client_dp_noise,
                clipping=s.client_dp_clipping,
                clip_norm=s.client_dp_clip_norm,
                delta=s.client_dp_delta,
                accountant=s.dp_accountant,
                epsilon=client_level_epsilon,
            ),
            sites=copy.deepcopy(self.sites),
        )
