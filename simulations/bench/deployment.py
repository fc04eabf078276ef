"""Round time in a real deployment: a TLS SuperLink and two `claimpt site join` SuperNodes on
127.0.0.1, once with Flower's SuperExec starting a fresh `flwr-clientapp` process for every
message (Flower's default), and then with the site worker that `claimpt site join` keeps running
and that takes the SuperNode's tasks itself (client.worker, client.executor): under Flower's own
SuperNode, with short polls, and with one exchange a round.

The overhead of a round is the share of its time spent in neither local training nor local
evaluation at the slowest site (rounds.csv's `local_seconds`): process start, imports, reading
and tensorising the site's data, building the model, moving weights, aggregating and signing the
checkpoint.
"""

from __future__ import annotations

import csv
import logging
import statistics
import tempfile
from pathlib import Path
from typing import Any

from simulations.federation.local_deployment import local_deployment, prepared_sites

log = logging.getLogger(__name__)
#: mode -> `claimpt site join` options and run-config overrides, and the mode as bench.md names it
MODES = {
    "per_message": (("--no-site-worker",), "evaluate-with-training=false"),
    "stock_supernode": (("--stock-supernode",), "evaluate-with-training=false"),
    "two_exchanges": ((), "evaluate-with-training=false"),
    "site_worker": ((), ""),
}
MODE_LABELS = {
    "per_message": "a fresh process per message (Flower's default, `--no-site-worker`), two exchanges a round",
    "stock_supernode": "the site worker under Flower's own `flower-supernode` (`--stock-supernode`), two exchanges",
    "two_exchanges": "the site worker, short-poll SuperNode, train then evaluate (`evaluate-with-training=false`)",
    "site_worker": "the site worker, short-poll SuperNode, one exchange a round (`claimpt site join`, the defaults)",
}


def _steady_rounds(run_dir: Path) -> list[dict[str, float]]:
    """Rounds 2 to n-1: round 1 also reads the data and builds the model, and the last round of a
    run that carries evaluations on training messages evaluates its model in an exchange of its own."""
    with open(run_dir / "rounds.csv", newline="") as handle:
        rows = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(handle)]
    return [row for row in rows if 1 < row["round"] < len(rows)]


def _mode_figures(rows: list[dict[str, float]]) -> dict[str, float]:
    rounds = [row["round_seconds"] for row in rows]
    local = [row["local_seconds"] for row in rows]
    return {
        "round_seconds": round(statistics.median(rounds), 2),
        "local_seconds": round(statistics.median(local), 2),
        "overhead_fraction": round(statistics.median(1 - lo / r for lo, r in zip(local, rounds, strict=True)), 4),
        # the ServerApp's own turn: aggregation, checks, the signed checkpoint, the next round's messages
        "server_seconds": round(statistics.median(row["round_seconds"] - row["exchange_seconds"] for row in rows), 2),
    }


def deployment_section(patients_per_site: int, seed: int, rounds: int = 4) -> dict[str, Any]:
    """Two sites of `patients_per_site` patients, `rounds` FedAvg rounds of the default model in
    each mode; figures are medians over rounds 2 to n-1."""
    figures: dict[str, Any] = {"deployment_patients_per_site": patients_per_site, "deployment_rounds": rounds}
    with tempfile.TemporaryDirectory(prefix="claimpt-deploy-bench-") as tmp:
        root = Path(tmp)
        log.info("bench: synthesising and preparing 2 sites x %d patients for the deployment rounds", patients_per_site)
        _, sites = prepared_sites(root, [patients_per_site] * 2, seed)
        for mode, (options, run_config) in MODES.items():
            log.info("bench: %d deployment rounds, %s", rounds, mode.replace("_", " "))
            with local_deployment(root / mode, sites, join_options=options) as deployment:
                run_dir = root / mode / "run"
                result = deployment.submit(
                    f"num-server-rounds={rounds} min-available-clients=2 seed={seed} run-dir='{run_dir}' {run_config}",
                    timeout=3600,
                )
                if result.returncode != 0:
                    raise RuntimeError(f"the deployment run ({mode}) failed:\n{result.stdout}\n{result.stderr}")
            figures.update({f"deployment_{mode}_{k}": v for k, v in _mode_figures(_steady_rounds(run_dir)).items()})
    return figures
