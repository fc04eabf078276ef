"""What a site may release before anyone trains: a k-anonymised summary of its population.

The consortium overview (server/overview/) is built from these summaries, and the lab's transfer
advisor (simulations/experiments/advisor/) predicts from them which partners help which site.
Every count in a summary covers at least k train-split patients (a smaller count is left out, as
in the vocabulary round), so a summary says nothing the vocabulary round does not already
allow: which codes are common and how common, the age mix in broad bands, and the cohort's size.
Per labelled task it also says how many train patients have a label and how many of them a
positive one (both counts, and the negatives, >= k): a task's base rate decides how much a small
cohort can learn on its own, and so how much a site stands to gain from partners. Per task it may
also give the AUROC the site reaches alone (shared_model/training/own_auroc.py), to 0.01, measured on at
least k held-out positives and k negatives.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from shared_model.data import MedsDataset
from shared_model.data.paths import atomic_write_bytes
from shared_model.model.config import ClaimTransformerConfig
from shared_model.tensors.tasks import k_anonymous_train_code_counts, train_patients, train_subjects
from shared_model.tensors.vocabulary import is_birth_code

#: lower edges of the age bands (years at the patient's last recorded event)
AGE_BANDS = (0, 2, 5, 10, 15, 20, 40, 65)
FORMAT = "claimpt-site-summary/1"
PRECISION = 2  # decimals of a released own AUROC


#: bounds a recipe must keep, whoever sends it: a request beyond them is a mistake or an attempt
#: to spend the site's machine
MAX_SEEDS, MAX_EPOCHS, MAX_COHORT = 32, 200, 100_000


@dataclass(frozen=True)
class OwnAurocRecipe:
    """How a site measures its own AUROC: `cohort_size` labelled train patients, the default
    transformer (with `time_encoding`) from scratch for at most `epochs`, one run per seed of
    `seeds`. The advisor experiment's config writes it (`AdvisorConfig.own_auroc_recipe`)."""

    cohort_size: int
    epochs: int
    seeds: tuple[int, ...]
    time_encoding: str

    def __post_init__(self) -> None:
        ok = (
            20 <= self.cohort_size <= MAX_COHORT
            and 1 <= self.epochs <= MAX_EPOCHS
            and 1 <= len(self.seeds) <= MAX_SEEDS
            and len(set(self.seeds)) == len(self.seeds)
            and all(isinstance(s, int) and s >= 0 for s in self.seeds)
        )
        if not ok:
            raise ValueError(
                f"an own-AUROC recipe needs 20 <= cohort_size <= {MAX_COHORT}, 1 <= epochs <= {MAX_EPOCHS} "
                f"and 1 to {MAX_SEEDS} distinct seeds >= 0"
            )
        ClaimTransformerConfig(vocab_size=3, n_groups=1, time_encoding=self.time_encoding)  # validates it

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "seeds": list(self.seeds)}

    @classmethod
    def from_dict(cls, data: Any) -> OwnAurocRecipe:
        """A recipe from JSON-like data; anything else is refused with ValueError."""
        if not isinstance(data, dict) or set(data) != {"cohort_size", "epochs", "seeds", "time_encoding"}:
            raise ValueError("an own-AUROC recipe gives cohort_size, epochs, seeds and time_encoding")
        numbers = [data["cohort_size"], data["epochs"], *(data["seeds"] if isinstance(data["seeds"], list) else [None])]
        if any(isinstance(n, bool) or not isinstance(n, int) for n in numbers):
            raise ValueError("an own-AUROC recipe's cohort_size, epochs and seeds are integers")
        return cls(data["cohort_size"], data["epochs"], tuple(data["seeds"]), str(data["time_encoding"]))


@dataclass(frozen=True)
class SiteSummary:
    """Patients per code and per age band, each count >= k, the number of train patients, per
    task (labelled train patients, of whom positive) with the positives and negatives >= k, and per
    task the AUROC the site reaches alone (`own_auroc`, to 0.01)."""

    patients: int
    code_counts: dict[str, int]
    age_band_counts: dict[str, int]
    k: int
    task_counts: dict[str, tuple[int, int]] = field(default_factory=dict)
    own_auroc: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        tasks = [n for labelled, positive in self.task_counts.values() for n in (positive, labelled - positive)]
        counts = [*self.code_counts.values(), *self.age_band_counts.values(), *tasks]
        if any(n < self.k for n in counts) or self.patients < 0 or self.k < 1:
            raise ValueError(f"a site summary holds only counts >= k={self.k} (and k >= 1)")
        if any(not 0 <= a <= 1 or round(a, PRECISION) != a for a in self.own_auroc.values()):
            raise ValueError(f"a site summary's own AUROCs lie in [0, 1], to {PRECISION} decimals")

    def task_rate(self, task: str | None) -> float:
        """The share of labelled train patients with a positive label for `task` (NaN if unknown)."""
        if task not in self.task_counts:
            return float("nan")
        labelled, positive = self.task_counts[task]
        return positive / labelled

    def own_auroc_of(self, task: str | None) -> float:
        """The AUROC the site reaches alone on `task` (NaN if not released)."""
        return self.own_auroc.get(task, float("nan")) if task is not None else float("nan")

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": FORMAT,
                "patients": self.patients,
                "k": self.k,
                "code_counts": self.code_counts,
                "age_band_counts": self.age_band_counts,
                "task_counts": {t: {"labelled": n, "positive": p} for t, (n, p) in self.task_counts.items()},
                "own_auroc": self.own_auroc,
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
            task_counts={
                str(t): (int(c["labelled"]), int(c["positive"])) for t, c in data.get("task_counts", {}).items()
            },
            own_auroc={str(t): float(a) for t, a in data.get("own_auroc", {}).items()},
        )


def pooled(summaries: list[SiteSummary]) -> SiteSummary:
    """The summary of several sites together (what a partner set looks like to the advisor); a
    task's counts are pooled only when every site reports them. Own AUROCs describe one site
    each and are not pooled."""
    codes: dict[str, int] = {}
    bands: dict[str, int] = {}
    for summary in summaries:
        for code, n in summary.code_counts.items():
            codes[code] = codes.get(code, 0) + n
        for band, n in summary.age_band_counts.items():
            bands[band] = bands.get(band, 0) + n
    everyones = set.intersection(*(set(s.task_counts) for s in summaries))
    tasks = {
        task: (sum(s.task_counts[task][0] for s in summaries), sum(s.task_counts[task][1] for s in summaries))
        for task in sorted(everyones)
    }
    return SiteSummary(sum(s.patients for s in summaries), codes, bands, min(s.k for s in summaries), tasks)


def band_label(lower: int) -> str:
    index = AGE_BANDS.index(lower)
    return f"{lower}-{AGE_BANDS[index + 1]}" if index + 1 < len(AGE_BANDS) else f"{lower}+"


def age_band_counts(dataset: MedsDataset) -> pd.Series:
    """Train-split patients per age band (age at the last recorded event)."""
    train = train_subjects(dataset)
    events = dataset.events[dataset.events["subject_id"].isin(train)]
    timed = events.dropna(subset=["time"])
    birth = timed[is_birth_code(timed["code"])].groupby("subject_id")["time"].min()
    last = timed.groupby("subject_id")["time"].max()
    years = ((last - birth).dropna().dt.days / 365.25).clip(lower=0)
    band = np.searchsorted(AGE_BANDS, years.to_numpy(), side="right") - 1
    labels = [band_label(AGE_BANDS[i]) for i in band]
    return pd.Series(labels, dtype=object).value_counts()


def labelled_and_positive(dataset: MedsDataset, task: str, subjects: pd.Series) -> tuple[int, int]:
    """(patients among `subjects` with a label for `task`, those with a positive one)."""
    labels = dataset.labels[task]
    mine = labels[labels["subject_id"].isin(subjects)]
    return int(mine["subject_id"].nunique()), int(mine.loc[mine["boolean_value"], "subject_id"].nunique())


def task_counts(dataset: MedsDataset, k: int) -> dict[str, tuple[int, int]]:
    """Per labelled task: (train patients with a label, those with a positive one), for the tasks
    whose positives and negatives both number at least k (others are left out)."""
    train = train_subjects(dataset)
    counts = {}
    for task in sorted(dataset.labels):
        labelled, positive = labelled_and_positive(dataset, task, train)
        if min(positive, labelled - positive) >= k:
            counts[str(task)] = (labelled, positive)
    return counts


def site_summary(
    dataset: MedsDataset, k: int, *, with_tasks: bool = True, own_auroc: dict[str, float | None] | None = None
) -> SiteSummary:
    """The site's releasable summary under its k (codes, bands and tasks below k are left out);
    without `with_tasks` (the site's policy), no task counts at all. `own_auroc`: per task, the
    value the site releases (`shared_model.training.own_auroc.measure_own_auroc`; None: nothing)."""
    bands = age_band_counts(dataset)
    return SiteSummary(
        patients=train_patients(dataset),
        code_counts={str(c): int(n) for c, n in k_anonymous_train_code_counts(dataset, k).items()},
        age_band_counts={str(b): int(n) for b, n in bands[bands >= k].items()},
        k=k,
        task_counts=task_counts(dataset, k) if with_tasks else {},
        own_auroc={task: value for task, value in (own_auroc or {}).items() if value is not None},
    )


def save_summaries(summaries: dict[str, SiteSummary], directory: Path) -> None:
    """`directory`/NAME.json per summary, each written whole or not at all."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, summary in summaries.items():
        atomic_write_bytes(directory / f"{name}.json", (summary.to_json() + "\n").encode())
