"""Reproduce Claim-PT's core claim on the synthetic sites (issue: model core).

Pretrain centrally on all sites, then fine-tune `asthma` at each site on a small cohort:
pretrained transformer vs the same architecture from scratch vs bag-of-codes logistic
regression, over several seeds. Resumable: finished rows of results.csv are not run again.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import pandas as pd

from shared_model.contract.checkpoint import load_checkpoint
from shared_model.data import read_meds
from shared_model.data.paths import atomic_write_parquet
from shared_model.settings import VocabularySettings
from shared_model.training.central import run_central_pretraining
from shared_model.training.finetuning import finetune_and_score
from shared_model.training.fit import FinetuneSettings, PretrainSettings
from simulations.experiments.common import same_settings_or_refuse

log = logging.getLogger(__name__)
MODES = ("pretrained", "pretrained-ft", "pretrained-plain", "scratch", "logreg")
MODE_HELP = {
    "pretrained": "central checkpoint; linear probe (L2 logistic regression on the frozen patient vectors)",
    "pretrained-ft": "central checkpoint; the probe, then all layers with layer-wise learning-rate decay 0.8",
    "pretrained-plain": "central checkpoint; Claim-PT's fine-tuning (all layers, Adam 1e-4, fresh head, no decay)",
    "scratch": "the same architecture from random initialisation (Adam 1e-4, all layers)",
    "logreg": "logistic regression on bag-of-codes counts, C by cross-validation over train + tuning",
}


def mode_settings(mode: str, seed: int) -> FinetuneSettings:
    if mode == "pretrained-plain":
        return FinetuneSettings(seed=seed, adaptation="finetune", layer_decay=1.0, guard=False)
    if mode == "pretrained-ft":
        return FinetuneSettings(seed=seed, adaptation="probe-then-finetune", guard=False)
    return FinetuneSettings(seed=seed, guard=False)


KEY = ["site", "task", "mode", "train_size", "seed"]


def _done(results_csv: Path) -> pd.DataFrame:
    return pd.read_csv(results_csv) if results_csv.exists() else pd.DataFrame(columns=KEY)


def run_claim_pt_experiment(
    out: Path,
    site_dirs: list[Path],
    *,
    task: str = "asthma",
    train_size: int = 300,
    seeds: tuple[int, ...] = (0, 1, 2),
    epochs: int = 10,
    pretrain_seed: int = 0,
    vocabulary: VocabularySettings = VocabularySettings(),
) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pretraining = {"epochs": epochs, "seed": pretrain_seed, "vocabulary": dataclasses.asdict(vocabulary)}
    same_settings_or_refuse(out / "pretraining.json", pretraining)  # the cached checkpoint is of these
    central = out / "central"
    if not (central / "checkpoint" / "manifest.json").exists():
        log.info("central pretraining on %d sites", len(site_dirs))
        run_central_pretraining(
            site_dirs,
            central,
            settings=PretrainSettings(epochs=epochs, seed=pretrain_seed),
            vocabulary_settings=vocabulary,
        )
    checkpoint = load_checkpoint(central / "checkpoint")
    results_csv = out / "results.csv"
    done = _done(results_csv)
    grid = [(site, seed, mode) for site in site_dirs for seed in seeds for mode in MODES]
    for i, (site, seed, mode) in enumerate(grid, start=1):
        key = (site.name, task, mode, train_size, seed)
        if ((done[KEY] == pd.Series(key, index=KEY)).all(axis=1)).any():
            continue
        log.info("[%d/%d] %s %s seed %d", i, len(grid), site.name, mode, seed)
        outcome = finetune_and_score(
            read_meds(site),
            task,
            train_size=train_size,
            seed=seed,
            checkpoint=checkpoint if mode.startswith("pretrained") else None,
            model="logreg" if mode == "logreg" else "transformer",
            settings=mode_settings(mode, seed),
        )
        record = outcome.record
        if outcome.predictions is not None:  # held-out predictions, MEDS-DEV format
            atomic_write_parquet(out / "predictions" / f"{site.name}-{mode}-seed{seed}.parquet", outcome.predictions)
        row = {
            "site": site.name,
            "task": task,
            "mode": mode,
            "train_size": train_size,
            "seed": seed,
            "auroc": record["auroc"],
            "auprc": record["auprc"],
            "train_positives": record["train_positives"],
            "held_out_size": record["held_out_size"],
            "seconds": record["seconds"],
        }
        done = pd.concat([done, pd.DataFrame([row])], ignore_index=True)
        done.to_csv(results_csv, index=False)  # after every run: a killed experiment resumes here
    report = write_report(out, done, json.loads((central / "metrics.json").read_text()), task, train_size)
    return report


def write_report(out: Path, results: pd.DataFrame, central_metrics: dict[str, Any], task: str, train_size: int) -> Path:
    table = results.pivot_table(index="site", columns="mode", values="auroc", aggfunc=["mean", "std"])
    means = results.groupby(["site", "mode"])["auroc"].mean().unstack()
    lines = [
        f"# Claim-PT core claim: central pretraining vs scratch vs logistic regression ({task}, n={train_size})",
        "",
        f"Mean AUROC over seeds {sorted(results['seed'].unique().tolist())} on each site's held-out split "
        "(± standard deviation across seeds).",
        "",
        "| site | " + " | ".join(MODES) + " | pretrained - scratch | pretrained - logreg |",
        "|---|" + "---:|" * (len(MODES) + 2),
    ]
    for site in means.index:
        cells = [f"{table['mean'].loc[site, m]:.3f} ± {table['std'].loc[site, m]:.3f}" for m in MODES]
        lines.append(
            f"| {site} | " + " | ".join(cells) + f" | {means.loc[site, 'pretrained'] - means.loc[site, 'scratch']:+.3f}"
            f" | {means.loc[site, 'pretrained'] - means.loc[site, 'logreg']:+.3f} |"
        )
    overall = means.mean()
    lines.append(
        "| **mean** | " + " | ".join(f"{overall[m]:.3f}" for m in MODES) + " | "
        f"{overall['pretrained'] - overall['scratch']:+.3f} | {overall['pretrained'] - overall['logreg']:+.3f} |"
    )
    lines += ["", *[f"- `{m}`: {MODE_HELP[m]}" for m in MODES]]
    nvp, base = central_metrics["nvp_held_out"], central_metrics["most_frequent_groups_baseline"]
    lines += [
        "",
        "## Pretraining (central, pooled sites): next-visit prediction on the held-out splits",
        "",
        "| predictor | Recall@5 | Recall@10 | Recall@30 |",
        "|---|---:|---:|---:|",
        f"| Claim-PT NVP head | {nvp['recall@5']:.3f} | {nvp['recall@10']:.3f} | {nvp['recall@30']:.3f} |",
        f"| most frequent groups | {base['recall@5']:.3f} | {base['recall@10']:.3f} | {base['recall@30']:.3f} |",
        "",
        "## Checks",
        "",
        f"- pretrained >= scratch + 0.05 (mean over seeds) at every site: "
        f"{bool(((means['pretrained'] - means['scratch']) >= 0.05).all())}",
        f"- pretrained >= logistic regression at every site: {bool((means['pretrained'] >= means['logreg']).all())}",
        f"- NVP Recall@10 above the most-frequent-groups predictor: {nvp['recall@10'] > base['recall@10']}",
    ]
    report = out / "results.md"
    report.write_text("\n".join(lines) + "\n")
    return report
