"""The Flower ClientApp (Message API): one per site, inside the site's network (DESIGN 4).

Handles `query.vocabulary` (k-anonymised code counts), `train` (local epochs from the global
weights) and `evaluate` (held-out loss and NVP Recall@k). Only model arrays, scalar metrics and
counts of codes seen in at least k patients leave this module.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import flwr.compat.common.recorddict_compat as compat
import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.client.mod import secaggplus_mod
from flwr.client.mod.secure_aggregation.secaggplus_mod import RECORD_KEY_CONFIGS as SECAGG_CONFIGS
from flwr.clientapp import ClientApp
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays

from client.adversary import corrupt_update, flip_labels, parse_adversaries
from client.local import LocalPrivacy, evaluate_locally, k_anonymous_code_counts, load_site, site_key, site_samples, train_locally
from shared_model.config import ClaimTransformerConfig
from shared_model.privacy import PrivacyBudgetExceeded, plan_site_privacy
from shared_model.run_config import SECAGG_CLIPPING_RANGE, FederatedRunConfig

log = logging.getLogger(__name__)
OPTIMIZER_STATE = "local-optimizer-state"
DP_LEDGER = "dp-ledger"
LEGACY_FIT_PARAMETERS = "fitins.parameters"  # how Flower's legacy SecAgg+ workflow sends the model


def site_of(context: Context, settings: FederatedRunConfig) -> tuple[str, str]:
    """(data path, site id): node config `data-path`/`site-id` in deployment; in simulation the
    `data-paths` run-config entry selected by `partition-id`."""
    node = context.node_config
    if "data-path" in node:
        path = str(node["data-path"])
        return path, str(node.get("site-id", Path(path).name))
    paths = settings.site_paths()
    partition = int(node["partition-id"])
    if partition >= len(paths):
        raise ValueError(f"partition-id {partition} has no site in data-paths ({len(paths)} given)")
    return paths[partition], Path(paths[partition]).name


def site_privacy(context: Context, settings: FederatedRunConfig, train: dict[str, np.ndarray], server_round: int,
                 local_epochs: int) -> LocalPrivacy | None:
    """This round's record-level DP (None without), refused if it would overspend the budget.

    The budget is the site's own when its node config sets `max-epsilon` (a site that sets one
    refuses to train without DP); otherwise the run's `dp-epsilon`. Rounds already spent are the
    larger of the server's round number and the site's own ledger, so a server that replays round
    numbers cannot make a site overspend."""
    site_budget = float(context.node_config.get("max-epsilon", 0.0))
    if settings.dp_epsilon <= 0:
        if site_budget > 0:
            raise PrivacyBudgetExceeded(f"this site trains only with DP-SGD (max-epsilon {site_budget:g}); "
                                        "the run did not set dp-epsilon")
        return None
    ledger = context.state.config_records.get(DP_LEDGER)
    rounds_done = max(server_round - 1, int(ledger["rounds"]) if ledger is not None else 0)
    plan = plan_site_privacy(len(train["subject_id"]), settings.batch_size, local_epochs,
                             settings.num_server_rounds, settings.dp_epsilon, delta=settings.dp_delta,
                             budget=site_budget or settings.dp_epsilon, accountant=settings.dp_accountant)
    return LocalPrivacy(plan, settings.dp_clip_norm, settings.dp_embedding_share, rounds_done,
                        plan.check_round(rounds_done))


def secure_aggregation_mod(msg: Message, context: Context, call_next) -> Message:
    """Flower's SecAgg+ client mod, for the messages of a SecAgg+ round only (it would reject the
    plain train messages of every other round)."""
    if SECAGG_CONFIGS in msg.content.config_records:
        return secaggplus_mod(msg, context, call_next)
    return call_next(msg, context)


def make_client_app(overrides: dict[str, Any] | None = None) -> ClientApp:
    """A ClientApp whose run config is Flower's, updated by `overrides` (used by simulations)."""
    app = ClientApp(mods=[secure_aggregation_mod])

    def settings_of(context: Context) -> FederatedRunConfig:
        return FederatedRunConfig.from_run_config({**dict(context.run_config), **(overrides or {})})

    @app.query("vocabulary")
    def vocabulary(msg: Message, context: Context) -> Message:
        settings = settings_of(context)
        path, site = site_of(context, settings)
        k = int(msg.content["config"].get("k-anonymity", settings.k_anonymity))
        counts = k_anonymous_code_counts(load_site(path), k)
        log.info("%s: reporting %d codes seen in >= %d patients", site, len(counts.codes), k)
        record = ConfigRecord({"codes": counts.codes, "counts": counts.counts, "parents": counts.parents,
                               "site-key": site_key(site)})
        return Message(RecordDict({"vocabulary": record}), reply_to=msg)

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        if LEGACY_FIT_PARAMETERS in msg.content.array_records:  # a SecAgg+ round (server.secure_aggregation)
            fit = compat.recorddict_to_fitins(msg.content, keep_input=True)
            weights, metrics = train_round(context, parameters_to_ndarrays(fit.parameters), dict(fit.config))
            largest = max(float(np.abs(w).max()) for w in weights)
            if largest > SECAGG_CLIPPING_RANGE:  # SecAgg+ would clip it silently: fail instead
                raise ValueError(f"a weight of magnitude {largest:.3g} is outside SecAgg+'s range +-{SECAGG_CLIPPING_RANGE}")
            reply = FitRes(Status(Code.OK, ""), ndarrays_to_parameters(weights), 1, dict(metrics))  # equal weights
            return Message(compat.fitres_to_recorddict(reply, keep_input=True), reply_to=msg)
        weights, metrics = train_round(context, msg.content["arrays"].to_numpy_ndarrays(), msg.content["config"])
        return Message(RecordDict({"arrays": ArrayRecord(weights), "metrics": metrics}), reply_to=msg)

    def train_round(context: Context, global_weights: list[np.ndarray], config) -> tuple[list[np.ndarray], MetricRecord]:
        settings = settings_of(context)
        path, site = site_of(context, settings)
        server_round = int(config["server-round"])
        model_config = ClaimTransformerConfig.from_json(str(config["model-config"]))
        samples = site_samples(path, str(config["vocabulary"]))
        adversary = next((a for a in parse_adversaries(settings.adversary) if a.active(site, server_round)), None)
        rng = np.random.default_rng([settings.seed, server_round, site_key(site)])
        if adversary is not None and adversary.kind == "raise":
            raise RuntimeError(f"simulated failure of {site} in round {server_round}")
        if adversary is not None and adversary.kind == "labelflip":
            samples = {**samples, "train": flip_labels(samples["train"], rng)}
        local_epochs = int(config.get("local-epochs", settings.local_epochs))
        privacy = site_privacy(context, settings, samples["train"], server_round, local_epochs)
        keep = settings.client_optimizer == "keep"
        stored = context.state.array_records.get(OPTIMIZER_STATE) if keep else None
        result = train_locally(
            global_weights, model_config, samples, epochs=local_epochs,
            batch_size=settings.batch_size, learning_rate=settings.learning_rate, seed=settings.seed,
            server_round=server_round, key=site_key(site), proximal_mu=float(config.get("proximal-mu", 0.0)),
            optimizer_state=stored.to_numpy_ndarrays() if stored is not None else None, privacy=privacy)
        privacy_metrics = {}
        if privacy is not None:
            context.state[DP_LEDGER] = ConfigRecord({"rounds": privacy.rounds_done + 1})  # node-local
            privacy_metrics = {"dp-epsilon": privacy.epsilon, "dp-delta": privacy.plan.delta,
                               "dp-noise-multiplier": privacy.plan.noise_multiplier}
        if keep and result.optimizer_state is not None:
            context.state[OPTIMIZER_STATE] = ArrayRecord(result.optimizer_state)  # node-local, never sent
        weights = result.weights
        if adversary is not None:
            log.warning("%s misbehaves in round %d: %s", site, server_round, adversary.kind)
            weights = corrupt_update(adversary.kind, adversary.value, global_weights, weights, rng)
        return weights, MetricRecord({"num-examples": result.num_examples, "site-key": site_key(site), **result.metrics,
                                      **privacy_metrics})

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        settings = settings_of(context)
        path, site = site_of(context, settings)
        config = msg.content["config"]
        model_config = ClaimTransformerConfig.from_json(str(config["model-config"]))
        samples = site_samples(path, str(config["vocabulary"]))
        result = evaluate_locally(msg.content["arrays"].to_numpy_ndarrays(), model_config, samples,
                                  learning_rate=settings.learning_rate)
        metrics = MetricRecord({"num-examples": result.num_examples, "site-key": site_key(site), **result.metrics})
        return Message(RecordDict({"metrics": metrics}), reply_to=msg)

    return app


app = make_client_app()
