"""A site checks the signed privacy passport against its own privacy ledger.

The passport's record-level DP for a site comes from what the site stated during the run, and
which rounds used its update from what the server saw. A careless or dishonest coordinator could
write something else into the checkpoint it signs; the site's ledger (client.ledger, written
before every private round) is the site's own account, so the two must agree: the same private
rounds in the run, the same epsilon at the same delta, and no update of a round the site has no
private round for.
"""

from __future__ import annotations

import math
from typing import Any

from client.ledger import Ledger
from shared_model.passport import pseudonym, site_key


def disagreements(passport: dict[str, Any], ledger: Ledger, site_id: str) -> list[str]:
    """What the passport says of `site_id` that its ledger does not (empty: they agree). A run
    resumed after a crash is a new Flower run: each is compared on its own."""
    name = pseudonym(site_key(site_id))
    site = passport["sites"].get(name)
    if site is None:
        return [f"{name} (site id {site_id!r}) is not in the passport"]
    through, problems, private_rounds = passport["through_round"], [], set()
    recorded = ledger.entries()  # read once
    for run in passport["flower_runs"]:
        entries = [e for e in recorded if e.run == run and e.round <= through]
        private_rounds |= {e.round for e in entries}
        stated = site["record_level_dp"].get(str(run), {"rounds": 0, "epsilon": 0.0, "delta": 0.0})
        if len(entries) != stated["rounds"]:
            problems.append(
                f"{name}: the ledger has {len(entries)} private round(s) in Flower run {run} up to round {through}, "
                f"the passport {stated['rounds']}"
            )
        if entries:
            delta = entries[-1].delta
            epsilon = ledger.epsilon(delta, run=run, through_round=through)
            if not math.isclose(epsilon, stated["epsilon"], rel_tol=1e-6, abs_tol=1e-9) or not math.isclose(
                delta, stated["delta"], rel_tol=1e-9
            ):
                problems.append(
                    f"{name}: in Flower run {run} the ledger spent epsilon {epsilon:.6g} at delta {delta:.3g}, "
                    f"the passport says {stated['epsilon']:.6g} at {stated['delta']:.3g}"
                )
        elif stated["epsilon"] > 0:
            problems.append(
                f"{name}: the passport says epsilon {stated['epsilon']:.6g}; the ledger has no private round"
            )
    if private_rounds:
        sent = set(site["rounds_joined"]) | {d["round"] for d in site["updates_dropped"]}
        unaccounted = sorted(sent - private_rounds)
        if unaccounted:
            problems.append(f"{name}: the passport has updates of round(s) {unaccounted}, the ledger no private round")
    return problems
