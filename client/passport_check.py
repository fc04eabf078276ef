"""A site checks the signed privacy passport against its own privacy ledger.

The passport's record-level DP for a site comes from what the site stated during the run, and
which rounds used its update from what the server saw. A careless or dishonest coordinator could
write something else into the checkpoint it signs; the site's ledger (client.ledger, written
before every private round) is the site's own account, so the two must agree: the same private
rounds in the run, the same epsilon at the same delta, and no update of a round the site has no
private round for.
"""

from __future__ import annotations

import hashlib
import math

from client.activity import ActivityLog
from client.ledger import Ledger
from client.policy import SitePolicy
from client.statement import policy_json
from shared_model.contract.passport import Passport, SiteRecord, SpentDP, pseudonym, site_key


def disagreements(
    passport: Passport,
    ledger: Ledger,
    site_id: str,
    *,
    activity: ActivityLog | None = None,
    policy: SitePolicy | None = None,
) -> list[str]:
    """What the passport says of `site_id` that the site's own state does not (empty: they agree).

    Walked from the site's side: every private round its ledger filed under the passport's run
    (and every round its activity log says it trained) up to the passport's last round must be in
    the passport, under a Flower run the passport lists (a run resumed after a crash is a new
    Flower run: each is compared on its own); and with the site's `policy`, the k it applied, its
    policy's digest and secure aggregation."""
    name = pseudonym(site_key(site_id))
    site = passport.sites.get(name)
    if site is None:
        return [f"{name} (site id {site_id!r}) is not in the passport"]
    through, problems = passport.through_round, []
    listed = set(passport.flower_runs)
    recorded = ledger.entries()  # read once
    ours = [e for e in recorded if e.consortium_run == passport.run_id and e.round <= through]
    for run in sorted({e.run for e in ours} - listed):
        problems.append(
            f"{name}: the ledger has private rounds of this run under Flower run {run}, which the passport leaves out"
        )
    private_rounds: set[int] = set()
    for run in passport.flower_runs:
        entries = [e for e in recorded if e.run == run and e.round <= through]
        private_rounds |= {e.round for e in entries}
        problems += _dp_disagreements(name, site, ledger, run, entries, through)
    sent = site.rounds_sent()
    if private_rounds:
        unaccounted = sorted(sent - private_rounds)
        if unaccounted:
            problems.append(f"{name}: the passport has updates of round(s) {unaccounted}, the ledger no private round")
    if activity is not None:
        problems += _activity_disagreements(name, passport, site, activity, sent)
    if policy is not None:
        problems += _policy_disagreements(name, passport, site, policy)
    return problems


def _dp_disagreements(name: str, site: SiteRecord, ledger: Ledger, run: int, entries: list, through: int) -> list[str]:
    stated = site.record_level_dp.get(str(run), SpentDP(rounds=0, epsilon=0.0, delta=0.0))
    problems = []
    if len(entries) != stated.rounds:
        problems.append(
            f"{name}: the ledger has {len(entries)} private round(s) in Flower run {run} up to round {through}, "
            f"the passport {stated.rounds}"
        )
    if entries:
        delta = entries[-1].delta
        epsilon = ledger.epsilon(delta, run=run, through_round=through)
        if not math.isclose(epsilon, stated.epsilon, rel_tol=1e-6, abs_tol=1e-9) or not math.isclose(
            delta, stated.delta, rel_tol=1e-9
        ):
            problems.append(
                f"{name}: in Flower run {run} the ledger spent epsilon {epsilon:.6g} at delta {delta:.3g}, "
                f"the passport says {stated.epsilon:.6g} at {stated.delta:.3g}"
            )
    elif stated.epsilon > 0:
        problems.append(f"{name}: the passport says epsilon {stated.epsilon:.6g}; the ledger has no private round")
    return problems


def _activity_disagreements(
    name: str, passport: Passport, site: SiteRecord, activity: ActivityLog, sent: set[int]
) -> list[str]:
    """Rounds this site trained in the run (its activity log) that the passport does not account for."""
    trained = [
        a
        for a in activity.entries()
        if a.kind == "trained" and a.consortium_run == passport.run_id and a.round <= passport.through_round
    ]
    problems = []
    seen = sent | {d.round for d in site.rounds_failed}
    missing = sorted({a.round for a in trained} - seen)
    if missing:
        problems.append(f"{name}: this site trained round(s) {missing}, which the passport leaves out")
    for run in sorted({a.run for a in trained} - set(passport.flower_runs)):
        problems.append(f"{name}: this site trained in Flower run {run}, which the passport leaves out")
    if any(a.secure for a in trained) and not passport.secure_aggregation:
        problems.append(f"{name}: this site trained under SecAgg+, the passport says secure aggregation was off")
    if any(not a.secure for a in trained) and passport.secure_aggregation:
        problems.append(f"{name}: this site trained plain rounds, the passport says secure aggregation was on")
    return problems


def _policy_disagreements(name: str, passport: Passport, site: SiteRecord, policy: SitePolicy) -> list[str]:
    problems = []
    digest = hashlib.sha256(policy_json(policy).encode()).hexdigest()
    if site.policy_sha256 is not None and site.policy_sha256 != digest:
        problems.append(f"{name}: the passport's policy digest is not this site's policy's")
    k = site.k_anonymity
    if k is not None and k < max(policy.k_anonymity, passport.k_anonymity_requested):
        problems.append(f"{name}: the passport says k = {k}, below what this site applies")
    if policy.require_secure_aggregation and not passport.secure_aggregation:
        problems.append(f"{name}: this site requires SecAgg+, the passport says secure aggregation was off")
    return problems
