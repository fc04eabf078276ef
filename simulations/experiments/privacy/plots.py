"""The experiment's two figures: the privacy-utility curve and the robustness bars."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from simulations.experiments.privacy.plan import STRATEGIES
from simulations.experiments.privacy.summary import HONEST_RECALL, curve_summary, robustness_metric

matplotlib.use("Agg")  # files only, never a window


def privacy_utility_plot(results: pd.DataFrame, path: Path) -> Path:
    curve = curve_summary(results)
    private = curve[np.isfinite(curve["epsilon"])]
    reference = curve[~np.isfinite(curve["epsilon"])]
    fig, axes = plt.subplots(1, 2, figsize=(9.5, 3.8))
    for ax, metric, label in (
        (axes[0], "nvp_recall@10", "NVP Recall@10 (sites' held-out)"),
        (axes[1], "auroc", "downstream AUROC (mean +- SD over runs)"),
    ):
        ax.plot(private["epsilon"], private[metric], marker="o", color="#d62728", label="DP-SGD at every site")
        spread = f"{metric}_runs_sd"
        if spread in private and private[spread].notna().any():
            ax.errorbar(
                private["epsilon"],
                private[metric],
                yerr=private[spread],
                fmt="none",
                color="#d62728",
                alpha=0.4,
                capsize=3,
            )
        if len(reference):
            level = float(reference[metric].iloc[0])
            ax.axhline(level, color="#1f77b4", linestyle="--", label="no DP")
            if spread in reference and np.isfinite(reference[spread].iloc[0]):  # its runs vary too
                ax.axhspan(
                    level - reference[spread].iloc[0], level + reference[spread].iloc[0], color="#1f77b4", alpha=0.1
                )
        if len(private):  # a curve of the non-private run alone has no epsilon axis
            ax.set_xscale("log", base=2)
            ax.set_xticks(private["epsilon"].tolist(), [f"{e:g}" for e in private["epsilon"]])
        ax.set_xlabel("epsilon per site (record level, all rounds)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    fig.suptitle("Privacy-utility curve")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def robustness_plot(results: pd.DataFrame, path: Path) -> Path:
    """Change of NVP Recall@10 under attack relative to the same strategy's clean run, with the
    2% band the robust options should stay in."""
    robust = results[results["part"] == "robustness"]
    metric = robustness_metric(robust)
    table = robust.pivot(index="strategy", columns="adversary", values=metric)
    table = table.reindex([s for s in STRATEGIES if s in table.index] + [s for s in table.index if s not in STRATEGIES])
    attacks = [a for a in table.columns if a != "none"]
    change = (
        table[attacks].div(table["none"], axis=0).sub(1).mul(100) if "none" in table.columns else table[attacks] * 0
    )
    fig, ax = plt.subplots(figsize=(8.5, 3.8))
    width = 0.8 / max(len(attacks), 1)
    for rank, attack in enumerate(attacks):
        x = np.arange(len(change)) + (rank - (len(attacks) - 1) / 2) * width
        bars = ax.bar(x, change[attack], width, label=attack, color=["#d62728", "#ff7f0e", "#9467bd"][rank % 3])
        ax.bar_label(bars, fmt="%+.1f", fontsize=7, padding=2)
    ax.axhspan(-2, 2, color="#2ca02c", alpha=0.12, label="within 2% of clean")
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(np.arange(len(change)), change.index)
    ax.set_ylabel(
        "NVP Recall@10 change vs clean run (%)" + ("\non the honest sites' patients" if metric == HONEST_RECALL else "")
    )
    ax.set_title("Robustness: one site misbehaving in every round")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
