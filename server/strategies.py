"""Strategy choice from the run config: Flower's own strategies, wrapped in update validation."""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
from flwr.serverapp.strategy import (
    DifferentialPrivacyServerSideAdaptiveClipping,
    DifferentialPrivacyServerSideFixedClipping,
    FedAdam,
    FedAvg,
    FedAvgM,
    FedMedian,
    FedProx,
    FedTrimmedAvg,
    Krum,
    MultiKrum,
    Strategy,
)

from server.validation import UpdateValidation
from shared_model.contract.run_config import ROBUST_MINIMUM_SITES, FederatedRunConfig
from shared_model.training.privacy import epsilon_spent

STATE_ATTRIBUTES = ("m_t", "v_t", "momentum_vector")
CAPS = "example-caps"
ASSUMED_ATTACKERS = 1  # Krum's f (ROBUST_MINIMUM_SITES: n >= 2f + 3)


class FedTrimmedAvgAtLeastOne(FedTrimmedAvg):
    """Flower's trimmed mean, trimming at least one update per side: with beta 0.2 and 3 sites
    Flower trims int(0.6) = 0 updates, i.e. averages like FedAvg, attacker included."""

    def aggregate_train(self, server_round, replies):
        replies = list(replies)
        configured = self.beta
        self.beta = max(configured, 1.0 / max(len(replies), 1) + 1e-9)
        try:
            return super().aggregate_train(server_round, replies)
        finally:
            self.beta = configured


#: Each run-config strategy name -> the Flower strategy it builds, given the run config and the
#: arguments every strategy takes (its minimum numbers of sites). Held equal to the run config's
#: STRATEGIES by tests/test_strategies.py.
STRATEGY_FACTORIES: dict[str, Callable[[FederatedRunConfig, dict[str, int]], Strategy]] = {
    "fedavg": lambda settings, common: FedAvg(**common),
    "fedprox": lambda settings, common: FedProx(**common, proximal_mu=settings.proximal_mu),
    "fedadam": lambda settings, common: FedAdam(
        **common, eta=settings.server_learning_rate, eta_l=settings.learning_rate
    ),
    "fedavgm": lambda settings, common: FedAvgM(
        **common, server_learning_rate=1.0, server_momentum=settings.server_momentum
    ),
    "fedmedian": lambda settings, common: FedMedian(**common),
    "fedtrimmedavg": lambda settings, common: FedTrimmedAvgAtLeastOne(**common, beta=settings.trimmed_beta),
    "krum": lambda settings, common: Krum(**common, num_malicious_nodes=ASSUMED_ATTACKERS),
    "multikrum": lambda settings, common: MultiKrum(
        **common,
        num_malicious_nodes=ASSUMED_ATTACKERS,
        num_nodes_to_select=max(1, common["min_train_nodes"] - 1),
    ),
}


def build_strategy(settings: FederatedRunConfig) -> UpdateValidation:
    """The run config's strategy, under client-level DP where it asks for it, wrapped in update
    validation."""
    n = settings.min_available_clients
    common = {"min_available_nodes": n, "min_train_nodes": n, "min_evaluate_nodes": n}
    inner = STRATEGY_FACTORIES[settings.strategy](settings, common)
    if settings.client_dp_noise > 0:
        inner = with_client_level_dp(inner, settings)
    return UpdateValidation(
        inner,
        max_update_norm=settings.max_update_norm,
        max_norm_ratio=settings.max_norm_ratio,
        min_valid=ROBUST_MINIMUM_SITES.get(settings.strategy, 1),
    )  # fewer: the round keeps the model


def with_client_level_dp(strategy: Strategy, settings: FederatedRunConfig) -> Strategy:
    """Flower's central DP wrappers: every site's update is clipped to a norm bound on the server,
    and Gaussian noise (client-dp-noise x bound / sites) is added to the aggregate. Meaningful for
    federations of many sites (one site's participation is what is protected); the epsilon is in
    rounds.csv (client_level_epsilon)."""
    n = settings.min_available_clients
    if settings.client_dp_clipping == "fixed":
        return DifferentialPrivacyServerSideFixedClipping(
            strategy, settings.client_dp_noise, settings.client_dp_clip_norm, num_sampled_clients=n
        )
    # the clipped-count noise must exceed half the noise multiplier (Andrew et al. 2021, Thm 1);
    # Flower's default (sites / 20) does not with a few sites
    return DifferentialPrivacyServerSideAdaptiveClipping(
        strategy,
        settings.client_dp_noise,
        num_sampled_clients=n,
        initial_clipping_norm=settings.client_dp_clip_norm,
        clipped_count_stddev=max(n / 20, settings.client_dp_noise),
    )


def _optimizer_strategy(strategy: UpdateValidation) -> Strategy:
    """The innermost strategy (under validation and DP wrappers): the one with optimizer state."""
    inner = strategy.strategy
    while hasattr(inner, "strategy"):
        inner = inner.strategy
    return inner


def export_state(strategy: UpdateValidation) -> bytes:
    """Server-optimizer state (FedAdam moments, FedAvgM momentum) and the sites' example caps, so
    that --resume continues exactly."""
    arrays: dict[str, np.ndarray] = {f"{CAPS}|{site}": np.asarray(cap) for site, cap in strategy.example_caps.items()}
    for attribute in STATE_ATTRIBUTES:
        value = getattr(_optimizer_strategy(strategy), attribute, None)
        if isinstance(value, dict):
            arrays.update({f"{attribute}|{key}": np.asarray(v) for key, v in value.items()})
        elif isinstance(value, list):
            arrays.update({f"{attribute}|{i:05d}": np.asarray(v) for i, v in enumerate(value)})
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def restore_state(strategy: UpdateValidation, data: bytes) -> None:
    with np.load(io.BytesIO(data)) as archive:
        strategy.example_caps = {
            int(k.split("|", 1)[1]): int(archive[k]) for k in archive.files if k.startswith(f"{CAPS}|")
        }
        for attribute in STATE_ATTRIBUTES:
            keys = sorted(k for k in archive.files if k.startswith(f"{attribute}|"))
            if not keys:
                continue
            target = _optimizer_strategy(strategy)
            if attribute == "momentum_vector":
                setattr(target, attribute, [archive[k] for k in keys])
            else:
                setattr(target, attribute, {k.split("|", 1)[1]: archive[k] for k in keys})


def client_level_epsilon(settings: FederatedRunConfig, rounds: int) -> float:
    """Client-level epsilon after `rounds` rounds of the central DP wrapper (every site takes part
    in every round: no sampling amplification); 0 when client-level DP is off."""
    if settings.client_dp_noise <= 0:
        return 0.0
    return epsilon_spent(1.0, settings.client_dp_noise, rounds, settings.client_dp_delta, settings.dp_accountant)
