"""Judge the predictor on consortia it never saw: for each consortium, fit on all the others,
predict its gains, and compare with what the transfer measurement found."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from server.overview.signals import signal_table
from shared_model.contract.site_summary import SiteSummary
from simulations.experiments.advisor.advice import recommend
from simulations.experiments.advisor.config import AdvisorConfig
from simulations.experiments.advisor.fit import fit_predictor
from simulations.experiments.common import spearman

log = logging.getLogger(__name__)


def read_summaries(consortium_dir: Path) -> dict[str, SiteSummary]:
    return {p.stem: SiteSummary.from_json(p.read_text()) for p in sorted((consortium_dir / "summaries").glob("*.json"))}


def gain_table(out: Path, gains: pd.DataFrame, task: str) -> pd.DataFrame:
    """The measured gains (one row per consortium, site and partner set, as `measured_gains`
    gives them) with every signal, from the consortium's summaries."""
    frames = []
    for consortium, measured in gains.groupby("consortium", sort=True):
        unmeasured = measured["gain"].isna()  # a held-out set of one class has no AUROC
        if unmeasured.any():
            log.warning("%s: %d candidate(s) without a measured gain left out", consortium, int(unmeasured.sum()))
        measured = measured[~unmeasured].reset_index(drop=True)
        pairs = [(s, tuple(p.split("+"))) for s, p in zip(measured["site"], measured["partners"], strict=True)]
        summaries = read_summaries(out / str(consortium))
        signals = signal_table(summaries, pairs, task).drop(columns=["site", "partners"])
        frames.append(pd.concat([measured, signals], axis=1))
    table = pd.concat(frames, ignore_index=True)
    table["size"] = table["partners"].str.count(r"\+") + 1
    return table


@dataclass(frozen=True)
class Tuning:
    """The predictor's two choices, both made on training consortia only: the ridge penalty and
    the margin a predicted gain must exceed before partners are recommended."""

    alpha: float
    margin: float


def _held_out_predictions(table: pd.DataFrame, tuning_for: Callable[[pd.DataFrame], Tuning]) -> pd.DataFrame:
    """Each consortium's gains predicted by a ridge fitted on the other consortia only, tuned by
    `tuning_for` on those other consortia: `predicted_gain`, `alpha` and `margin` columns."""
    predicted = table.assign(predicted_gain=np.nan, alpha=np.nan, margin=np.nan)
    for consortium in table["consortium"].unique():
        held_out = table["consortium"] == consortium
        tuning = tuning_for(table[~held_out])
        model = fit_predictor(table[~held_out], alpha=tuning.alpha)
        predicted.loc[held_out, "predicted_gain"] = model.predict(table[held_out])
        predicted.loc[held_out, ["alpha", "margin"]] = tuning.alpha, tuning.margin
    return predicted


def tune(table: pd.DataFrame, alphas: tuple[float, ...], margins: tuple[float, ...]) -> Tuning:
    """Leave one consortium of `table` out at a time: the penalty whose predictions rank each
    site's candidates best (mean Spearman over the sites: the penalty is the pair part's, and the
    pair part decides only that ranking), then the margin whose advice, from those predictions,
    gives the sites the largest mean gain (the smallest such margin on a tie)."""
    if table["consortium"].nunique() < 2:
        return Tuning(alphas[len(alphas) // 2], min(margins))
    inner = {alpha: _held_out_predictions(table, lambda _, a=alpha: Tuning(a, 0.0)) for alpha in alphas}

    def ranking(alpha: float) -> float:
        by_site = inner[alpha].groupby(["consortium", "site"])
        return mean_known([spearman(g["predicted_gain"], g["gain"]) for _, g in by_site])

    alpha = max(alphas, key=ranking)

    def advised_gain(margin: float) -> float:
        return float(judge(inner[alpha].assign(margin=margin))[1]["recommended_gain"].mean())

    return Tuning(alpha, max(sorted(margins), key=advised_gain))


def leave_one_consortium_out(
    table: pd.DataFrame, alphas: tuple[float, ...], margins: tuple[float, ...] = (0.0,)
) -> pd.DataFrame:
    """`table` with `predicted_gain` from a predictor fitted on the other consortia only, its
    penalty (`alpha`) and `margin` chosen on those other consortia too."""
    return _held_out_predictions(table, lambda training: tune(training, alphas, margins))


def mean_known(values: list[float]) -> float:
    """The mean of the values that are not NaN; NaN when none is."""
    known = [v for v in values if not np.isnan(v)]
    return float(np.mean(known)) if known else float("nan")


def with_site_means_known(singles: pd.DataFrame) -> pd.Series:
    """The predicted gains shifted, site by site, so that their mean is the site's measured mean:
    a predictor that knew how much each site gains on average, and ranked its partners as this one
    does. Its Spearman against the measured gains tells which part of the ranking fails."""
    by_site = singles.groupby("site")
    return singles["predicted_gain"] - by_site["predicted_gain"].transform("mean") + by_site["gain"].transform("mean")


def _share(gains: pd.Series, best: pd.Series) -> float:
    """The sites' summed gain as a share of what the best candidates would have given them."""
    return float(gains.sum() / best.sum()) if best.sum() > 0 else float("nan")


def judge(predicted: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per consortium: Spearman of predicted and measured gains (single partners, every candidate,
    each site's own candidates: how well it ranks one site's options, and the single partners
    again with each site's mean gain known: how well it would rank them if only the site level
    were right), the seed halves' own agreement (the ceiling noise allows), and what following the
    advice (at the consortium's `margin`) gives each site against the best candidate and against
    the advice any site could follow without an advisor: all the other sites. Also per site."""
    per_site, per_consortium = [], []
    for consortium, mine in predicted.groupby("consortium", sort=True):
        singles = mine[mine["size"] == 1]
        chosen, rows = recommend(mine, float(mine["margin"].iloc[0])), []
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
                "margin": float(mine["margin"].iloc[0]),
                "spearman_pairs": spearman(singles["predicted_gain"], singles["gain"]),
                "spearman_all_sets": spearman(mine["predicted_gain"], mine["gain"]),
                "spearman_within_sites": mean_known(
                    [spearman(g["predicted_gain"], g["gain"]) for _, g in mine.groupby("site")]
                ),
                "spearman_pairs_site_means_known": spearman(with_site_means_known(singles), singles["gain"]),
                "seed_halves_pairs": spearman(singles["gain_first_half"], singles["gain_second_half"]),
                "recommended_gain": sites["recommended_gain"].mean(),
                "best_gain": sites["best_gain"].mean(),
                "all_others_gain": sites["all_others_gain"].mean(),
                "share_of_best": _share(sites["recommended_gain"], sites["best_gain"]),
                "all_others_share_of_best": _share(sites["all_others_gain"], sites["best_gain"]),
                "sites_worse_than_scratch": int((sites["recommended_gain"] < 0).sum()),
            }
        )
    return pd.DataFrame(per_consortium), pd.DataFrame(per_site)


def evaluate_and_report(out: Path, config: AdvisorConfig, gains: pd.DataFrame) -> Path:
    """predictions.csv, predictor.json (fitted on every consortium), the plots and results.md in `out`."""
    from simulations.experiments.advisor.report import write_report

    table = gain_table(out, gains, config.task)
    predicted = leave_one_consortium_out(table, config.ridge_alphas, config.margins)
    consortia, sites = judge(predicted)
    predicted.to_csv(out / "predictions.csv", index=False)
    tuning = tune(table, config.ridge_alphas, config.margins)
    fitted_on = f"{table['consortium'].nunique()} simulated consortia ({out.name}), ridge alpha {tuning.alpha:g}"
    final = fit_predictor(
        table,
        alpha=tuning.alpha,
        task=config.task,
        margin=tuning.margin,
        fitted_on=fitted_on,
        own_auroc=config.own_auroc_recipe,
    )
    (out / "predictor.json").write_text(final.to_json() + "\n")
    return write_report(out, config, predicted, consortia, sites, final)
