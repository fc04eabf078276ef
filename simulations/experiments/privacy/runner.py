"""Run (or resume) the privacy experiment: every federated run once, scored once, cached in its
own directory; the same seed gives the same tables."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pandas as pd

from shared_model.checkpoint import assign_weights, load_checkpoint
from shared_model.data import DataValidationError, read_meds
from shared_model.finetuning import finetune_and_score
from shared_model.model import PretrainingModel
from shared_model.run_config import FederatedRunConfig
from shared_model.settings import FinetuneSettings
from shared_model.tasks import NEXT_VISIT, task_arrays
from shared_model.training import evaluate_nvp
from simulations.experiments.common import (
    FederatedRunner,
    default_federated_runner,
    find_sites,
    same_settings_or_refuse,
)
from simulations.experiments.privacy.plan import FederatedRun, PrivacyExperimentConfig, adversary_site, plan_runs
from simulations.experiments.privacy.report import write_report
from simulations.experiments.privacy.summary import HONEST_RECALL

log = logging.getLogger(__name__)


def run_privacy_experiment(
    data: Path,
    out: Path,
    config: PrivacyExperimentConfig = PrivacyExperimentConfig(),
    *,
    robustness_data: Path | None = None,
    federated_runner: FederatedRunner = default_federated_runner,
) -> Path:
    """Run (or resume) both parts in `out`; returns the path of report.html."""
    out = Path(out)
    privacy_sites = find_sites(data)
    robustness_sites = find_sites(robustness_data) if robustness_data else privacy_sites
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(
        json.dumps(
            {
                **asdict(config),
                "epsilons": [str(e) for e in config.epsilons],
                "data": str(data),
                "robustness_data": str(robustness_data or data),
            },
            indent=2,
        )
        + "\n"
    )
    runs = plan_runs(config, list(privacy_sites), list(robustness_sites), out / "pretrained")
    attacker = adversary_site(list(robustness_sites))
    honest = {name: path for name, path in robustness_sites.items() if name != attacker}
    rows = []
    for index, run in enumerate(runs, start=1):
        sites = privacy_sites if run.part == "privacy" else robustness_sites
        run_dir = Path(run.settings.run_dir)
        _check_same_settings(run_dir, run.settings, run.attack)
        if not (run_dir / "checkpoint" / "manifest.json").exists():
            log.info("[%d/%d] federated pretraining %s", index, len(runs), run.name)
            resume = (run_dir / "checkpoints").exists()
            federated_runner(list(sites.values()), replace(run.settings, resume=resume), 2, adversary=run.attack)
        rows.append(_score(run, sites, honest, config))
        log.info(
            "[%d/%d] %s: %s",
            index,
            len(runs),
            run.name,
            {k: round(v, 4) for k, v in rows[-1].items() if isinstance(v, float)},
        )
    results = pd.DataFrame(rows)
    results.to_csv(out / "results.csv", index=False, float_format="%.6f")
    return write_report(out, results, config, list(privacy_sites), list(robustness_sites))


def _check_same_settings(run_dir: Path, settings: FederatedRunConfig, attack: str) -> None:
    """A run directory holds one federated run: refuse to resume or reuse it under other settings."""
    path = run_dir / "settings.json"
    if not path.exists() and run_dir.exists() and any(run_dir.iterdir()):
        raise DataValidationError(run_dir, "a run directory written by this experiment (it has no settings.json)")
    same_settings_or_refuse(path, _effective({**settings.to_run_config(), "adversary": attack}))


def _effective(run_config: dict) -> dict:
    """The settings that shape a run: a switched-off mechanism's parameters do not."""
    ignored = {"run-dir", "resume"}
    if not run_config.get("dp-epsilon"):
        ignored |= {k for k in run_config if k.startswith("dp-")} - {"dp-epsilon"}
    if not run_config.get("client-dp-noise"):
        ignored |= {k for k in run_config if k.startswith("client-dp-")} - {"client-dp-noise"}
    return {k: v for k, v in run_config.items() if k not in ignored}


def _score(run: FederatedRun, sites: dict[str, Path], honest: dict[str, Path], config: PrivacyExperimentConfig) -> dict:
    """The run's metrics, kept in its directory (score.json) for the same downstream settings, so
    a resumed experiment does not fine-tune again (a metric added later is computed alone).
    `honest`: the robustness sites but the misbehaving one (robustness runs only)."""
    cache = Path(run.settings.run_dir) / "score.json"
    key = {"task": config.task, "cohort_size": config.cohort_size, "seeds": list(config.seeds), "sites": sorted(sites)}
    cached = json.loads(cache.read_text()) if cache.exists() else {}
    row = (
        {**cached["row"], "part": run.part, "run": run.name}
        if cached.get("key") == key
        else _measure(run, sites, config)
    )
    # what the private runs may do differently from the non-private one, shown next to the verdict
    row.update(seed=run.settings.seed, rounds=run.settings.num_server_rounds, learning_rate=run.settings.learning_rate)
    if run.part == "robustness" and HONEST_RECALL not in row:
        row[HONEST_RECALL] = held_out_recall(Path(run.settings.run_dir) / "checkpoint", honest)
    if row != cached.get("row"):
        cache.write_text(json.dumps({"key": key, "row": row}, indent=2) + "\n")
    return row


def held_out_recall(checkpoint_dir: Path, sites: dict[str, Path]) -> float:
    """NVP Recall@10 of a checkpoint over the pooled held-out patients of `sites`, with every code
    of its vocabulary (the federated evaluation differs a little: each site uses only the codes it
    has seen in >= k of its patients)."""
    checkpoint = load_checkpoint(checkpoint_dir)
    model = PretrainingModel(checkpoint.config)
    assign_weights(model, checkpoint)
    held_out = [task_arrays(read_meds(path), NEXT_VISIT, checkpoint.vocabulary)["held_out"] for path in sites.values()]
    return float(evaluate_nvp(model, held_out, ks=(10,))["recall@10"])


def _measure(run: FederatedRun, sites: dict[str, Path], config: PrivacyExperimentConfig) -> dict:
    run_dir = Path(run.settings.run_dir)
    rounds = pd.read_csv(run_dir / "rounds.csv")
    last = rounds.iloc[-1]
    checkpoint = load_checkpoint(run_dir / "checkpoint")
    aurocs = []
    for site_dir in sites.values():
        dataset = read_meds(site_dir)
        for seed in config.seeds:
            outcome = finetune_and_score(
                dataset,
                config.task,
                train_size=config.cohort_size,
                seed=seed,
                checkpoint=checkpoint,
                settings=FinetuneSettings(seed=seed),
            )
            aurocs.append(outcome.record["auroc"])
    return {
        "part": run.part,
        "run": run.name,
        "epsilon": run.epsilon,
        "strategy": run.strategy,
        "adversary": run.adversary,
        "site_epsilon": float(last["site_epsilon"]),
        "nvp_recall@10": float(last["eval_recall@10"]),
        "auroc": float(np.mean(aurocs)),
        "auroc_sd": float(np.std(aurocs, ddof=1)) if len(aurocs) > 1 else 0.0,
        "dropped_updates": int(rounds["dropped"].sum()),
    }
