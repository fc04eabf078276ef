"""What the privacy experiment runs: the privacy-utility curve (record-level DP-SGD at every site,
epsilon x repeated seeds) and the robustness table (aggregation strategy x misbehaving site)."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from pathlib import Path

from shared_model.contract.run_config import FederatedRunConfig
from simulations.experiments.common import load_toml_overrides

log = logging.getLogger(__name__)
EPSILONS = (1.0, 2.0, 4.0, 8.0, math.inf)
# "+validation": the update-validation wrapper's norm-ratio filter on; every other row runs the bare
# aggregation rule, so the table shows what each rule does on its own
STRATEGIES = ("fedavg", "fedavg+validation", "fedmedian", "fedtrimmedavg", "multikrum")
ADVERSARIES = ("none", "scale=10", "signflip")


@dataclass(frozen=True)
class PrivacyExperimentConfig:
    epsilons: tuple[float, ...] = EPSILONS
    strategies: tuple[str, ...] = STRATEGIES
    adversaries: tuple[str, ...] = ADVERSARIES
    rounds: int = 4  # of the privacy curve
    repeats: int = 3  # federated runs per epsilon of the curve, at seeds seed, seed + 1, ...
    robustness_rounds: int = 8  # of the robustness table
    clip_norm: float = FederatedRunConfig.dp_clip_norm  # DP-SGD's bounds: the run config's defaults
    embedding_share: float = FederatedRunConfig.dp_embedding_share
    dp_batch_size: int = 0  # expected batch of the private runs (0: the non-private 100)
    # each side's learning rate was chosen on held-out pretraining loss (docs/results/privacy.md)
    learning_rate: float = 2e-3
    dp_learning_rate: float = 8e-3
    dp_rounds: int = 0  # federated rounds of the private runs (0: `rounds`, as the non-private run)
    task: str = "asthma"
    cohort_size: int = 300
    seeds: tuple[int, ...] = (0, 1, 2)
    seed: int = 0
    k_anonymity: int = 11


@dataclass(frozen=True)
class FederatedRun:
    part: str  # "privacy" or "robustness"
    name: str
    settings: FederatedRunConfig
    epsilon: float = math.inf
    strategy: str = "fedavg"
    adversary: str = "none"
    attack: str = ""  # the simulated adversary (simulations.federation.adversary): SITE:KIND, "" for none


def curve_training(config: PrivacyExperimentConfig) -> tuple[float, dict]:
    """The curve's non-private learning rate and the private runs' training (FederatedRunConfig
    fields), every 0 in `config` resolved to what it stands for."""
    learning_rate = config.learning_rate or FederatedRunConfig.learning_rate
    return learning_rate, {
        "num_server_rounds": config.dp_rounds or config.rounds,
        "batch_size": config.dp_batch_size or FederatedRunConfig.batch_size,
        "learning_rate": config.dp_learning_rate or learning_rate,
    }


def plan_runs(
    config: PrivacyExperimentConfig, privacy_sites: list[str], robustness_sites: list[str], run_root: Path
) -> list[FederatedRun]:
    base = FederatedRunConfig(num_server_rounds=config.rounds, seed=config.seed, k_anonymity=config.k_anonymity)
    learning_rate, private = curve_training(config)
    runs = []
    for epsilon in config.epsilons:
        for seed in range(config.seed, config.seed + config.repeats):
            name = f"privacy-eps-{'inf' if math.isinf(epsilon) else f'{epsilon:g}'}-seed-{seed}"
            settings = replace(
                base,
                seed=seed,
                learning_rate=learning_rate,
                min_available_clients=len(privacy_sites),
                run_dir=str(run_root / name),
            )
            if not math.isinf(epsilon):  # DP settings on the private runs only: the others stay reusable
                settings = replace(
                    settings,
                    dp_epsilon=epsilon,
                    dp_clip_norm=config.clip_norm,
                    dp_embedding_share=config.embedding_share,
                    **private,
                )
            runs.append(FederatedRun("privacy", name, settings, epsilon=epsilon))
    attacker = adversary_site(robustness_sites)
    for strategy in config.strategies:
        for adversary in config.adversaries:
            name = f"robustness-{strategy}-{adversary.replace('=', '')}"
            settings = replace(
                base,
                min_available_clients=len(robustness_sites),
                run_dir=str(run_root / name),
                num_server_rounds=config.robustness_rounds,
                strategy=strategy.split("+")[0],
                max_norm_ratio=5.0 if strategy.endswith("+validation") else 0.0,
            )
            runs.append(
                FederatedRun(
                    "robustness",
                    name,
                    settings,
                    strategy=strategy,
                    adversary=adversary,
                    attack="" if adversary == "none" else f"{attacker}:{adversary}",
                )
            )
    return runs


def adversary_site(sites: list[str]) -> str:
    """The site that misbehaves in the robustness runs: the second."""
    return sites[1] if len(sites) > 1 else sites[0]


def load_config(path: Path | None, *, seed: int = 0) -> PrivacyExperimentConfig:
    """The default experiment at `seed`, overridden by the keys of a TOML file, e.g.

    epsilons = [1.0, 8.0, inf]
    repeats = 5
    dp_learning_rate = 0.008
    """
    base = replace(PrivacyExperimentConfig(), seed=seed)
    return load_toml_overrides(path, base) if path is not None else base
