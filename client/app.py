"""The Flower ClientApp (Message API): one per site, inside the site's network (docs/architecture.md §4).

Handles `query.vocabulary` (k-anonymised code counts), `query.summary` (the advisory round's
k-anonymised site summary: code and age-band counts, task counts and the AUROC the site reaches
alone, as its policy allows), `train` (local epochs from the global
weights) and `evaluate` (held-out loss and NVP Recall@k). Only model arrays, scalar metrics,
counts of at least k patients and the site's privacy statement (client.statement) leave this
module.

Every message is held against the site's own policy (client.policy, from the node config that
only the site sets) before patient data is touched; what the server asks for can raise the
protection, never lower it. Errors leave the site as a class name and a reference only
(client.replies).
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import flwr.compat.common.recorddict_compat as compat
import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.client.mod import secaggplus_mod
from flwr.client.mod.secure_aggregation.secaggplus_mod import RECORD_KEY_CONFIGS as SECAGG_CONFIGS
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import Mod
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays

from client.activity import Activity, activity_of
from client.admission import check_secure_aggregation, round_instructions, run_settings, site_privacy
from client.local import (
    evaluate_locally,
    k_anonymous_code_counts,
    load_site,
    own_auroc,
    site_samples,
    train_locally,
)
from client.node_config import DATA_PATH_KEY, POLICY_KEY, SITE_ID_KEY
from client.policy import SitePolicy, load_policy
from client.replies import SiteRefusal, errors_stay_at_the_site, write_site_error
from client.statement import privacy_statement
from shared_model.contract.messages import ARRAYS, EVALUATION, STATEMENT
from shared_model.contract.passport import site_key
from shared_model.contract.run_config import SECAGG_CLIPPING_RANGE, FederatedRunConfig
from shared_model.contract.site_summary import OwnAurocRecipe, site_summary
from shared_model.contract.wire import arrays_packed_on_the_wire

log = logging.getLogger(__name__)
OPTIMIZER_STATE = "local-optimizer-state"
LEGACY_FIT_PARAMETERS = "fitins.parameters"  # how Flower's legacy SecAgg+ workflow sends the model


def own_auroc_asked(config: ConfigRecord, policy: SitePolicy, path: str, k: int) -> dict[str, float | None]:
    """The own AUROC a summary query asks for (`task` and the predictor's `own-auroc` recipe, as
    JSON), measured here, if the site's policy shares it and it may be released at `k`; a recipe
    that does not read or asks beyond its bounds is refused."""
    if "own-auroc" not in config or not policy.share_own_auroc:
        return {}
    task = config.get("task")
    try:
        recipe = OwnAurocRecipe.from_dict(json.loads(str(config["own-auroc"])))
    except (ValueError, TypeError) as exc:
        raise SiteRefusal("the own-AUROC recipe is not one the site follows") from exc
    if not isinstance(task, str):
        raise SiteRefusal("an own-AUROC query names its task")
    return {task: own_auroc(path, task, recipe, k)}


def site_of(context: Context, settings: FederatedRunConfig) -> tuple[str, str]:
    """(data path, site id): node config `data-path`/`site-id` in deployment; in simulation the
    `data-paths` run-config entry selected by `partition-id`."""
    node = context.node_config
    if DATA_PATH_KEY in node:
        path = str(node[DATA_PATH_KEY])
        return path, str(node.get(SITE_ID_KEY, Path(path).name))
    paths = settings.site_paths()
    partition = int(node["partition-id"])
    if partition >= len(paths):
        raise ValueError(f"partition-id {partition} has no site in data-paths ({len(paths)} given)")
    return paths[partition], str(node.get(SITE_ID_KEY, Path(paths[partition]).name))


def policy_of(context: Context) -> SitePolicy:
    """The site's policy file named in the node config; the default policy without one."""
    path = context.node_config.get(POLICY_KEY)
    return load_policy(str(path)) if path else SitePolicy()


def secure_aggregation_mod(msg: Message, context: Context, call_next) -> Message:
    """Flower's SecAgg+ client mod, for the messages of a SecAgg+ round only (it would reject the
    plain train messages of every other round)."""
    if SECAGG_CONFIGS in msg.content.config_records:
        check_secure_aggregation(msg.content.config_records[SECAGG_CONFIGS], policy_of(context))
        return secaggplus_mod(msg, context, call_next)
    return call_next(msg, context)


@dataclass(frozen=True)
class Site:
    """What a message handler knows of its node: the run's settings (with the app's overrides),
    the site's policy, its data path and its id."""

    settings: FederatedRunConfig
    policy: SitePolicy
    path: str
    name: str

    @classmethod
    def of(cls, context: Context, overrides: dict[str, Any] | None) -> Site:
        settings = run_settings({**dict(context.run_config), **(overrides or {})})
        return cls(settings, policy_of(context), *site_of(context, settings))

    @property
    def key(self) -> int:
        return site_key(self.name)

    @property
    def k(self) -> int:
        """The k this site applies to its run: the run's, raised to the site's floor."""
        return self.policy.k_for(self.settings.k_anonymity)

    def k_asked(self, msg: Message) -> int:
        """The k a query asks for, raised to the site's own floor (never lowered)."""
        return self.policy.k_for(msg.content["config"].get("k-anonymity", self.settings.k_anonymity))


def released(msg: Message, context: Context, site: Site, name: str, record: dict, k: int) -> Message:
    """The reply to a query: `record` (with the site key) under `name`, and the site's statement."""
    record = ConfigRecord({**record, "site-key": site.key})
    statement = privacy_statement(context, site.policy, k, site.key)
    return Message(RecordDict({name: record, STATEMENT: statement}), reply_to=msg)


def vocabulary_reply(msg: Message, context: Context, site: Site) -> Message:
    """The vocabulary round's question: the codes seen in at least k of the site's patients."""
    k = site.k_asked(msg)
    counts = k_anonymous_code_counts(load_site(site.path), k)
    log.info("%s: reporting %d codes seen in >= %d patients", site.name, len(counts.codes), k)
    record = {"codes": counts.codes, "counts": counts.counts, "parents": counts.parents, "patients": counts.patients}
    return released(msg, context, site, "vocabulary", record, k)


def summary_reply(msg: Message, context: Context, site: Site) -> Message:
    """The advisory round's question: the site's summary under its own k (never below it), with
    the AUROC it reaches alone on the predictor's `task` when the server sends the predictor's
    recipe (`own-auroc`) and the site's policy shares it."""
    k = site.k_asked(msg)
    own = own_auroc_asked(msg.content["config"], site.policy, site.path, k)
    summary = site_summary(load_site(site.path), k, with_tasks=site.policy.share_task_counts, own_auroc=own)
    log.info(
        "%s: reporting its summary (%d codes, age bands, %d task(s), %d own AUROC(s)) at k=%d",
        site.name,
        len(summary.code_counts),
        len(summary.task_counts),
        len(summary.own_auroc),
        k,
    )
    return released(msg, context, site, "summary", {"summary": summary.to_json()}, k)


def train_reply(msg: Message, context: Context, site: Site) -> Message:
    """A training round: plain, or inside SecAgg+ (Flower's legacy message form, which only
    secaggplus_mod hands on); an evaluation the message carries runs first, and its refusal
    refuses the evaluation only."""
    if LEGACY_FIT_PARAMETERS in msg.content.array_records:
        if SECAGG_CONFIGS not in msg.content.config_records:  # only secaggplus_mod hands these on
            raise SiteRefusal("legacy training messages are accepted only inside secure aggregation")
        fit = compat.recorddict_to_fitins(msg.content, keep_input=True)
        weights, metrics = train_round(context, site, parameters_to_ndarrays(fit.parameters), dict(fit.config), True)
        largest = max(float(np.abs(w).max()) for w in weights)
        if largest > SECAGG_CLIPPING_RANGE:  # SecAgg+ would clip it silently: fail instead
            raise ValueError(
                f"a weight of magnitude {largest:.3g} is outside SecAgg+'s range +-{SECAGG_CLIPPING_RANGE}"
            )
        reply = FitRes(Status(Code.OK, ""), ndarrays_to_parameters(weights), 1, dict(metrics))  # equal weights
        return Message(compat.fitres_to_recorddict(reply, keep_input=True), reply_to=msg)
    if site.policy.require_secure_aggregation:
        raise SiteRefusal(
            "this site trains only under secure aggregation (SecAgg+)", policy_key="require_secure_aggregation"
        )
    received, config = msg.content["arrays"].to_numpy_ndarrays(), msg.content["config"]
    carried = {}
    instructions, _, _ = round_instructions(config, site.policy)
    if instructions.evaluate_received:  # before training, so that the limits count as for an evaluate message
        try:
            carried[EVALUATION], carried[STATEMENT] = evaluation(context, site, received, config)
        except SiteRefusal as refusal:  # refuses the evaluation only: the training goes on
            asked = f"the evaluation carried by round {instructions.server_round}'s training"
            write_site_error(context, secrets.token_hex(6), refusal, asked)
    weights, metrics = train_round(context, site, received, config)
    return Message(RecordDict({ARRAYS: ArrayRecord(weights), "metrics": metrics, **carried}), reply_to=msg)


def train_round(
    context: Context, site: Site, global_weights: list[np.ndarray], config, secure: bool = False
) -> tuple[list[np.ndarray], MetricRecord]:
    """Local epochs from the global weights, under the DP the site's policy sets (its ledger
    written first); the new weights and the round's metrics."""
    settings, policy = site.settings, site.policy
    instructions, model_config, _ = round_instructions(config, policy)
    if instructions.proximal_mu != 0 and policy.epsilon_for(settings.dp_epsilon) != 0:
        raise SiteRefusal(
            "this site trains with record-level DP, which has no FedProx proximal term", policy_key="require_dp"
        )
    samples = site_samples(site.path, instructions.vocabulary, site.k)
    server_round, train_patients = instructions.server_round, len(samples["train"]["subject_id"])
    privacy = site_privacy(
        context, policy, settings, train_patients, server_round, instructions.local_epochs, instructions.run_id
    )
    keep = settings.client_optimizer == "keep"
    stored = context.state.array_records.get(OPTIMIZER_STATE) if keep else None
    result = train_locally(
        global_weights,
        model_config,
        samples,
        epochs=instructions.local_epochs,
        batch_size=settings.batch_size,
        learning_rate=settings.learning_rate,
        seed=settings.seed,
        server_round=server_round,
        key=site.key,
        proximal_mu=instructions.proximal_mu,
        optimizer_state=stored.to_numpy_ndarrays() if stored is not None else None,
        privacy=privacy,
        precision=settings.precision,
    )
    privacy_metrics = {}
    if privacy is not None:
        privacy_metrics = {
            "dp-epsilon": privacy.epsilon,
            "dp-delta": privacy.plan.delta,
            "dp-noise-multiplier": privacy.plan.noise_multiplier,
        }
    if keep and result.optimizer_state is not None:
        context.state[OPTIMIZER_STATE] = ArrayRecord(result.optimizer_state)  # node-local, never sent
    activity_of(context).record(Activity(context.run_id, server_round, "trained", instructions.run_id, secure))
    return result.weights, MetricRecord(
        {"num-examples": result.num_examples, "site-key": site.key, **result.metrics, **privacy_metrics}
    )


def evaluation(context: Context, site: Site, weights: list[np.ndarray], config) -> tuple[MetricRecord, ConfigRecord]:
    """The model's metrics on the site's held-out patients and the site's statement, within
    the policy's evaluation limits (counted before it runs); SiteRefusal when it may not."""
    policy = site.policy
    instructions, model_config, _ = round_instructions(config, policy)
    activity, run = activity_of(context), context.run_id
    if not activity.count("evaluated", run) < policy.evaluations_allowed(activity.count("trained", run)):
        raise SiteRefusal("this site's evaluation limit for the run is reached", policy_key="max_evaluations_per_run")
    if not activity.count("evaluated") < policy.lifetime_evaluations:
        raise SiteRefusal("this site's lifetime evaluation limit is reached", policy_key="lifetime_evaluations")
    samples = site_samples(site.path, instructions.vocabulary, site.k)
    if len(samples["held_out"]["subject_id"]) < site.k:
        raise SiteRefusal("fewer held-out patients than this site's k: no evaluation", policy_key="k_anonymity")
    activity.record(Activity(run, instructions.server_round, "evaluated", instructions.run_id))  # before it runs
    result = evaluate_locally(
        weights, model_config, samples, learning_rate=site.settings.learning_rate, precision=site.settings.precision
    )
    metrics = MetricRecord({"num-examples": result.num_examples, "site-key": site.key, **result.metrics})
    return metrics, privacy_statement(context, policy, site.k, site.key)


def evaluate_reply(msg: Message, context: Context, site: Site) -> Message:
    metrics, statement = evaluation(context, site, msg.content["arrays"].to_numpy_ndarrays(), msg.content["config"])
    return Message(RecordDict({"metrics": metrics, STATEMENT: statement}), reply_to=msg)


def make_client_app(overrides: dict[str, Any] | None = None, mods: Sequence[Mod] = ()) -> ClientApp:
    """A ClientApp whose run config is Flower's, updated by `overrides`; `mods` are extra Flower
    mods innermost (simulations add their adversary here; the deployed app has none). Each
    message's handler gets its node's `Site`, read afresh (the policy file included)."""
    app = ClientApp(mods=[errors_stay_at_the_site, arrays_packed_on_the_wire, secure_aggregation_mod, *mods])

    def handled_by(handler: Callable[[Message, Context, Site], Message]) -> Callable[[Message, Context], Message]:
        def handle(msg: Message, context: Context) -> Message:
            return handler(msg, context, Site.of(context, overrides))

        return handle

    app.query("vocabulary")(handled_by(vocabulary_reply))
    app.query("summary")(handled_by(summary_reply))
    app.train()(handled_by(train_reply))
    app.evaluate()(handled_by(evaluate_reply))
    return app


app = make_client_app()
