"""Does federated pretraining match pooled pretraining? FedAvg over the sites vs central training
on the pooled data, with the same number of passes over the data (rounds x local epochs)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from shared_model.contract.checkpoint import assign_weights, load_checkpoint
from shared_model.contract.run_config import FederatedRunConfig
from shared_model.data import read_meds
from shared_model.model.transformer import PretrainingModel
from shared_model.settings import VocabularySettings
from shared_model.tensors.tasks import NEXT_VISIT, task_arrays
from shared_model.training.central import run_central_pretraining
from shared_model.training.fit import PretrainSettings, evaluate_nvp
from simulations.federation.simulation import run_federated_simulation

log = logging.getLogger(__name__)


def evaluate_checkpoint(checkpoint_dir: Path, site_dirs: list[Path]) -> dict[str, float]:
    """NVP Recall@k of a checkpoint on the pooled held-out splits (its own vocabulary)."""
    checkpoint = load_checkpoint(checkpoint_dir)
    model = PretrainingModel(checkpoint.config)
    assign_weights(model, checkpoint)
    held_out = [task_arrays(read_meds(p), NEXT_VISIT, checkpoint.vocabulary)["held_out"] for p in site_dirs]
    return evaluate_nvp(model, held_out)


def run_federated_vs_central(
    out: Path,
    site_dirs: list[Path],
    *,
    rounds: int = 10,
    local_epochs: int = 1,
    seed: int = 0,
    k_anonymity: int = 11,
    strategy: str = "fedavg",
    parallel_clients: int = 1,
) -> dict[str, Any]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    passes = rounds * local_epochs
    if not (out / "central" / "checkpoint" / "manifest.json").exists():
        run_central_pretraining(
            site_dirs,
            out / "central",
            vocabulary_settings=VocabularySettings(min_count=k_anonymity),
            settings=PretrainSettings(epochs=passes, patience=passes, seed=seed),
        )
    federated_dir = out / f"federated-{strategy}"
    if not (federated_dir / "checkpoint" / "manifest.json").exists():
        settings = FederatedRunConfig(
            num_server_rounds=rounds,
            local_epochs=local_epochs,
            seed=seed,
            k_anonymity=k_anonymity,
            strategy=strategy,
            run_dir=str(federated_dir),
            resume=(federated_dir / "checkpoints").exists(),
            min_available_clients=len(site_dirs),
        )
        run_federated_simulation(site_dirs, settings, parallel_clients=parallel_clients)
    central = evaluate_checkpoint(out / "central" / "checkpoint", site_dirs)
    federated = evaluate_checkpoint(federated_dir / "checkpoint", site_dirs)
    rounds_table = pd.read_csv(federated_dir / "rounds.csv")
    steady = rounds_table[rounds_table["round"] > 1] if len(rounds_table) > 1 else rounds_table
    overhead = 1 - steady["client_compute_seconds"] / (steady["round_seconds"] * parallel_clients)
    result = {
        "passes_over_data": passes,
        "strategy": strategy,
        "sites": [p.name for p in site_dirs],
        "central": central,
        "federated": federated,
        "ratio_recall@10": federated["recall@10"] / central["recall@10"],
        "round_seconds_median": float(steady["round_seconds"].median()),
        "slowest_train_seconds_median": float(steady["slowest_train_seconds"].median()),
        "round_overhead_fraction_median": float(np.median(overhead)),
        "parallel_clients": parallel_clients,
    }
    (out / "fed_vs_central.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        f"# Federated ({strategy}) vs central pretraining, {passes} passes over the data",
        "",
        "NVP Recall@k on the pooled held-out splits of " + ", ".join(result["sites"]) + ".",
        "",
        "| pretraining | Recall@5 | Recall@10 | Recall@30 |",
        "|---|---:|---:|---:|",
    ]
    for name, metrics in (("central (pooled)", central), (f"federated ({strategy})", federated)):
        lines.append(
            f"| {name} | {metrics['recall@5']:.4f} | {metrics['recall@10']:.4f} | {metrics['recall@30']:.4f} |"
        )
    lines += [
        "",
        f"Federated / central Recall@10: **{result['ratio_recall@10']:.1%}** (target >= 98%).",
        "",
        f"Round time (median over rounds 2+): {result['round_seconds_median']:.1f} s; slowest local training "
        f"{result['slowest_train_seconds_median']:.1f} s; time in neither local training nor evaluation "
        f"(server aggregation, checkpoints, messaging, scheduling): {result['round_overhead_fraction_median']:.1%} "
        f"of the round with {parallel_clients} client(s) at a time.",
    ]
    (out / "fed_vs_central.md").write_text("\n".join(lines) + "\n")
    return result
