"""Judge the predictor on consortia it never saw: for each consortium, fit on all the others,
predict its gains, and compare with what the transfer measurement found."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from server.advisor import TransferPredictor, recommend, signal_table
from shared_model.site_summary import SiteSummary
from simulations.experiments.advisor.config import AdvisorConfig

log = logging.getLogger(__name__)
MARGIN = 0.0  # the advisor's default: recommend partners only when it predicts a gain


def read_summaries(consortium_dir: Path) -> dict[str, SiteSummary]:
    return {p.stem: SiteSummary.from_json(p.read_text()) for p in sorted((consortium_dir / "summaries").glob("*.json"))}


def gain_table(out: Path, gains: pd.DataFrame, task: str) -> pd.DataFrame:
    """One row per (consortium, site, partner set): the measured gain (mean over seeds), its
    first and second halves of the seeds (how reproducible the measurement is), and every signal."""
    frames = []
    for consortium, group in gains.groupby("consortium", sort=True):
        seeds = sorted(group["seed"].unique())
        half = seeds[: max(len(seeds) // 2, 1)]
        measured = group.groupby(["site", "partners"], as_index=False).agg(gain=("gain", "mean"))
        unmeasured = measured["gain"].isna()  # a held-out set of one class has no AUROC
        if unmeasured.any():
            log.warning("%s: %d candidate(s) without a measured gain left out", consortium, int(unmeasured.sum()))
            measured = measured[~unmeasured].reset_index(drop=True)
        first = group[group["seed"].isin(half)].groupby(["site", "partners"])["gain"].mean()
        second = group[~group["seed"].isin(half)].groupby(["site", "partners"])["gain"].mean()
        keys = pd.MultiIndex.from_frame(measured[["site", "partners"]])
        measured["gain_first_half"] = first.reindex(keys).to_numpy()
        measured["gain_second_half"] = second.reindex(keys).to_numpy()
        pairs = [(s, tuple(p.split("+"))) for s, p in zip(measured["site"], measured["partners"], strict=True)]
        summaries = read_summaries(out / str(consortium))
        signals = signal_table(summaries, pairs, task).drop(columns=["site", "partners"])
        frames.append(pd.concat([measured, signals], axis=1).assign(consortium=consortium))
    table = pd.concat(frames, ignore_index=True)
    table["size"] = table["partners"].str.count(r"\+") + 1
    return table


def _held_out_predictions(table: pd.DataFrame, alpha_for: Callable[[pd.DataFrame], float]) -> pd.DataFrame:
    """Each consortium's gains predicted by a ridge fitted on the other consortia only, with the
    penalty `alpha_for` picks from those other consortia: `predicted_gain` and `alpha` columns."""
    predicted = table.assign(predicted_gain=np.nan, alpha=np.nan)
    for consortium in table["consortium"].unique():
        held_out = table["consortium"] == consortium
        alpha = alpha_for(table[~held_out])
        model = TransferPredictor.fit(table[~held_out], alpha=alpha)
        predicted.loc[held_out, "predicted_gain"] = model.predict(table[held_out])
        predicted.loc[held_out, "alpha"] = alpha
    return predicted


def choose_alpha(table: pd.DataFrame, alphas: tuple[float, ...]) -> float:
    """The ridge penalty whose leave-one-consortium-out predictions within `table` rank the
    measured gains best (mean Spearman over consortia): the only tuning, and on training data."""
    if table["consortium"].nunique() < 2:
        return alphas[len(alphas) // 2]

    def score(alpha: float) -> float:
        predicted = _held_out_predictions(table, lambda _: alpha).groupby("consortium")
        return float(np.nanmean([spearman(g["predicted_gain"], g["gain"]) for _, g in predicted]))

    return max(alphas, key=score)


def leave_one_consortium_out(table: pd.DataFrame, alphas: tuple[float, ...]) -> pd.DataFrame:
    """`table` with `predicted_gain` from a predictor fitted on the other consortia only, its
    penalty (`alpha`) chosen among `alphas` on those other consortia too."""
    return _held_out_predictions(table, lambda training: choose_alpha(training, alphas))


def spearman(a: pd.Series, b: pd.Series) -> float:
    """Spearman over the rows where both are known; NaN with fewer than 3."""
    ok = a.notna() & b.notna()
    return float(spearmanr(a[ok], b[ok]).statistic) if ok.sum() >= 3 else float("nan")


def judge(predicted: pd.DataFrame, margin: float = MARGIN) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per consortium: Spearman of predicted and measured gains (single partners, and every
    candidate), the seed halves' own agreement (the ceiling noise allows), and what following the
    advice gives each site against the best candidate and all the other sites. Also per site."""
    per_site, per_consortium = [], []
    for consortium, mine in predicted.groupby("consortium", sort=True):
        singles = mine[mine["size"] == 1]
        chosen, rows = recommend(mine, margin), []
        for site, partners in chosen.items():
            at_site = mine[mine["site"] == site]
            gain = at_site.set_index("partners")["gain"]
            everyone = at_site.loc[at_site["size"].idxmax(), "partners"]
            rows.append(
                {
                    "consortium": consortium,
                    "site": site,
                    "recommended": "+".join(partners) or "none",
                    "recommended_gain": float(gain["+".join(partners)]) if partners else 0.0,
                    "best": gain.idxmax() if gain.max() > 0 else "none",
                    "best_gain": max(float(gain.max()), 0.0),  # no partners is always a candidate
                    "all_others_gain": float(gain[everyone]),
                }
            )
        per_site.extend(rows)
        sites = pd.DataFrame(rows)
        per_consortium.append(
            {
                "consortium": consortium,
                "spearman_pairs": spearman(singles["predicted_gain"], singles["gain"]),
                "spearman_all_sets": spearman(mine["predicted_gain"], mine["gain"]),
                "seed_halves_pairs": spearman(singles["gain_first_half"], singles["gain_second_half"]),
                "recommended_gain": sites["recommended_gain"].mean(),
                "best_gain": sites["best_gain"].mean(),
                "all_others_gain": sites["all_others_gain"].mean(),
                "share_of_best": sites["recommended_gain"].sum() / sites["best_gain"].sum()
                if sites["best_gain"].sum() > 0
                else float("nan"),
                "sites_worse_than_scratch": int((sites["recommended_gain"] < 0).sum()),
            }
        )
    return pd.DataFrame(per_consortium), pd.DataFrame(per_site)


def evaluate_and_report(out: Path, config: AdvisorConfig, gains: pd.DataFrame) -> Path:
    """predictions.csv, predictor.json (fitted on every consortium), the plots and results.md in `out`."""
    from simulations.experiments.advisor.report import write_report

    table = gain_table(out, gains, config.task)
    predicted = leave_one_consortium_out(table, config.ridge_alphas)
    consortia, sites = judge(predicted)
    predicted.to_csv(out / "predictions.csv", index=False)
    alpha = choose_alpha(table, config.ridge_alphas)
    fitted_on = f"{table['consortium'].nunique()} simulated consortia ({out.name}), ridge alpha {alpha:g}"
    final = TransferPredictor.fit(table, alpha=alpha, task=config.task, fitted_on=fitted_on)
    (out / "predictor.json").write_text(final.to_json() + "\n")
    return write_report(out, config, predicted, consortia, sites, final)
