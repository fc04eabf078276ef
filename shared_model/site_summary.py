"""What a site may release before anyone trains: a k-anonymised summary of its population.

The transfer advisor (server/advisor/) predicts from these summaries which partners help which
site. Every count in a summary covers at least k train-split patients (a smaller count is left
out, as in the vocabulary round), so a summary says nothing the vocabulary round does not already
allow: which codes are common and how common, the age mix in broad bands, and the cohort's size.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd

from shared_model.data import MedsDataset
from shared_model.tasks import k_anonymous_train_code_counts, train_patients
from shared_model.vocabulary import BIRTH_CODE

#: lower edges of the age bands (years at the patient's last recorded event)
AGE_BANDS = (0, 2, 5, 10, 15, 20, 40, 65)
FORMAT = "claimpt-site-summary/1"


@dataclass(frozen=True)
class SiteSummary:
    """Patients per code and per age band, each count >= k, and the number of train patients."""

    patients: int
    code_counts: dict[str, int]
    age_band_counts: dict[str, int]
    k: int

    def __post_init__(self) -> None:
        small = [n for n in (*self.code_counts.values(), *self.age_band_counts.values()) if n < self.k]
        if small or self.patients < 0 or self.k < 1:
            raise ValueError(f"a site summary holds only counts >= k={self.k} (and k >= 1)")

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": FORMAT,
                "patients": self.patients,
                "k": self.k,
                "code_counts": self.code_counts,
                "age_band_counts": self.age_band_counts,
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> SiteSummary:
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"not a site summary (expected format {FORMAT!r})")
        return cls(
            patients=int(data["patients"]),
            code_counts={str(c): int(n) for c, n in data["code_counts"].items()},
            age_band_counts={str(b): int(n) for b, n in data["age_band_counts"].items()},
            k=int(data["k"]),
        )


def pooled(summaries: list[SiteSummary]) -> SiteSummary:
    """The summary of several sites together (what a partner set looks like to the advisor)."""
    codes: dict[str, int] = {}
    bands: dict[str, int] = {}
    for summary in summaries:
        for code, n in summary.code_counts.items():
            codes[code] = codes.get(code, 0) + n
        for band, n in summary.age_band_counts.items():
            bands[band] = bands.get(band, 0) + n
    return SiteSummary(sum(s.patients for s in summaries), codes, bands, min(s.k for s in summaries))


def band_label(lower: int) -> str:
    index = AGE_BANDS.index(lower)
    return f"{lower}-{AGE_BANDS[index + 1]}" if index + 1 < len(AGE_BANDS) else f"{lower}+"


def age_band_counts(dataset: MedsDataset) -> pd.Series:
    """Train-split patients per age band (age at the last recorded event)."""
    train = dataset.splits.loc[dataset.splits["split"] == "train", "subject_id"]
    events = dataset.events[dataset.events["subject_id"].isin(train)]
    timed = events.dropna(subset=["time"])
    birth = timed[timed["code"] == BIRTH_CODE].groupby("subject_id")["time"].min()
    last = timed.groupby("subject_id")["time"].max()
    years = ((last - birth).dropna().dt.days / 365.25).clip(lower=0)
    band = np.searchsorted(AGE_BANDS, years.to_numpy(), side="right") - 1
    labels = [band_label(AGE_BANDS[i]) for i in band]
    return pd.Series(labels, dtype=object).value_counts()


def site_summary(dataset: MedsDataset, k: int) -> SiteSummary:
    """The site's releasable summary under its k (codes and bands below k are left out)."""
    bands = age_band_counts(dataset)
    return SiteSummary(
        patients=train_patients(dataset),
        code_counts={str(c): int(n) for c, n in k_anonymous_train_code_counts(dataset, k).items()},
        age_band_counts={str(b): int(n) for b, n in bands[bands >= k].items()},
        k=k,
    )
