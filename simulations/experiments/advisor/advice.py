"""The lab's partner advice (`claimpt advise`, the advisor experiment): from the sites' summaries
and a predictor, the predicted gain of every candidate partner set for every site, and the set to
recommend. It stays in the lab until it beats joining everyone (docs/results/advisor.md); the
product shows the consortium overview (server/overview/).

A site is recommended the candidate with the largest predicted gain, and no partners at all when
no candidate is predicted to gain more than `margin` AUROC: the advisor would rather say "train
on your own" than send a site into a federation expected to hurt it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from server.overview.predictor import TransferPredictor, candidate_gains
from shared_model.contract.site_summary import SiteSummary
from shared_model.data.paths import atomic_write_bytes

NO_PARTNERS = ()


@dataclass(frozen=True)
class Advice:
    """`candidates`: site, partners, size and predicted_gain per candidate; `recommended`: the set
    per site (empty: train without partners)."""

    candidates: pd.DataFrame
    recommended: dict[str, tuple[str, ...]]
    margin: float

    def pair_matrix(self) -> pd.DataFrame:
        """Predicted gain of each single partner (columns) for each site (rows)."""
        singles = self.candidates[self.candidates["size"] == 1]
        return singles.pivot(index="site", columns="partners", values="predicted_gain")

    def to_json(self) -> str:
        return json.dumps(
            {
                "margin": self.margin,
                "recommended": {site: list(p) for site, p in self.recommended.items()},
                "candidates": self.candidates[["site", "partners", "predicted_gain"]].to_dict(orient="records"),
            },
            indent=2,
        )

    def write(self, out: Path) -> None:
        """advice.json and advice.md in `out` (each written whole or not at all)."""
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out / "advice.json", (self.to_json() + "\n").encode())
        atomic_write_bytes(out / "advice.md", (self.to_markdown() + "\n").encode())

    def to_markdown(self) -> str:
        lines = [
            "| site | recommended partners | predicted AUROC gain | all others |",
            "|---|---|---|---|",
        ]
        for site, partners in self.recommended.items():
            mine = self.candidates[self.candidates["site"] == site]
            everyone = mine.loc[mine["size"].idxmax(), "predicted_gain"]
            if partners:
                chosen = mine.loc[mine["partners"] == "+".join(partners), "predicted_gain"].iloc[0]
                lines.append(f"| {site} | {', '.join(partners)} | {chosen:+.3f} | {everyone:+.3f} |")
            else:
                lines.append(f"| {site} | none: train without partners | 0 | {everyone:+.3f} |")
        return "\n".join(lines)


def advise(
    summaries: dict[str, SiteSummary],
    predictor: TransferPredictor,
    *,
    max_partners: int = 2,
    margin: float | None = None,
) -> Advice:
    """Predicted gains of every candidate partner set of every site, and each site's recommendation
    (for the task the predictor was fitted on; `margin` None: the predictor's own)."""
    candidates = candidate_gains(summaries, predictor, max_partners)
    margin = predictor.margin if margin is None else margin
    return Advice(candidates, recommend(candidates, margin), margin)


def recommend(candidates: pd.DataFrame, margin: float) -> dict[str, tuple[str, ...]]:
    """Per site, the candidate with the largest `predicted_gain` if above `margin`, else none."""
    recommended: dict[str, tuple[str, ...]] = {}
    for site, mine in candidates.groupby("site", sort=True):
        best = mine.loc[mine["predicted_gain"].idxmax()]
        recommended[str(site)] = tuple(best["partners"].split("+")) if best["predicted_gain"] > margin else NO_PARTNERS
    return recommended
