"""The experiment grid: pretraining mode x fine-tuning site x task x cohort size x seed."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from shared_model.contract.run_config import CLIENT_OPTIMIZER_STATES, STRATEGIES
from shared_model.model.config import TIME_ENCODINGS
from shared_model.settings import FIXED_PRECISIONS
from shared_model.tensors.tasks import NEXT_VISIT, is_task_name
from simulations.experiments.common import load_toml_overrides

MODES = ("scratch", "logreg", "gbm", "local", "central", "federated", "federated-loso")
BASELINE_MODES = ("logreg", "gbm")  # count-feature baselines: binary tasks only, no pretraining
MODE_HELP = {
    "scratch": "the same transformer from random initialisation, trained on the site's cohort only",
    "logreg": "L2 logistic regression on bag-of-codes counts (C by cross-validation over train + tuning)",
    "gbm": "LightGBM on code counts over 30 days, 365 days and all history, plus age (rounds by the same rule)",
    "local": "pretrained on the fine-tuning site's own unlabelled training patients",
    "central": "pretrained on all sites' training patients pooled in one place",
    "federated": "pretrained with Flower over all sites (the fine-tuning site included)",
    "federated-loso": "pretrained with Flower over the other sites only (leave the fine-tuning site out)",
    "other-site": "pretrained on one other site alone (the transfer heatmap's off-diagonal)",
}


@dataclass(frozen=True)
class TransferConfig:
    """What the grid covers. Cohort size 0 means every labelled training patient of the site.

    Pretraining uses the same number of passes over the data in every mode: `pretrain_epochs`
    epochs centrally and locally, `pretrain_epochs` rounds of one local epoch when federated.
    FedAvg averages K sites' parallel trajectories, so with central's batch of 100 it would make
    about 1/K of central's sequential progress per pass (measured: 6 rounds of 3 sites matched 2
    central epochs, not 6). By default each site's local batch is therefore ceil(100 / K), which
    gives federated pretraining as many sequential steps per pass as central pretraining."""

    modes: tuple[str, ...] = MODES
    tasks: tuple[str, ...] = ("asthma", "self_harm")  # next_visit on request (a TOML file)
    cohort_sizes: tuple[int, ...] = (50, 100, 300, 1000)
    seeds: tuple[int, ...] = (0, 1, 2)
    pretrain_epochs: int = 6
    finetune_epochs: int = 40
    pretrain_seed: int = 0
    strategy: str = "fedavg"
    # days before the prediction time and age at each visit, instead of Claim-PT's day of the year:
    # the probe on the pretrained encoder gains 0.01-0.03 asthma AUROC (docs/results/transfer.md)
    time_encoding: str = "days_before+age"
    client_optimizer: str = "reset"  # federated: each site's RMSprop state reset every round, or kept
    federated_batch_size: int = 0  # patients per local step at each site; 0: 100 / sites (see below)
    k_anonymity: int = 11
    heatmap: bool = True
    heatmap_task: str = ""  # default: the grid's first binary task
    heatmap_size: int = 300
    bootstrap: int = 1000
    parallel_clients: int = 1
    test_from: str = ""  # an ISO date: out-of-time validation (cohorts before it, held-out from it on)
    precision: str = "float32"  # of every pretraining (float32 or bfloat16): the grid's, not the machine's

    def __post_init__(self) -> None:
        if not self.heatmap_task:
            binary = [t for t in self.tasks if t != NEXT_VISIT]
            object.__setattr__(self, "heatmap_task", binary[0] if binary else "asthma")
        problems = [f"unknown mode {m!r} (choose from {', '.join(MODES)})" for m in self.modes if m not in MODES]
        problems += [
            f"task {t!r} is not a label file name (labels/<task>.parquet)" for t in self.tasks if not is_task_name(t)
        ]
        if self.strategy not in STRATEGIES:
            problems.append(f"unknown strategy {self.strategy!r}")
        if self.time_encoding not in TIME_ENCODINGS:
            problems.append(f"time_encoding must be one of {', '.join(TIME_ENCODINGS)}")
        if self.precision not in FIXED_PRECISIONS:
            problems.append(f"precision must be one of {', '.join(FIXED_PRECISIONS)}")
        if self.client_optimizer not in CLIENT_OPTIMIZER_STATES:
            problems.append(f"client_optimizer must be one of {', '.join(CLIENT_OPTIMIZER_STATES)}")
        if any(size < 0 for size in self.cohort_sizes) or not self.cohort_sizes:
            problems.append("cohort_sizes must be non-empty and >= 0 (0 = all)")
        if not self.seeds or not self.modes or not self.tasks:
            problems.append("modes, tasks and seeds must be non-empty")
        if self.federated_batch_size < 0:
            problems.append("federated_batch_size must be >= 0 (0: 100 / number of sites)")
        if self.pretrain_epochs < 1 or self.finetune_epochs < 1 or self.bootstrap < 100 or self.parallel_clients < 1:
            problems.append(
                "pretrain_epochs >= 1, finetune_epochs >= 1, bootstrap >= 100 and parallel_clients >= 1 are required"
            )
        if not is_task_name(self.heatmap_task) or self.heatmap_task == NEXT_VISIT:
            problems.append("heatmap_task must be a binary task")
        if self.test_from:
            try:
                dt.date.fromisoformat(self.test_from)
            except ValueError:
                problems.append(f"test_from must be an ISO date (YYYY-MM-DD) or empty, got {self.test_from!r}")
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def test_from_date(self) -> dt.date | None:
        return dt.date.fromisoformat(self.test_from) if self.test_from else None

    @classmethod
    def quick(cls) -> TransferConfig:
        """The grid of `make demo`: the comparison the claim is about (pretrained, federated and
        central, against scratch and the count-feature baselines) on one task, at the claim's
        cohort size and the label-efficiency comparison's (300 and 1,000 labelled patients),
        two seeds each; smaller, noisier cohorts, the heatmap and leave-one-site-out are left to
        the full grid."""
        return cls(
            modes=("scratch", "logreg", "gbm", "central", "federated"),
            tasks=("asthma",),
            cohort_sizes=(300, 1000),
            seeds=(0, 1),
            heatmap=False,
            bootstrap=500,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_config(path: Path | None, *, quick: bool = False) -> TransferConfig:
    """The default (or quick) grid, overridden by the keys of a TOML file, e.g.

    tasks = ["asthma"]
    cohort_sizes = [100, 300, 0]
    seeds = [0, 1, 2, 3, 4]
    """
    base = TransferConfig.quick() if quick else TransferConfig()
    return load_toml_overrides(path, base) if path is not None else base


@dataclass(frozen=True)
class Run:
    """One fine-tuning run of the grid; `pretraining` names the sites the encoder was pretrained on."""

    task: str
    cohort_size: int
    site: str
    mode: str
    pretraining: tuple[str, ...]
    seed: int

    @property
    def run_id(self) -> str:
        sites = "+".join(self.pretraining) or "none"
        return f"{self.task}_n{self.cohort_size or 'all'}_{self.site}_{self.mode}_{sites}_s{self.seed}"


def pretraining_sites(mode: str, site: str, sites: list[str]) -> tuple[str, ...]:
    if mode == "local":
        return (site,)
    if mode in ("central", "federated"):
        return tuple(sites)
    if mode == "federated-loso":
        return tuple(s for s in sites if s != site)
    return ()


def enumerate_runs(config: TransferConfig, sites: list[str]) -> list[Run]:
    """Every run, grouped so that all fine-tunes of one task and size sit together (progress reads
    naturally and a partial result already covers whole cells)."""
    runs = []
    for task in config.tasks:
        for size in config.cohort_sizes:
            for site in sites:
                for seed in config.seeds:
                    for mode in config.modes:
                        if mode in BASELINE_MODES and task == NEXT_VISIT:
                            continue
                        if mode == "federated-loso" and len(sites) < 3:
                            continue  # a federation needs at least two other sites
                        runs.append(Run(task, size, site, mode, pretraining_sites(mode, site, sites), seed))
    if config.heatmap and "local" in config.modes:
        for site in sites:
            for seed in config.seeds:
                for other in sites:
                    if other != site:
                        runs.append(Run(config.heatmap_task, config.heatmap_size, site, "other-site", (other,), seed))
    return runs
