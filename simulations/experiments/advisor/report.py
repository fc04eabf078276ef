"""The advisor experiment's results.md and figures: measured beside predicted gain matrices per
held-out consortium, and predicted against measured gains for every candidate partner set."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib
import matplotlib.image
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from server.overview.predictor import TransferPredictor
from server.overview.signals import SIGNALS
from simulations.experiments.advisor.advice import Advice
from simulations.experiments.advisor.config import AdvisorConfig
from simulations.experiments.common import Check, check_lines, markdown_table, spearman

matplotlib.use("Agg")  # files only, never a window
SPEARMAN_GOAL, SHARE_GOAL = 0.7, 0.9


def _matrix(mine: pd.DataFrame, column: str) -> pd.DataFrame:
    singles = mine[mine["size"] == 1]
    return singles.pivot(index="site", columns="partners", values=column)


def plot_matrices(predicted: pd.DataFrame, path: Path) -> None:
    """One row per consortium: the measured single-partner gains beside the predicted ones."""
    consortia = sorted(predicted["consortium"].unique())
    fig, axes = plt.subplots(len(consortia), 2, figsize=(9, 4.3 * len(consortia)), squeeze=False)
    limit = float(np.nanmax(np.abs(predicted.loc[predicted["size"] == 1, ["gain", "predicted_gain"]].to_numpy())))
    for row, consortium in zip(axes, consortia, strict=True):
        mine = predicted[predicted["consortium"] == consortium]
        for ax, column, title in zip(row, ("gain", "predicted_gain"), ("measured", "predicted"), strict=True):
            image = _heatmap(ax, _matrix(mine, column), limit, f"{consortium}: {title}")
        fig.colorbar(image, ax=row, shrink=0.8, label="AUROC gain over scratch")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def _heatmap(ax: plt.Axes, matrix: pd.DataFrame, limit: float, title: str) -> matplotlib.image.AxesImage:
    image = ax.imshow(matrix.to_numpy(), cmap="RdBu", vmin=-limit, vmax=limit)
    ax.set_xticks(range(len(matrix.columns)), matrix.columns, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(matrix.index)), matrix.index, fontsize=8)
    for (i, j), value in np.ndenumerate(matrix.to_numpy()):
        if not np.isnan(value):
            ax.text(j, i, f"{value:+.2f}", ha="center", va="center", fontsize=7)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("pretrained on (partner)", fontsize=8)
    ax.set_ylabel("fine-tuned at", fontsize=8)
    return image


def plot_advice(advice: Advice, path: Path) -> None:
    """`claimpt advise`'s picture: the predicted gain of each single partner for each site."""
    matrix = advice.pair_matrix()
    limit = max(float(np.nanmax(np.abs(matrix.to_numpy()))), 0.01)
    fig, ax = plt.subplots(figsize=(1.2 * len(matrix.columns) + 2.5, 1.0 * len(matrix.index) + 1.8))
    image = _heatmap(ax, matrix, limit, "predicted AUROC gain over training from scratch")
    fig.colorbar(image, ax=ax, shrink=0.8)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def plot_scatter(predicted: pd.DataFrame, path: Path) -> None:
    """Predicted (leave-one-consortium-out) against measured gain, every candidate partner set."""
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for consortium, mine in predicted.groupby("consortium", sort=True):
        ax.scatter(mine["predicted_gain"], mine["gain"], s=14 + 6 * mine["size"], alpha=0.7, label=consortium)
    low = float(np.nanmin(predicted[["gain", "predicted_gain"]].to_numpy()))
    high = float(np.nanmax(predicted[["gain", "predicted_gain"]].to_numpy()))
    ax.plot([low, high], [low, high], color="grey", lw=1, ls="--")
    ax.axhline(0, color="black", lw=0.6)
    ax.set_xlabel("predicted AUROC gain (fitted without this consortium)")
    ax.set_ylabel("measured AUROC gain over scratch")
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def signal_table_by_consortium(predicted: pd.DataFrame) -> pd.DataFrame:
    """Each signal's own Spearman with the measured gain, per consortium (every candidate set):
    which signals predict on their own, and whether they agree across consortia."""
    rows = []
    for signal in SIGNALS:
        per = {str(c): spearman(g[signal], g["gain"]) for c, g in predicted.groupby("consortium", sort=True)}
        rows.append({"signal": signal, **{c: round(float(v), 2) for c, v in per.items()}})
    return pd.DataFrame(rows)


def checks(consortia: pd.DataFrame, sites: pd.DataFrame) -> list[Check]:
    held_out = len(consortia)
    advised, everyone = sites["recommended_gain"].mean(), sites["all_others_gain"].mean()
    rho = consortia["spearman_pairs"]
    share = consortia["share_of_best"]
    worse = int(consortia["sites_worse_than_scratch"].sum())
    return [
        (
            f"Spearman of predicted and measured pair gains >= {SPEARMAN_GOAL} on every held-out consortium",
            bool((rho >= SPEARMAN_GOAL).all()),
            f"{', '.join(f'{r:.2f}' for r in rho)} over {held_out} consortia; mean {rho.mean():.2f}",
        ),
        (
            f"the recommended partner sets reach >= {SHARE_GOAL:.0%} of the best candidate's gain",
            bool((share >= SHARE_GOAL).all()),
            f"{', '.join(f'{s:.0%}' for s in share)}",
        ),
        ("no site is recommended a set that leaves it worse than scratch", worse == 0, f"{worse} site(s)"),
        (
            "the advice gives the sites more than joining all the other sites would (no advisor needed for that)",
            bool(advised > everyone),
            f"{advised:.3f} against {everyone:.3f} mean AUROC gain over the {len(sites)} sites",
        ),
    ]


def write_report(
    out: Path,
    config: AdvisorConfig,
    predicted: pd.DataFrame,
    consortia: pd.DataFrame,
    sites: pd.DataFrame,
    predictor: TransferPredictor,
) -> Path:
    plot_matrices(predicted, out / "advisor_matrices.png")
    plot_scatter(predicted, out / "advisor_scatter.png")
    shift_files = {c: out / c / "shift.json" for c in consortia["consortium"]}
    shifts = {c: json.loads(path.read_text()) for c, path in shift_files.items() if path.exists()}
    shown = consortia.assign(
        shift=[", ".join(f"{k} {v:.1f}" for k, v in shifts.get(c, {}).items()) for c in consortia["consortium"]]
    ).round(3)
    coefficients = pd.DataFrame(
        {"signal": predictor.features, "coefficient (per SD)": np.round(predictor.coefficients, 4)}
    )
    lines = [
        "# Transfer advisor: predicted against measured transfer on held-out consortia",
        "",
        f"{config.consortia} simulated consortia of {config.sites} sites (about {config.patients:,} patients each, "
        f"shift per axis uniform in [0, {config.max_shift}]); task {config.task}, {config.cohort_size} labelled "
        f"patients, seeds {', '.join(map(str, config.seeds))}. Gain: held-out AUROC fine-tuned from the partners' "
        "pooled pretraining minus from scratch. Each consortium is predicted by a ridge fitted on the others only, "
        "its penalty and its margin (the predicted gain partners must exceed to be recommended) chosen on those "
        "others too.",
        "",
        "## Checks",
        "",
        *check_lines(checks(consortia, sites)),
        "",
        "## Per held-out consortium",
        "",
        "`seed_halves_pairs`: Spearman of the pair gains measured with the first half of the seeds against the "
        "second half: how reproducible the measurement itself is (a low value means the measured ranking is "
        "mostly noise, which no predictor can match). `spearman_pairs_site_means_known`: the same ranking as "
        "`spearman_pairs` had the predictor known each site's mean gain (its partners still ranked as it predicts "
        "them): the gap between the two is what predicting how much a site gains at all costs, the rest what "
        "ranking its partners costs.",
        "",
        markdown_table(shown),
        "",
        "## Per site: the advice followed",
        "",
        markdown_table(sites.round(3)),
        "",
        "## Each signal on its own",
        "",
        "Spearman of the signal with the measured gain over every candidate partner set of a consortium.",
        "",
        markdown_table(signal_table_by_consortium(predicted)),
        "",
        "## The predictor fitted on every consortium (predictor.json)",
        "",
        markdown_table(coefficients),
        "",
        f"intercept {predictor.intercept:+.4f}; task {predictor.task}; margin {predictor.margin:g}",
        "",
        "![matrices](advisor_matrices.png)",
        "",
        "![scatter](advisor_scatter.png)",
        "",
    ]
    path = out / "results.md"
    path.write_text("\n".join(lines))
    return path
