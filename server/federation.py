"""The federated pretraining run (docs/architecture.md §4): vocabulary round, training rounds with validated
aggregation, federated evaluation, an atomic checkpoint after every round, resume, and the run's
outcome (server.outcome): a run that trained fewer rounds than asked raises RunIncomplete."""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid

from server.carried_evaluation import take_carried_evaluations
from server.dashboard import RoundDashboard
from server.exchange import send_and_receive
from server.outcome import OUTCOME_FILE, RunIncomplete, run_outcome
from server.overview.predictor import load_predictor
from server.overview.round import run_advisory_round
from server.passport import PassportRecorder
from server.registry import REGISTRY_ENV, Registry, load_registry
from server.round_checkpoints import STATE_FILE, last_intact_round, latest_round, manifest_extra, round_dir
from server.rounds_table import evaluation_columns, local_seconds, read_rounds, round_row, write_rounds
from server.secure_aggregation import secure_train_round
from server.strategies import build_strategy, client_level_epsilon, export_state, restore_state
from server.validation import RoundReport, UpdateValidation
from server.vocabulary_round import vocabulary_round, wait_for_nodes
from shared_model.contract.checkpoint import (
    CheckpointError,
    assign_weights,
    save_checkpoint,
)
from shared_model.contract.passport import MANIFEST_KEY as PASSPORT_KEY
from shared_model.contract.passport import Passport
from shared_model.contract.run_config import FederatedRunConfig
from shared_model.data.paths import atomic_write_bytes
from shared_model.model.config import ClaimTransformerConfig
from shared_model.model.transformer import PretrainingModel
from shared_model.tensors.vocabulary import Vocabulary
from shared_model.training.fit import seed_everything

log = logging.getLogger(__name__)


@dataclass
class RunState:
    """What a run carries from round to round, and a resumed run reads back from its last checkpoint."""

    run_id: str
    vocabulary: Vocabulary
    config: ClaimTransformerConfig
    model: PretrainingModel
    passport: PassportRecorder
    done: int  # the last round completed
    rows: list[dict[str, Any]]  # rounds.csv
    trained: list[int]  # the rounds whose aggregate changed the model


def run_federation(grid: Grid, settings: FederatedRunConfig, *, signer=None) -> dict[str, Any]:
    run_dir = Path(settings.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / OUTCOME_FILE).unlink(missing_ok=True)  # a resumed run's outcome is its own
    if settings.advise_only:
        return _advisory_run(grid, settings, run_dir)
    strategy = build_strategy(settings)
    strategy.registry = registry_of(settings)
    state = _resumed(run_dir, settings, strategy) if settings.resume else None
    state = state or _started(grid, run_dir, settings, strategy)
    write_rounds(run_dir, state.rows)
    arrays = ArrayRecord([np.asarray(w) for w in state.model.get_weights()])
    shared = {
        "vocabulary": state.vocabulary.to_json(),
        "model-config": state.config.to_json(),
        "local-epochs": settings.local_epochs,
        "run-id": state.run_id,
    }
    dashboard = RoundDashboard(run_dir)
    stopped, last = "", state.done  # why the run stopped early ("": it did not); the last round it completed
    carry = settings.evaluate_with_training and not settings.secure_aggregation
    unevaluated = state.done if carry and state.done in state.trained else None  # the sites hold it, unevaluated
    for server_round in range(state.done + 1, settings.num_server_rounds + 1):
        try:  # Flower's own sampling would wait for missing sites without a limit
            wait_for_nodes(grid, settings.min_available_clients, settings.round_timeout)
        except TimeoutError as exc:
            stopped = f"round {server_round} did not start: {exc}"
            log.error("%s: the run stops here", stopped)
            break
        started = time.perf_counter()
        log.info("round %d/%d: training", server_round, settings.num_server_rounds)
        trained = _train_exchange(grid, settings, strategy, state, server_round, arrays, shared, unevaluated)
        carried_seconds: dict[int, float] = {}  # each node's seconds evaluating the previous round's model
        if trained.evaluated is not None:  # the previous round's evaluation rode on this training
            carried_seconds = _evaluated(
                strategy, state.passport, unevaluated, trained.evaluated, state.rows, dashboard
            )
            write_rounds(run_dir, state.rows)
        if trained.aggregated is not None:
            arrays = trained.aggregated
            state.trained.append(server_round)
        else:
            log.error("round %d failed: no site's update was used (the model is the previous round's)", server_round)
        unevaluated = server_round if carry and trained.aggregated is not None else None
        rides_on_next = unevaluated is not None and server_round < settings.num_server_rounds
        eval_replies, eval_seconds = (
            _evaluate_exchange(grid, settings, strategy, server_round, arrays, shared)
            if trained.aggregated is not None and not rides_on_next
            else ([], 0.0)
        )
        if trained.aggregated is None:  # the model did not change: evaluating it again would only query the sites
            log.warning("round %d: no evaluation of an unchanged model", server_round)
        elif rides_on_next:
            log.info("round %d: its evaluation rides on the next round's training", server_round)
        eval_metrics, _ = _take_evaluation(strategy, state.passport, server_round, eval_replies)
        # after the evaluation: under SecAgg+ in a resumed run, its replies are the first to say which node is which
        state.passport.training_round(server_round, strategy.reports[server_round])
        state.passport.replies_dropped(server_round, "evaluation", strategy.reports[server_round].evaluations_dropped)
        if eval_replies:
            unevaluated = None
        state.model.set_weights(arrays.to_numpy_ndarrays())
        save_checkpoint(
            round_dir(run_dir, server_round),
            state.model,
            state.config,
            state.vocabulary,
            signer=signer,
            extra=manifest_extra(settings, server_round, state.run_id, state.passport, state.trained),
            extra_files={STATE_FILE: export_state(strategy)},
        )
        report = strategy.reports.get(server_round) or RoundReport()
        local = local_seconds(report, carried_seconds, evaluated_alone=bool(eval_replies))
        row = {
            **round_row(settings, server_round, report, trained.metrics, eval_metrics),
            "local_seconds": local,
            "exchange_seconds": trained.exchange_seconds + eval_seconds,
            "round_seconds": time.perf_counter() - started,
        }
        state.rows.append(row)
        write_rounds(run_dir, state.rows)
        dashboard.write(server_round, row, report)
        log.info("round %d: %s", server_round, {k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()})
        last = server_round
    dashboard.close()
    return _finish(run_dir, settings, state, last, stopped, signer)


def _advisory_run(grid: Grid, settings: FederatedRunConfig, run_dir: Path) -> dict[str, Any]:
    """A run of the advisory round only: the consortium overview, nothing trained."""
    overview = run_advisory_round(
        grid,
        k=settings.k_anonymity,
        minimum_sites=settings.min_available_clients,
        run_dir=run_dir,
        predictor=load_predictor(Path(settings.advisor_predictor) if settings.advisor_predictor else None),
    )
    summary = f"consortium overview of {len(overview.table)} site(s): {run_dir / 'overview.md'}"
    _write_outcome(run_dir, {"complete": True, "summary": summary})
    return {"overview": overview.table["site"].tolist()}


def _resumed(run_dir: Path, settings: FederatedRunConfig, strategy: UpdateValidation) -> RunState | None:
    """The run as its last intact round checkpoint left it (None: there is none), the strategy's
    state restored with it."""
    done, checkpoint = last_intact_round(run_dir)
    if checkpoint is None:
        return None
    run_id = str(checkpoint.manifest.get("run_id", uuid.uuid4().hex))
    previous = checkpoint.manifest.get(PASSPORT_KEY)
    passport = PassportRecorder(settings, run_id, previous and Passport.from_dict(previous), strategy.registry)
    model = PretrainingModel(checkpoint.config)
    assign_weights(model, checkpoint)
    state_file = round_dir(run_dir, done) / STATE_FILE
    if state_file.exists():
        restore_state(strategy, state_file.read_bytes())
    log.info("resuming after round %d of %d", done, settings.num_server_rounds)
    return RunState(
        run_id,
        checkpoint.vocabulary,
        checkpoint.config,
        model,
        passport,
        done,
        rows=[r for r in read_rounds(run_dir) if int(r["round"]) <= done],
        trained=[int(r) for r in checkpoint.manifest.get("rounds_trained", [])],
    )


def _started(grid: Grid, run_dir: Path, settings: FederatedRunConfig, strategy: UpdateValidation) -> RunState:
    """A new run: the vocabulary round, then the model it sizes, seeded by the run config."""
    if (run_dir / "checkpoints").exists() and latest_round(run_dir):
        raise CheckpointError(f"{run_dir} already holds round checkpoints: use --resume or a new run directory")
    asked = vocabulary_round(
        grid,
        k=settings.k_anonymity,
        minimum_sites=settings.min_available_clients,
        settings=settings.vocabulary(),
        max_weight_ratio=settings.max_weight_ratio,
        timeout=settings.round_timeout,
        registry=strategy.registry,
    )
    strategy.example_caps = asked.weight_caps
    vocabulary = asked.vocabulary
    config = ClaimTransformerConfig(
        vocab_size=vocabulary.size, n_groups=vocabulary.n_groups, **settings.model_options()
    )
    seed_everything(settings.seed)
    run_id = uuid.uuid4().hex
    passport = PassportRecorder(settings, run_id, registry=strategy.registry)
    passport.read_replies(asked.replies)
    passport.replies_dropped(0, "vocabulary", asked.dropped)
    return RunState(run_id, vocabulary, config, PretrainingModel(config), passport, 0, rows=[], trained=[])


@dataclass(frozen=True)
class TrainExchange:
    """A round's training exchange: the aggregate (None: no update was used), the sites' training
    metrics, the evaluations of the previous round's model its replies carried (None: none was
    asked), and the seconds spent exchanging."""

    aggregated: ArrayRecord | None
    metrics: MetricRecord | None
    evaluated: list[Message] | None
    exchange_seconds: float


def _train_exchange(
    grid: Grid,
    settings: FederatedRunConfig,
    strategy: UpdateValidation,
    state: RunState,
    server_round: int,
    arrays: ArrayRecord,
    shared: dict[str, Any],
    unevaluated: int | None,
) -> TrainExchange:
    """Send the round's training (under SecAgg+: its exchanges and the server's unmasking,
    together), read the replies' statements into the passport and aggregate them."""
    started = time.perf_counter()
    if settings.secure_aggregation:
        aggregated = secure_train_round(
            grid, server_round, arrays, shared, settings.num_server_rounds, settings.min_available_clients
        )
        nodes = sorted(grid.get_node_ids())  # all or none: SecAgg+ yields the sum or halts
        strategy.reports[server_round] = (
            RoundReport(received=len(nodes), accepted=nodes)
            if aggregated is not None
            else RoundReport(received=len(nodes), failures=[(n, "secure aggregation halted") for n in nodes])
        )
        return TrainExchange(aggregated, None, None, time.perf_counter() - started)
    asked = ConfigRecord({**shared, "evaluate-received": unevaluated is not None})
    questions = list(strategy.configure_train(server_round, arrays, asked, grid))
    sent = time.perf_counter()
    replies = send_and_receive(grid, questions, timeout=settings.round_timeout)
    exchanged = time.perf_counter() - sent
    carried = take_carried_evaluations(replies, questions) if unevaluated is not None else None
    state.passport.read_replies(replies)
    aggregated, metrics = strategy.aggregate_train(server_round, replies)
    return TrainExchange(aggregated, metrics, carried, exchanged)


def _evaluate_exchange(
    grid: Grid,
    settings: FederatedRunConfig,
    strategy: UpdateValidation,
    server_round: int,
    arrays: ArrayRecord,
    shared: dict[str, Any],
) -> tuple[list[Message], float]:
    """The round's own evaluation message, where enough sites are connected (else Flower would
    wait for them, unbounded): the replies and the seconds spent exchanging."""
    if len(list(grid.get_node_ids())) < settings.min_available_clients:
        log.warning("round %d: fewer sites connected than min-available-clients: no evaluation", server_round)
        return [], 0.0
    questions = list(strategy.configure_evaluate(server_round, arrays, ConfigRecord(dict(shared)), grid))
    sent = time.perf_counter()
    replies = send_and_receive(grid, questions, timeout=settings.round_timeout)
    return replies, time.perf_counter() - sent


def _finish(
    run_dir: Path, settings: FederatedRunConfig, state: RunState, last: int, stopped: str, signer
) -> dict[str, Any]:
    """The final checkpoint (the last round's model and passport) and the run's outcome;
    RunIncomplete when fewer rounds trained than asked."""
    final = state.passport.document(last, client_level_epsilon(settings, last))
    save_checkpoint(
        run_dir / "checkpoint",
        state.model,
        state.config,
        state.vocabulary,
        signer=signer,
        extra=manifest_extra(settings, last, state.run_id, state.passport, state.trained),
    )
    keras.backend.clear_session()
    outcome = run_outcome(
        run_dir, settings.num_server_rounds, state.trained, final, signed=signer is not None, stopped=stopped
    )
    _write_outcome(run_dir, outcome.to_json())
    for line in outcome.lines():
        (log.info if outcome.complete else log.error)("%s", line)
    if not outcome.complete:
        raise RunIncomplete(outcome.headline())
    return {"rounds": settings.num_server_rounds, "run_dir": str(run_dir)}


def _take_evaluation(
    strategy: UpdateValidation, passport: PassportRecorder, server_round: int, replies: list[Message]
) -> tuple[MetricRecord | None, list[Message]]:
    """Round `server_round`'s evaluation replies aggregated (those that do not read are dropped,
    with why, in its report) and the statements of the kept ones taken into the passport; returns
    the aggregate and the kept replies."""
    metrics = strategy.aggregate_evaluate(server_round, replies)
    dropped = {node for node, _ in strategy.reports[server_round].evaluations_dropped}
    kept = [reply for reply in replies if reply.metadata.src_node_id not in dropped]
    passport.read_replies(kept)
    return metrics, kept


def _evaluated(
    strategy: UpdateValidation,
    passport: PassportRecorder,
    server_round: int,
    evaluations: list[Message],
    rows: list[dict[str, Any]],
    dashboard: RoundDashboard,
) -> dict[int, float]:
    """Round `server_round`'s evaluation, carried by the next round's training
    (server.carried_evaluation): checked and aggregated as an evaluate message's replies are,
    taken into the passport, and filled into that round's row and dashboard. Returns each node's
    seconds of evaluation, local work of the round that carried it."""
    metrics, kept = _take_evaluation(strategy, passport, server_round, evaluations)
    report = strategy.reports[server_round]
    passport.replies_dropped(server_round, "evaluation", report.evaluations_dropped)
    columns = evaluation_columns(metrics, report)
    for row in rows:
        if int(row["round"]) == server_round:  # its compute so far was its training (a resumed run's from the csv)
            row.update(columns, client_compute_seconds=float(row["client_compute_seconds"]) + report.total_eval_seconds)
    dashboard.write(server_round, columns, None)
    return {reply.metadata.src_node_id: float(reply.content["metrics"]["eval-seconds"]) for reply in kept}


def _write_outcome(run_dir: Path, outcome: dict[str, Any]) -> None:
    atomic_write_bytes(run_dir / OUTCOME_FILE, (json.dumps(outcome, indent=2) + "\n").encode())


def registry_of(settings: FederatedRunConfig) -> Registry | None:
    """The run config's `site-registry`, else the one `claimpt server start` keeps (None in
    simulations: a site is what it declares)."""
    path = settings.site_registry or os.environ.get(REGISTRY_ENV, "")
    if not path or (not settings.site_registry and not Path(path).exists()):
        return None
    return load_registry(Path(path))
