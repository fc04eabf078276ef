"""What a site checks before it touches patient data: the run config, the round's instructions and
the privacy they imply, each against the site's own policy (docs/architecture.md §8).

Every check is written to fail closed: a value it did not foresee (NaN, inf, a wrong type, a key
it does not know) refuses the message with a fixed sentence (SiteRefusal), and a private round is
written to the site's ledger only once every check has passed.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any

from flwr.app import Context
from flwr.common.secure_aggregation.secaggplus_constants import Key, Stage

from client.ledger import LedgerEntry, ledger_of
from client.local import LocalPrivacy, vocabulary_of
from client.policy import SitePolicy
from client.replies import SiteRefusal
from shared_model.contract.messages import RoundInstructions
from shared_model.contract.run_config import FederatedRunConfig
from shared_model.model.config import ClaimTransformerConfig
from shared_model.settings import SettingError
from shared_model.tensors.vocabulary import Vocabulary
from shared_model.training.privacy import PrivacyBudgetExceeded, default_delta, plan_site_privacy


def run_settings(run_config: Mapping[str, Any]) -> FederatedRunConfig:
    """The run config as the site reads it: every key typed and in range, or refused."""
    try:
        return FederatedRunConfig.from_run_config(run_config)
    except SettingError as exc:
        raise SiteRefusal(f"the run config does not read: {exc.public}") from exc
    except ValueError as exc:  # a rule between settings (DP with FedProx, SecAgg+ with another strategy)
        raise SiteRefusal("the run config's settings contradict each other") from exc


def round_instructions(
    config: Mapping[str, Any], policy: SitePolicy
) -> tuple[RoundInstructions, ClaimTransformerConfig, Vocabulary]:
    """A train or evaluate message's config as the site reads it: the instructions, the model they
    describe (no larger than the site's policy allows) and the vocabulary, which must fit it."""
    try:
        instructions = RoundInstructions.from_config(config)
        model_config = ClaimTransformerConfig.from_json(instructions.model_config)
    except SettingError as exc:
        raise SiteRefusal(f"the round's instructions do not read: {exc.public}") from exc
    if not model_config.parameters <= policy.max_model_parameters:
        raise SiteRefusal(
            "the model the server describes is larger than this site's policy allows", policy_key="max_model_parameters"
        )
    try:
        vocabulary = vocabulary_of(instructions.vocabulary)
    except ValueError as exc:
        raise SiteRefusal("the round's vocabulary does not read") from exc
    if (vocabulary.size, vocabulary.n_groups) != (model_config.vocab_size, model_config.n_groups):
        raise SiteRefusal("the model config does not fit the round's vocabulary")
    return instructions, model_config, vocabulary


def site_privacy(
    context: Context,
    policy: SitePolicy,
    settings: FederatedRunConfig,
    n_train: int,
    server_round: int,
    local_epochs: int,
    consortium_run: str = "",
) -> LocalPrivacy | None:
    """This round's record-level DP (None without), after the policy's checks; the round is
    written to the site's ledger before it trains, and only when every check has passed."""
    target = policy.epsilon_for(settings.dp_epsilon)  # the site's own epsilon where it sets one
    if not target > 0:
        if policy.dp_required:
            raise SiteRefusal("this site trains only with record-level DP (dp-epsilon)", policy_key="require_dp")
        return None
    if policy.max_run_epsilon and not target <= policy.max_run_epsilon:
        raise SiteRefusal("dp-epsilon is above this site's ceiling", policy_key="max_run_epsilon")
    if local_epochs != settings.local_epochs:
        raise SiteRefusal("local epochs differ from the run's DP noise plan")
    # the site's own delta ceiling applies as its own epsilon does: a smaller delta only adds noise
    delta = min(settings.dp_delta or default_delta(n_train), policy.max_delta_for(n_train))
    if not 0 < delta <= policy.max_delta_for(n_train):
        raise SiteRefusal("the run's dp-delta does not read")
    try:
        plan = plan_site_privacy(
            n_train,
            settings.batch_size,
            local_epochs,
            settings.num_server_rounds,
            target,
            delta=delta,
            accountant=settings.dp_accountant,
        )
    except ValueError as exc:
        raise SiteRefusal("the run's DP settings give no noise this site can calibrate") from exc
    if not plan.noise_multiplier >= policy.min_noise_multiplier or not plan.noise_multiplier > 0:
        raise SiteRefusal("the run's DP noise is below this site's floor", policy_key="min_noise_multiplier")
    ledger = ledger_of(context)
    rounds_done = max(server_round - 1, ledger.rounds_in(context.run_id))
    try:
        epsilon = plan.check_round(rounds_done)  # the run's own budget
    except PrivacyBudgetExceeded as exc:
        raise SiteRefusal("the run's privacy budget at this site is spent", policy_key="dp_epsilon") from exc
    this_round = LedgerEntry(
        run=context.run_id,
        round=server_round,
        sampling_rate=plan.sampling_rate,
        noise_multiplier=plan.noise_multiplier,
        steps=plan.steps_per_round,
        delta=plan.delta,
        consortium_run=consortium_run,
    )
    if policy.lifetime_epsilon and not (
        ledger.epsilon(plan.delta, extra=this_round) <= policy.lifetime_epsilon * (1 + 1e-6)
    ):
        raise SiteRefusal("this site's lifetime privacy budget would be exceeded", policy_key="lifetime_epsilon")
    ledger.append(this_round)
    return LocalPrivacy(
        plan, settings.dp_clip_norm, settings.dp_embedding_share, rounds_done, epsilon, noise_seed=secrets.randbits(62)
    )


def check_secure_aggregation(configs: Mapping[str, Any], policy: SitePolicy) -> None:
    """A SecAgg+ stage as the site accepts it, before Flower's mod sees it (which takes any
    threshold, 1 included, and in the unmask stage hands over both shares of a node listed as
    active and dead at once, which would unmask that node's model): at least the policy's sites,
    a threshold no lower than its floor and a majority of the shares, disjoint node lists."""
    stage = configs.get(Key.STAGE)
    if stage == Stage.SETUP:
        numbers = [configs.get(key) for key in (Key.SAMPLE_NUMBER, Key.SHARE_NUMBER, Key.THRESHOLD)]
        if not all(isinstance(n, int) and not isinstance(n, bool) for n in numbers):
            raise SiteRefusal("the secure aggregation setup does not read")
        sites, shares, threshold = numbers
        if not (sites >= policy.min_secure_aggregation_sites and shares >= policy.min_secure_aggregation_sites):
            raise SiteRefusal(
                "secure aggregation with fewer sites than this site's policy requires",
                policy_key="min_secure_aggregation_sites",
            )
        if not (max(2, policy.min_secure_aggregation_threshold) <= threshold <= shares and 2 * threshold > shares):
            raise SiteRefusal(
                "the secure aggregation threshold is below this site's policy",
                policy_key="min_secure_aggregation_threshold",
            )
    elif stage == Stage.SHARE_KEYS:
        if not len([key for key in configs if key != Key.STAGE]) >= policy.min_secure_aggregation_sites:
            raise SiteRefusal(
                "secure aggregation with fewer sites than this site's policy requires",
                policy_key="min_secure_aggregation_sites",
            )
    elif stage == Stage.UNMASK:
        active, dead = configs.get(Key.ACTIVE_NODE_ID_LIST), configs.get(Key.DEAD_NODE_ID_LIST)
        if not isinstance(active, list) or not isinstance(dead, list):
            raise SiteRefusal("the secure aggregation unmask stage does not read")
        if set(active) & set(dead) or len(set(active)) != len(active) or len(set(dead)) != len(dead):
            raise SiteRefusal("the unmask stage lists a node twice (active and dead would unmask its model)")
