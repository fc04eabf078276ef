"""TensorBoard event files of a federated run (RUN/tensorboard/), written by the server once per
round: `tensorboard --logdir RUN` is the run's dashboard (docs/inspecting.md).

Scalars per round: the aggregated metrics of rounds.csv (`round/...`), each site's reported
training metrics (`site/node-<id>/...`: loss, seconds, epsilon spent) and the updates dropped,
with their reasons as text (`dropped`). Only what the server already receives is written."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import tensorflow as tf

from server.validation import RoundReport

DIRECTORY = "tensorboard"


class RoundDashboard:
    def __init__(self, run_dir: Path) -> None:
        self.writer = tf.summary.create_file_writer(str(Path(run_dir) / DIRECTORY))

    def write(self, server_round: int, row: dict[str, Any], report: RoundReport | None) -> None:
        with self.writer.as_default(step=server_round):
            for name, value in row.items():
                if name != "round" and isinstance(value, int | float) and not math.isnan(value):
                    tf.summary.scalar(f"round/{name}", float(value))
            if report is not None:
                for node, metrics in sorted(report.site_metrics.items()):
                    for name, value in sorted(metrics.items()):
                        tf.summary.scalar(f"site/node-{node}/{name}", value)
                reasons = [f"node {node}: {reason}" for node, reason in report.dropped]
                tf.summary.text("dropped", "\n\n".join(reasons) or "none")
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
