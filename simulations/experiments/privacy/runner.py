"""Run (or resume) the privacy experiment: every federated run once, scored once, cached in its
own directory; the same seed gives the same tables."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pandas as pd

from shared_model.contract.checkpoint import assign_weights, load_checkpoint
from shared_model.data import read_meds
from shared_model.data.paths import atomic_write_parquet
from shared_model.model.transformer import PretrainingModel
from shared_model.settings import FinetuneSettings
from shared_model.tensors.tasks import NEXT_VISIT, task_arrays
from shared_model.training.finetuning import finetune_and_score
from shared_model.training.fit import evaluate_nvp
from simulations.experiments.common import (
    FederatedRunner,
    content_digest,
    default_federated_runner,
    find_sites,
    site_fingerprint,
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
    fingerprints = {path: site_fingerprint(path) for path in {*privacy_sites.values(), *robustness_sites.values()}}
    planned = plan_runs(config, list(privacy_sites), list(robustness_sites), out / "pretrained")
    attacker = adversary_site(list(robustness_sites))
    honest = {name: path for name, path in robustness_sites.items() if name != attacker}
    rows = []
    for index, run in enumerate(planned, start=1):
        sites = privacy_sites if run.part == "privacy" else robustness_sites
        run = keyed(run, [fingerprints[path] for path in sites.values()])
        run_dir = Path(run.settings.run_dir)
        if not (run_dir / "checkpoint" / "manifest.json").exists():
            log.info("[%d/%d] federated pretraining %s", index, len(planned), run.name)
            resume = (run_dir / "checkpoints").exists()
            federated_runner(list(sites.values()), replace(run.settings, resume=resume), 2, adversary=run.attack)
        rows.append(_score(run, sites, honest, config))
        log.info(
            "[%d/%d] %s: %s",
            index,
            len(planned),
            run.name,
            {k: round(v, 4) for k, v in rows[-1].items() if isinstance(v, float)},
        )
    results = pd.DataFrame(rows)
    results.to_csv(out / "results.csv", index=False, float_format="%.6f")
    return write_report(out, results, config, list(privacy_sites), list(robustness_sites))


def keyed(run: FederatedRun, fingerprints: list[str]) -> FederatedRun:
    """The run in its content-keyed directory, `<name>-<digest>` under the planned one's parent: the
    digest covers the sites' data and every setting that shapes the run, so a finished run is
    reused exactly when it would be rebuilt identically, and other settings never mix with it."""
    content = {"data": fingerprints, **_effective({**run.settings.to_run_config(), "adversary": run.attack})}
    run_dir = Path(run.settings.run_dir)
    return replace(
        run, settings=replace(run.settings, run_dir=str(run_dir.with_name(f"{run_dir.name}-{content_digest(content)}")))
    )


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
    a resumed experiment does not fine-tune again. `honest`: the robustness sites but the
    misbehaving one (robustness runs only)."""
    cache = Path(run.settings.run_dir) / "score.json"
    key = {"task": config.task, "cohort_size": config.cohort_size, "seeds": list(config.seeds), "sites": sorted(sites)}
    cached = json.loads(cache.read_text()) if cache.exists() else {}
    row = (
        {**cached["row"], "part": run.part, "run": run.name}
        if cached.get("key") == key
        else _measure(run, sites, honest, config)
    )
    # what the private runs may do differently from the non-private one, shown next to the verdict
    row.update(seed=run.settings.seed, rounds=run.settings.num_server_rounds, learning_rate=run.settings.learning_rate)
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


def _measure(
    run: FederatedRun, sites: dict[str, Path], honest: dict[str, Path], config: PrivacyExperimentConfig
) -> dict:
    run_dir = Path(run.settings.run_dir)
    rounds = pd.read_csv(run_dir / "rounds.csv")
    last = rounds.iloc[-1]
    checkpoint = load_checkpoint(run_dir / "checkpoint")
    aurocs = []
    for site, site_dir in sites.items():
        dataset = read_meds(site_dir)
        for seed in config.seeds:
            outcome = finetune_and_score(
                dataset,
                config.task,
                train_size=config.cohort_size,
                seed=seed,
                checkpoint=checkpoint,
                settings=FinetuneSettings(seed=seed, guard=False),
            )
            aurocs.append(outcome.record["auroc"])
            if outcome.predictions is not None:  # held-out predictions, MEDS-DEV format
                atomic_write_parquet(run_dir / "predictions" / f"{site}-seed{seed}.parquet", outcome.predictions)
    row = {
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
    if run.part == "robustness":
        row[HONEST_RECALL] = held_out_recall(run_dir / "checkpoint", honest)
    return row
