"""The experiment's figures (matplotlib, headless): learning curves, transfer heatmap, and
federated vs central pretraining per round."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np
import pandas as pd

from simulations.experiments.transfer.grid import BASELINE_MODES, MODES
from simulations.experiments.transfer.summary import primary_metric

matplotlib.use("Agg")  # files only, never a window

COLOURS = {
    "best-baseline": "#8c564b",
    "scratch": "#7f7f7f",
    "logreg": "#bcbd22",
    "gbm": "#8c564b",
    "local": "#2ca02c",
    "central": "#1f77b4",
    "federated": "#d62728",
    "federated-loso": "#ff7f0e",
}
LABELS = {"recall@10": "NVP Recall@10", "auroc": "AUROC"}
UNPRETRAINED = ("scratch", "best-baseline", *BASELINE_MODES)  # drawn dashed: no pretrained encoder


def _with_interval(ax: plt.Axes, x, line: pd.DataFrame, mode: str, label: str, **style) -> None:
    """One mode's means (`mean`) with their 95% intervals (`lo`, `hi`) as error bars."""
    ax.errorbar(
        x,
        line["mean"],
        yerr=[line["mean"] - line["lo"], line["hi"] - line["mean"]],
        label=label,
        color=COLOURS.get(mode),
        marker="o",
        linestyle="--" if mode in UNPRETRAINED else "-",
        **style,
    )


def size_label(size: int) -> str:
    return "all" if size == 0 else f"{size:,}"


def learning_curves(table: pd.DataFrame, task: str, path: Path) -> Path:
    """Metric vs cohort size, one panel per fine-tuning site, one line per pretraining mode."""
    metric = primary_metric(task)
    rows = table[(table["task"] == task) & (table["metric"] == metric) & (table["mode"] != "other-site")]
    sites = sorted(rows["finetune_site"].unique())
    sizes = sorted(rows["cohort_size"].unique(), key=lambda s: (s == 0, s))
    fig, axes = plt.subplots(1, len(sites), figsize=(4.2 * len(sites), 3.8), sharey=True, squeeze=False)
    for ax, site in zip(axes[0], sites, strict=True):
        modes = [m for m in MODES if m in set(rows["mode"])]
        for rank, mode in enumerate(modes):
            line = rows[(rows["finetune_site"] == site) & (rows["mode"] == mode)].set_index("cohort_size")
            line = line.reindex([s for s in sizes if s in line.index])
            dodge = (rank - (len(modes) - 1) / 2) * 0.05  # side by side, so intervals stay readable
            x = [sizes.index(s) + dodge for s in line.index]
            _with_interval(ax, x, line, mode, mode, capsize=3, linewidth=1.5)
        ax.set_xticks(range(len(sizes)), [size_label(s) for s in sizes])
        ax.set_title(site)
        ax.set_xlabel("labelled patients in the fine-tuning cohort")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(f"held-out {LABELS.get(metric, metric)} (95% CI)")
    axes[0][-1].legend(loc="lower right", fontsize=8)
    fig.suptitle(f"{task}: fine-tuning at each site, by pretraining mode")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def transfer_heatmap(table: pd.DataFrame, task: str, size: int, path: Path) -> Path:
    """Rows: where the encoder was pretrained (each site alone, then references); columns: the
    site it is fine-tuned and evaluated at. Cells: mean AUROC, annotated with the gain over scratch."""
    rows = table[(table["task"] == task) & (table["cohort_size"] == size) & (table["metric"] == "auroc")]
    sites = sorted(rows["finetune_site"].unique())
    sources = [*sites, "federated (all sites)", "central (pooled)", "scratch"]
    values = np.full((len(sources), len(sites)), np.nan)
    for j, target in enumerate(sites):
        at_site = rows[rows["finetune_site"] == target]
        for i, source in enumerate(sites):
            mode = "local" if source == target else "other-site"
            found = at_site[(at_site["mode"] == mode) & (at_site["pretraining_sites"] == source)]
            values[i, j] = found["mean"].iloc[0] if len(found) else np.nan
        for i, mode in ((len(sites), "federated"), (len(sites) + 1, "central"), (len(sites) + 2, "scratch")):
            found = at_site[at_site["mode"] == mode]
            values[i, j] = found["mean"].iloc[0] if len(found) else np.nan
    scratch = values[-1]
    fig, ax = plt.subplots(figsize=(1.6 * len(sites) + 3.2, 0.55 * len(sources) + 1.6))
    image = ax.imshow(values, cmap="viridis", aspect="auto")
    for i in range(len(sources)):
        for j in range(len(sites)):
            if np.isfinite(values[i, j]):
                gain = "" if i == len(sources) - 1 else f"\n{values[i, j] - scratch[j]:+.3f}"
                ax.text(
                    j,
                    i,
                    f"{values[i, j]:.3f}{gain}",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if values[i, j] < np.nanmean(values) else "black",
                )
    ax.set_xticks(range(len(sites)), sites)
    ax.set_yticks(range(len(sources)), [f"pretrained at {s}" if s in sites else s for s in sources])
    ax.axhline(len(sites) - 0.5, color="white", linewidth=2)
    ax.set_xlabel("fine-tuned and evaluated at")
    fig.colorbar(image, ax=ax, label="held-out AUROC")
    ax.set_title(f"{task}, {size_label(size)} labelled patients: AUROC (gain over scratch)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def federated_vs_central(curves: pd.DataFrame, path: Path) -> Path:
    """Held-out NVP Recall@10 after every epoch (central, local) or round (federated)."""
    fig, ax = plt.subplots(figsize=(9.5, 4.2))
    for name, curve in curves.groupby("pretraining", sort=True):
        mode = curve["mode"].iloc[0]
        ax.plot(
            curve["step"],
            curve["recall@10"],
            marker="o",
            label=name,
            color=COLOURS.get(mode),
            linestyle={"central": "-", "federated": "-", "federated-loso": ":", "local": "--"}.get(mode, "-"),
            linewidth=2.2 if mode in ("central", "federated") else 1.0,
            alpha=1.0 if mode in ("central", "federated") else 0.7,
        )
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_xlabel("epoch (central, local) = round of one local epoch (federated)")
    ax.set_ylabel("NVP Recall@10\n(held-out patients of the pretraining sites)")
    ax.set_title("Pretraining: federated rounds vs central epochs, same passes over the data")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


PLAIN_NAMES = {
    "best-baseline": "best conventional model (trees or regression on code counts)",
    "scratch": "same network, trained on this hospital's labels only",
    "central": "pretrained on all hospitals' records pooled (not possible in practice)",
    "federated": "pretrained across hospitals without sharing records (federated)",
}


def labelled_patients_figure(frame: pd.DataFrame, task: str, path: Path) -> Path:
    """The report's first figure, for readers who are not modellers: AUROC averaged over sites
    against labelled patients, for the best baseline, scratch, federated and central."""
    sizes = sorted(frame["cohort_size"].unique(), key=lambda s: (s == 0, s))
    fig, ax = plt.subplots(figsize=(8, 5.4))
    for rank, mode in enumerate(PLAIN_NAMES):
        line = frame[frame["mode"] == mode].set_index("cohort_size").reindex(sizes).dropna(subset=["mean"])
        if not len(line):
            continue
        x = [sizes.index(s) + (rank - 1.5) * 0.04 for s in line.index]  # side by side: intervals stay readable
        _with_interval(ax, x, line, mode, PLAIN_NAMES[mode], capsize=4, linewidth=2.2)
    ax.set_xticks(range(len(sizes)), [size_label(s) for s in sizes])
    ax.set_xlabel("patients with a known outcome used to train at the hospital")
    ax.set_ylabel("AUROC on the hospital's other patients\n(0.5 = chance, 1 = perfect; average of hospitals)")
    ax.set_title(f"Predicting {task.replace('_', ' ')}: how much labelled data each approach needs")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def few_shot_curve(frame: pd.DataFrame, task: str, path: Path) -> Path:
    """EHRSHOT-style: AUROC (site average, 95% CI) against labelled positives in the cohort, log x."""
    fig, ax = plt.subplots(figsize=(8, 4.6))
    for mode in [m for m in MODES if m in set(frame["mode"])]:  # best-baseline is logreg or gbm, both shown
        line = frame[frame["mode"] == mode].sort_values("positives")
        _with_interval(ax, line["positives"], line, mode, mode, capsize=3)
    ax.set_xscale("log")
    low, high = frame["positives"].min(), frame["positives"].max()
    ax.set_xticks([t for t in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000) if low * 0.8 <= t <= high * 1.25])
    ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("labelled positives in the fine-tuning cohort (mean over sites and seeds)")
    ax.set_ylabel("held-out AUROC (site average, 95% CI)")
    ax.set_title(f"{task}: few-shot curve")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def reliability_plot(frame: pd.DataFrame, task: str, size: int, path: Path) -> Path:
    """Observed outcome rate against predicted probability, one panel per site, one line per mode."""
    sites = sorted(frame["site"].unique())
    fig, axes = plt.subplots(1, len(sites), figsize=(4.2 * len(sites), 4.0), sharey=True, squeeze=False)
    top = float(max(frame["predicted"].max(), frame["observed"].max(), 0.05)) * 1.05
    for ax, site in zip(axes[0], sites, strict=True):
        ax.plot([0, top], [0, top], color="black", linewidth=0.8, linestyle=":")
        for mode, line in frame[frame["site"] == site].groupby("mode", sort=False):
            ax.plot(line["predicted"], line["observed"], marker="o", markersize=3, label=mode, color=COLOURS.get(mode))
        ax.set_xlim(0, top)
        ax.set_ylim(0, top)
        ax.set_title(site)
        ax.set_xlabel("mean predicted probability (deciles)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("observed rate")
    axes[0][-1].legend(fontsize=8, loc="upper left")
    fig.suptitle(f"{task}, {size_label(size)} labelled patients: reliability (seeds pooled)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
