"""Update validation as a strategy wrapper, in the style of Flower's DP wrappers: it composes with
any strategy (robust or DP) instead of being re-implemented per strategy (docs/architecture.md §4)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from server.registry import Registry, identity_problem
from server.replies import ReplyError, read_reply
from shared_model.contract.messages import ARRAYS, EvaluateMetrics, TrainMetrics

log = logging.getLogger(__name__)
SITE_METRICS = ("train-loss", "train-seconds", "dp-epsilon", "num-examples")  # kept per site for the dashboard


@dataclass
class RoundReport:
    """What the wrapper saw in one training round (for rounds.csv and the bench)."""

    received: int = 0
    accepted: list[int] = field(default_factory=list)  # node ids whose update went into the aggregate
    failures: list[tuple[int, str]] = field(default_factory=list)  # (node id, the reason its reply gave)
    dropped: list[tuple[int, str]] = field(default_factory=list)  # (node id, why the server dropped it)
    evaluations_dropped: list[tuple[int, str]] = field(default_factory=list)  # (node id, why)
    slowest_train_seconds: float = 0.0
    total_train_seconds: float = 0.0
    total_eval_seconds: float = 0.0
    slowest_eval_seconds: float = 0.0
    site_epsilon: float = 0.0  # the largest record-level epsilon a site reported spending so far
    site_metrics: dict[int, dict[str, float]] = field(default_factory=dict)  # node id -> what it reported

    @property
    def failed(self) -> int:
        return len(self.failures)


def _keep_common_metrics(replies: list[Message]) -> None:
    """Flower's strategies average metrics only when every reply has the same keys; a site that
    trains with its own record-level DP sends its epsilon and no training loss, the others the
    reverse. What is not common to all is kept per site in the RoundReport, not averaged."""
    common = set.intersection(*(set(m.content["metrics"]) for m in replies)) if replies else set()
    for message in replies:
        for record in message.content.metric_records.values():
            for key in set(record) - common:
                del record[key]


class UpdateValidation(Strategy):
    """Drop replies whose arrays are not finite, do not match the global model's shapes, or whose
    update norm exceeds `max_update_norm` (absolute) or `max_norm_ratio` x the median norm of the
    other replies (leave-one-out, so two sites suffice). A sign-flipped update keeps its norm and
    passes by design: that attack is for the robust aggregation rules.

    A site's `num-examples` (FedAvg's weight) is capped at the training patients it reported in
    the vocabulary round (`example_caps`, by site key): a site claiming 1e9 patients cannot take
    over the average. With a `registry` that binds node ids (server.registry), a reply from a node
    that declares another site than its enrolled one is dropped.

    Replies are passed on sorted by site, so aggregation is deterministic; rounds with fewer than
    `min_valid` usable replies keep the previous global model.
    """

    def __init__(
        self, strategy: Strategy, *, max_update_norm: float = 0.0, max_norm_ratio: float = 0.0, min_valid: int = 1
    ) -> None:
        super().__init__()
        self.strategy = strategy
        self.max_update_norm = max_update_norm
        self.max_norm_ratio = max_norm_ratio
        self.min_valid = min_valid
        self.example_caps: dict[int, int] = {}
        self.registry: Registry | None = None
        self.current_arrays: list[np.ndarray] | None = None
        self.reports: dict[int, RoundReport] = {}

    def summary(self) -> None:
        log.info(
            "UpdateValidation(max_update_norm=%s, max_norm_ratio=%s) wrapping:",
            self.max_update_norm,
            self.max_norm_ratio,
        )
        self.strategy.summary()

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self.current_arrays = arrays.to_numpy_ndarrays()
        return self.strategy.configure_train(server_round, arrays, config, grid)

    def _problem(self, arrays_record: ArrayRecord) -> tuple[str | None, float]:
        arrays = arrays_record.to_numpy_ndarrays()
        expected = self.current_arrays or []
        if len(arrays) != len(expected):
            return f"{len(arrays)} arrays instead of {len(expected)}", 0.0
        for i, (got, want) in enumerate(zip(arrays, expected, strict=True)):
            if got.shape != want.shape or got.dtype.kind != "f":
                return f"array {i} is not a float array of shape {want.shape}", 0.0
            if not np.isfinite(got).all():
                return f"array {i} has non-finite values", 0.0
        norm = float(
            np.sqrt(sum(np.sum((a.astype(np.float64) - b) ** 2) for a, b in zip(arrays, expected, strict=True)))
        )
        if self.max_update_norm and not norm <= self.max_update_norm:
            return f"update norm {norm:.3g} exceeds the bound {self.max_update_norm:.3g}", norm
        return None, norm

    def _cap_examples(self, server_round: int, message: Message, metrics: TrainMetrics) -> str | None:
        """Cap the reply's `num-examples` at its site's weight cap from the vocabulary round; a
        site that was not in the vocabulary round has no cap and is dropped."""
        if not self.example_caps:
            return None
        cap = self.example_caps.get(metrics.site_key)
        if cap is None:
            return "the site did not take part in the vocabulary round"
        if metrics.num_examples > cap:
            log.warning(
                "round %d: node %d claims %d examples, its cap is %d: capped",
                server_round,
                message.metadata.src_node_id,
                metrics.num_examples,
                cap,
            )
            message.content["metrics"]["num-examples"] = cap
        return None

    def _drop(self, server_round: int, report: RoundReport, node: int, reason: str) -> None:
        report.dropped.append((node, reason))
        log.warning("round %d: dropped update of node %d: %s", server_round, node, reason)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        report = RoundReport(received=len(replies))
        usable: list[tuple[Message, TrainMetrics, float]] = []
        for message in replies:
            node = message.metadata.src_node_id
            if message.has_error():
                report.failures.append((node, message.error.reason))
                log.warning("round %d: node %d failed: %s", server_round, node, message.error.reason)
                continue
            try:
                records = read_reply(message, "train")
            except ReplyError as exc:
                self._drop(server_round, report, node, str(exc))
                continue
            metrics: TrainMetrics = records["metrics"]
            problem, norm = self._problem(records[ARRAYS])
            problem = (
                identity_problem(self.registry, node, metrics.site_key)
                or problem
                or self._cap_examples(server_round, message, metrics)
            )
            if problem:
                self._drop(server_round, report, node, problem)
                continue
            usable.append((message, metrics, norm))
        usable.sort(key=lambda entry: (entry[1].site_key, entry[0].metadata.src_node_id))  # deterministic
        if self.max_norm_ratio and len(usable) >= 2:
            norms = [n for _, _, n in usable]
            for index, entry in enumerate(list(usable)):
                norm = entry[2]
                others = float(np.median(norms[:index] + norms[index + 1 :]))  # leave-one-out: works for 2 sites
                if others > 0 and not norm <= self.max_norm_ratio * others:
                    reason = f"update norm {norm:.3g} is {norm / others:.1f}x the median {others:.3g} of the others"
                    self._drop(server_round, report, entry[0].metadata.src_node_id, reason)
                    usable.remove(entry)
        valid = [m for m, _, _ in usable]
        kept = [metrics for _, metrics, _ in usable]
        report.slowest_train_seconds = max((m.train_seconds for m in kept), default=0.0)
        report.total_train_seconds = sum(m.train_seconds for m in kept)
        report.site_epsilon = max((m.dp_epsilon or 0.0 for m in kept), default=0.0)
        report.site_metrics = {
            message.metadata.src_node_id: {
                key: float(value)
                for key, value in message.content["metrics"].items()
                if key in SITE_METRICS and isinstance(value, int | float)
            }
            for message in valid
        }
        self.reports[server_round] = report
        if len(valid) < self.min_valid:
            log.warning(
                "round %d: %d usable update(s), fewer than %d: the global model is kept",
                server_round,
                len(valid),
                self.min_valid,
            )
            reason = f"fewer than {self.min_valid} usable updates: the round kept the previous model"
            report.dropped += [(m.metadata.src_node_id, reason) for m in valid]
            return None, None
        report.accepted = [m.metadata.src_node_id for m in valid]
        _keep_common_metrics(valid)
        return self.strategy.aggregate_train(server_round, valid)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        return self.strategy.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        """Aggregate the evaluation replies that read (`EvaluateMetrics`); the others are dropped
        with their reason in the round's report."""
        report = self.reports.setdefault(server_round, RoundReport())
        valid, seconds = [], []
        for message in replies:
            if message.has_error():
                continue
            try:
                metrics: EvaluateMetrics = read_reply(message, "evaluate")["metrics"]
                problem = identity_problem(self.registry, message.metadata.src_node_id, metrics.site_key)
                if problem:
                    raise ReplyError(problem)
            except ReplyError as exc:
                report.evaluations_dropped.append((message.metadata.src_node_id, str(exc)))
                log.warning(
                    "round %d: dropped evaluation of node %d: %s", server_round, message.metadata.src_node_id, exc
                )
                continue
            valid.append(message)
            seconds.append(metrics.eval_seconds)
        report.total_eval_seconds = sum(seconds)
        report.slowest_eval_seconds = max(seconds, default=0.0)
        return self.strategy.aggregate_evaluate(server_round, valid) if valid else None
