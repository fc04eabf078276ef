"""The consortium overview (experimental): what the sites' released summaries say about the
consortium before anything trains, and the gain the transfer predictor expects for each site from
joining all the others.

Per site: its training patients, its age mix in three bands, how much of its code mentions fall on
codes the others release too and how far its code distribution is from theirs, its task's positive
rate and the AUROC it reaches alone where it released them, and the predicted AUROC gain of
fine-tuning from the others' pretrained encoder rather than from scratch.

Experimental: the predictor is fitted on simulated consortia, and in the lab its partner advice
did no better than joining everyone (docs/results/advisor.md). It stays marked so until that
advice beats joining everyone with a paired interval excluding zero on at least three held-out
consortia. The predictor carries no interval, so none is shown."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from server.overview.predictor import TransferPredictor, candidate_gains
from shared_model.contract.site_summary import SiteSummary
from shared_model.data.paths import atomic_write_bytes

EXPERIMENTAL = (
    "EXPERIMENTAL: the predicted gains come from a predictor fitted on simulated consortia, whose "
    "partner advice has not beaten joining everyone (docs/results/advisor.md); they carry no interval."
)
#: the three broad age groups shown, by the summary's bands (shared_model.contract.site_summary.AGE_BANDS)
AGE_GROUPS = {
    "under 20": ("0-2", "2-5", "5-10", "10-15", "15-20"),
    "20-65": ("20-40", "40-65"),
    "65+": ("65+",),
}
COLUMNS = (
    "site",
    "patients",
    *(f"age {group}" for group in AGE_GROUPS),
    "code_coverage",
    "code_jsd",
    "task_rate",
    "own_auroc",
    "predicted_gain_joining_all",
)


@dataclass(frozen=True)
class ConsortiumOverview:
    """One row per site (COLUMNS), for the predictor's `task`."""

    table: pd.DataFrame
    task: str
    predictor: str

    def to_json(self) -> str:
        rows = self.table.astype(object).where(self.table.notna(), None).to_dict(orient="records")
        return json.dumps({"experimental": EXPERIMENTAL, "task": self.task, "predictor": self.predictor, "sites": rows})

    def to_markdown(self) -> str:
        header = "| " + " | ".join(COLUMNS) + " |"
        lines = [EXPERIMENTAL, "", f"Task: {self.task or 'none'}; predictor: {self.predictor}", "", header]
        lines.append("|---|" + "---:|" * (len(COLUMNS) - 1))
        for row in self.table.itertuples(index=False):
            cells = [row[0], f"{row[1]:,}", *(_shown(v) for v in row[2:])]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def write(self, out: Path) -> None:
        """overview.json and overview.md in `out` (each written whole or not at all)."""
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out / "overview.json", (self.to_json() + "\n").encode())
        atomic_write_bytes(out / "overview.md", (self.to_markdown() + "\n").encode())


def _shown(value: float) -> str:
    return "not released" if pd.isna(value) else f"{value:.3f}"


def age_mix(summary: SiteSummary) -> dict[str, float]:
    """The share of the site's released age-band counts in each of AGE_GROUPS (NaN: none released)."""
    total = sum(summary.age_band_counts.values())
    return {
        f"age {group}": sum(summary.age_band_counts.get(b, 0) for b in bands) / total if total else float("nan")
        for group, bands in AGE_GROUPS.items()
    }


def consortium_overview(summaries: dict[str, SiteSummary], predictor: TransferPredictor) -> ConsortiumOverview:
    """The overview of at least two sites' summaries."""
    # the predictor compares a site's candidates with its single partners: it needs them too
    signals = candidate_gains(summaries, predictor, max_partners=1)
    names = sorted(summaries)
    rows = []
    for site in names:
        everyone = "+".join(s for s in names if s != site)
        joined = signals[(signals["site"] == site) & (signals["partners"] == everyone)].iloc[0]
        summary = summaries[site]
        rows.append(
            {
                "site": site,
                "patients": summary.patients,
                **age_mix(summary),
                "code_coverage": joined["code_coverage"],
                "code_jsd": joined["code_jsd"],
                "task_rate": summary.task_rate(predictor.task or None),
                "own_auroc": summary.own_auroc_of(predictor.task or None),
                "predicted_gain_joining_all": joined["predicted_gain"],
            }
        )
    return ConsortiumOverview(pd.DataFrame(rows, columns=list(COLUMNS)), predictor.task, predictor.fitted_on)
