"""rounds.csv, a federated run's table: one row per round (who took part, the losses and
metrics, the privacy spent, where the seconds went), replaced whole after every round."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from flwr.app import MetricRecord

from server.strategies import client_level_epsilon
from server.validation import RoundReport
from shared_model.contract.run_config import FederatedRunConfig
from shared_model.data.paths import atomic_write_bytes

ROUND_COLUMNS = [
    "round",
    "clients",
    "failed",
    "dropped",
    "train_loss",
    "eval_loss",
    "eval_recall@5",
    "eval_recall@10",
    "eval_recall@30",
    "site_epsilon",
    "client_epsilon",
    "slowest_train_seconds",
    "slowest_eval_seconds",
    "client_compute_seconds",
    "local_seconds",
    "exchange_seconds",  # from sending a round's messages to the last reply: local_seconds and the wire
    "round_seconds",  # exchange_seconds and the server's own turn (aggregation, checkpoint)
]


def metric(record: MetricRecord | None, key: str) -> float:
    return float(record[key]) if record is not None and key in record else float("nan")


def round_row(
    settings: FederatedRunConfig,
    server_round: int,
    report: RoundReport,
    train_metrics: MetricRecord | None,
    eval_metrics: MetricRecord | None,
) -> dict[str, Any]:
    """A round's row of rounds.csv, but for its timings: who took part, the losses and metrics,
    the privacy spent and the sites' compute."""
    return {
        "round": server_round,
        "clients": report.received - report.failed - len(report.dropped),
        "failed": report.failed,
        "dropped": len(report.dropped),
        "train_loss": metric(train_metrics, "train-loss"),
        **evaluation_columns(eval_metrics, report),
        "site_epsilon": report.site_epsilon,
        "client_epsilon": client_level_epsilon(settings, server_round),
        "slowest_train_seconds": report.slowest_train_seconds,
        "client_compute_seconds": report.total_train_seconds + report.total_eval_seconds,
    }


def evaluation_columns(metrics: MetricRecord | None, report: RoundReport) -> dict[str, float]:
    return {
        "eval_loss": metric(metrics, "eval-loss"),
        **{f"eval_recall@{k}": metric(metrics, f"eval-recall@{k}") for k in (5, 10, 30)},
        "slowest_eval_seconds": report.slowest_eval_seconds,
    }


def local_seconds(report: RoundReport, carried_seconds: dict[int, float], *, evaluated_alone: bool) -> float:
    """The local work on a round's critical path: the slowest site's training (and the evaluation
    its training message carried), then the slowest site's evaluation when it had a message of its
    own. What a round takes beyond this is the deployment's overhead (the bench's measure)."""
    trained = {node: metrics.get("train-seconds", 0.0) for node, metrics in report.site_metrics.items()}
    exchange = max(
        [report.slowest_train_seconds, *carried_seconds.values()]
        + [seconds + carried_seconds.get(node, 0.0) for node, seconds in trained.items()]
    )
    return exchange + (report.slowest_eval_seconds if evaluated_alone else 0.0)


def read_rounds(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "rounds.csv"
    if not path.exists():
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def write_rounds(run_dir: Path, rows: list[dict[str, Any]]) -> None:
    """The whole table, replaced atomically (a crash leaves the previous round's table)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, ROUND_COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(run_dir / "rounds.csv", buffer.getvalue().encode())
