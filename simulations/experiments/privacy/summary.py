"""The experiment's numbers read back: the curve's per-epsilon summary and the claims it checks."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

# NVP Recall@10 on the held-out patients of the honest sites only (every site but the misbehaving
# one, in clean runs too): a hostile site's own evaluation is no more trustworthy than its updates,
# and robust aggregation is judged by the model the honest sites get (as in the robust-FL literature)
HONEST_RECALL = "honest_recall@10"


def checks(results: pd.DataFrame) -> list[tuple[str, bool | None, str]]:
    out: list[tuple[str, bool | None, str]] = []
    curve = results[results["part"] == "privacy"]
    curve = curve.assign(seed=curve["seed"] if "seed" in curve else 0)  # one run per point needs no seed
    private, plain = curve[curve["epsilon"] == 8.0], curve[np.isinf(curve["epsilon"])]
    if len(private) and len(plain):
        gap = private["auroc"].mean() - plain["auroc"].mean()
        detail = f"{private['auroc'].mean():.3f} vs {plain['auroc'].mean():.3f}, difference {gap:+.3f}"
        paired = (private.set_index("seed")["auroc"] - plain.set_index("seed")["auroc"]).dropna()
        if len(paired) > 1:  # the same seeds on both sides: the spread of their differences
            detail += (
                f" +- {paired.std(ddof=1) / math.sqrt(len(paired)):.3f} (standard error over {len(paired)} "
                f"pretraining seeds)"
            )
        for column, what in (("rounds", "rounds"), ("learning_rate", "learning rate")):
            if column in curve and private[column].iloc[0] != plain[column].iloc[0]:  # part of the claim
                detail += f"; private runs at {private[column].iloc[0]:g} {what} against {plain[column].iloc[0]:g}"
        out.append(
            ("epsilon = 8: downstream AUROC within 0.03 of the non-private federated model", gap >= -0.03, detail)
        )
    robust = results[results["part"] == "robustness"]
    metric = robustness_metric(robust)
    table = robust.set_index(["strategy", "adversary"])[metric]
    for strategy in sorted({s for s, _ in table.index}):
        if (strategy, "none") not in table.index:
            continue
        clean = table[(strategy, "none")]
        for adversary in ("scale=10", "signflip"):
            if (strategy, adversary) in table.index:
                change = table[(strategy, adversary)] / clean - 1
                claim = f"{strategy} with one site sending {adversary} updates: NVP Recall@10 " + (
                    "degrades visibly (> 2% below clean)" if strategy == "fedavg" else "within 2% of clean"
                )
                ok = bool(change < -0.02 if strategy == "fedavg" else change >= -0.02)
                where = " on the honest sites" if metric == HONEST_RECALL else ""
                out.append((claim, ok, f"{table[(strategy, adversary)]:.3f} vs {clean:.3f}{where} ({change:+.1%})"))
    return out


def robustness_metric(robust: pd.DataFrame) -> str:
    """What robustness is judged on: the honest sites' recall when the results have it (results
    written before it existed have only the federated evaluation)."""
    return HONEST_RECALL if HONEST_RECALL in robust else "nvp_recall@10"


def curve_summary(results: pd.DataFrame) -> pd.DataFrame:
    """One row per epsilon: the means over its runs (pretraining seeds) and, with more than one,
    their standard deviations (`*_runs_sd`); auroc_sd is the cohorts' spread within a run."""
    curve = results[results["part"] == "privacy"]
    means = [c for c in ("site_epsilon", "nvp_recall@10", "auroc", "auroc_sd") if c in curve]
    grouped = curve.groupby("epsilon", sort=True)
    summary = grouped[means].mean().join(grouped.size().rename("runs"))
    settings = [c for c in ("rounds", "learning_rate") if c in curve]
    summary = summary.join(grouped[settings].first()) if settings else summary
    if grouped.size().max() > 1:  # a single run has no spread to show
        for metric in ("nvp_recall@10", "auroc"):
            summary[f"{metric}_runs_sd"] = grouped[metric].std(ddof=1)
    columns = [
        "runs",
        *settings,
        "site_epsilon",
        "nvp_recall@10",
        "nvp_recall@10_runs_sd",
        "auroc",
        "auroc_runs_sd",
        "auroc_sd",
    ]
    return summary[[c for c in columns if c in summary]].reset_index()
