"""`claimpt experiment precision`: does bfloat16 keep the model's quality?

The same transfer grid (the quick one by default) is run in float32 and in bfloat16 at the same
seeds, once per pretraining seed (`OUT/pretrain-seed-S/float32/`, `.../bfloat16/`, each a
resumable transfer run), and the two are compared pair by pair: every fine-tuning from a
pretrained encoder by its held-out AUROC, and every pretraining by its held-out NVP Recall@10 and
its last training loss. Fine-tuning itself and the count baselines are float32 in both, so only
runs from a pretrained encoder are paired.

The fine-tunings from one encoder share it, so they are not independent: the unit of the AUROC
interval is the pretraining seed (a 95% t-interval over the seeds' mean differences); with one
seed, the interval over the pairs is given and marked as such. Written as OUT/precision.json and
OUT/precision.md."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from shared_model.settings import FIXED_PRECISIONS
from simulations.experiments.transfer import TransferConfig, run_transfer_experiment

RECALL_LIMIT = 0.005  # relative difference of NVP Recall@10 the issue allows
AUROC_LIMIT = 0.005  # mean AUROC difference allowed, its paired interval containing 0


def run_precision_check(
    data: Path, out: Path, grid: TransferConfig, pretrain_seeds: tuple[int, ...] = (0,)
) -> dict[str, Any]:
    """Run `grid` in each precision for each pretraining seed under OUT and compare them."""
    for seed in pretrain_seeds:
        for precision in FIXED_PRECISIONS:
            run_transfer_experiment(
                data, out / f"pretrain-seed-{seed}" / precision, replace(grid, precision=precision, pretrain_seed=seed)
            )
    return compare(out, pretrain_seeds)


def compare(out: Path, pretrain_seeds: tuple[int, ...]) -> dict[str, Any]:
    """The comparison of OUT/pretrain-seed-S/float32 and .../bfloat16 over the seeds, written in OUT."""
    differences, rows = [], []
    for seed in pretrain_seeds:
        seed_dir = out / f"pretrain-seed-{seed}"
        runs = {p: pd.read_csv(seed_dir / p / "results.csv").set_index("run_id") for p in FIXED_PRECISIONS}
        pretrained = runs["float32"]["pretraining_sites"].notna()
        pairs = runs["float32"].loc[pretrained, ["auroc"]].join(runs["bfloat16"][["auroc"]], rsuffix="_bfloat16")
        differences.append((pairs["auroc_bfloat16"] - pairs["auroc"]).dropna().to_numpy())
        found = {p: _pretrainings(seed_dir / p / "pretrained") for p in FIXED_PRECISIONS}
        for key, float32 in sorted(found["float32"].items()):
            bfloat16 = found["bfloat16"].get(key)
            if bfloat16 is not None:
                relative = (bfloat16["recall@10"] - float32["recall@10"]) / float32["recall@10"]
                rows.append({"pretraining": f"{key} (seed {seed})", **_prefixed(float32, "float32"),
                             **_prefixed(bfloat16, "bfloat16"), "recall@10_relative_difference": relative})  # fmt: skip
    every = np.concatenate(differences)
    by_seed = np.array([d.mean() for d in differences])
    low, high = _t_interval(by_seed if len(by_seed) > 1 else every)
    report = {
        "pretrain_seeds": list(pretrain_seeds),
        "auroc_pairs": int(len(every)),
        "auroc_mean_difference": float(every.mean()),
        "auroc_mean_difference_by_seed": by_seed.tolist(),
        "auroc_interval_over": "pretraining seeds" if len(by_seed) > 1 else "pairs (one pretraining seed)",
        "auroc_interval_95": [low, high],
        "auroc_max_abs_difference": float(np.abs(every).max()),
        "auroc_holds": bool(abs(every.mean()) <= AUROC_LIMIT and low <= 0 <= high),
        "pretrainings": rows,
        "recall_holds": bool(rows) and all(abs(r["recall@10_relative_difference"]) <= RECALL_LIMIT for r in rows),
    }
    (out / "precision.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "precision.md").write_text(_markdown(report))
    return report


def _t_interval(values: np.ndarray) -> tuple[float, float]:
    if len(values) < 2:
        return (math.nan, math.nan)
    half = stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values))
    return (float(values.mean() - half), float(values.mean() + half))


def _pretrainings(root: Path) -> dict[str, dict[str, float]]:
    """Each pretraining's held-out NVP Recall@10 and last training loss, by its kind and sites (the
    cache key's digest holds the precision, so it is left out to pair them)."""
    found = {}
    for run in sorted(p for p in root.iterdir() if p.is_dir()):
        name = run.name.rsplit("-", 1)[0]
        if (run / "metrics.json").is_file():  # central
            metrics = json.loads((run / "metrics.json").read_text())
            history = pd.read_csv(run / "history.csv")
            found[name] = {"recall@10": metrics["nvp_held_out"]["recall@10"], "loss": float(history["loss"].iloc[-1])}
        elif (run / "rounds.csv").is_file():  # federated: the last round's evaluation
            last = pd.read_csv(run / "rounds.csv").iloc[-1]
            found[name] = {"recall@10": float(last["eval_recall@10"]), "loss": float(last["train_loss"])}
    return found


def _prefixed(values: dict[str, float], prefix: str) -> dict[str, float]:
    return {f"{prefix}_{k}": v for k, v in values.items()}


def _markdown(report: dict[str, Any]) -> str:
    low, high = report["auroc_interval_95"]
    lines = [
        "# bfloat16 against float32, same grid, same seeds",
        "",
        f"Held-out AUROC of the {report['auroc_pairs']} fine-tunings from a pretrained encoder, paired, pretraining "
        f"seeds {', '.join(map(str, report['pretrain_seeds']))}: mean difference (bfloat16 - float32) "
        f"{report['auroc_mean_difference']:+.4f} (by seed: "
        + ", ".join(f"{d:+.4f}" for d in report["auroc_mean_difference_by_seed"])
        + f"), 95% t-interval over the {report['auroc_interval_over']} [{low:+.4f}, {high:+.4f}], largest single "
        f"difference {report['auroc_max_abs_difference']:.4f} ({'holds' if report['auroc_holds'] else 'does not hold'}"
        f": mean within {AUROC_LIMIT} and 0 in the interval).",
        "",
        "| pretraining | Recall@10 float32 | Recall@10 bfloat16 | relative difference | loss float32 | loss bfloat16 |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in report["pretrainings"]:
        lines.append(
            f"| {row['pretraining']} | {row['float32_recall@10']:.4f} | {row['bfloat16_recall@10']:.4f} "
            f"| {row['recall@10_relative_difference']:+.2%} | {row['float32_loss']:.5f} | {row['bfloat16_loss']:.5f} |"
        )
    verdict = "holds" if report["recall_holds"] else "does not hold"
    lines += ["", f"NVP Recall@10 within {RECALL_LIMIT:.1%} relative: {verdict}."]
    return "\n".join(lines) + "\n"
