"""Human-readable summary of a MEDS dataset (what `claimpt validate` prints)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from shared_model.data.meds import MedsDataset


@dataclass(frozen=True)
class LabelSummary:
    task: str
    rows: int
    positives: int

    @property
    def prevalence(self) -> float:
        return self.positives / self.rows if self.rows else float("nan")


@dataclass(frozen=True)
class DatasetSummary:
    name: str
    subjects: int
    events: int
    distinct_codes: int
    first_time: str
    last_time: str
    split_sizes: dict[str, int]
    vocabularies: dict[str, int]
    labels: tuple[LabelSummary, ...]

    def to_text(self) -> str:
        lines = [
            f"dataset        {self.name}",
            f"subjects       {self.subjects:,}",
            f"events         {self.events:,}",
            f"distinct codes {self.distinct_codes:,}",
            f"time span      {self.first_time} .. {self.last_time}",
            "splits         " + ", ".join(f"{k}={v:,}" for k, v in self.split_sizes.items()),
            "vocabularies   " + ", ".join(f"{k}={v:,}" for k, v in self.vocabularies.items()),
        ]
        for label in self.labels:
            lines.append(
                f"label {label.task}: {label.rows:,} rows, {label.positives:,} positive ({label.prevalence:.1%})"
            )
        return "\n".join(lines)


def vocabulary_of(codes: pd.Series | np.ndarray) -> np.ndarray:
    """The vocabulary part of `VOCAB/value` code strings ('' for codes without one)."""
    text = pd.Series(np.asarray(codes, dtype=object), dtype=object)
    return text.str.partition("/")[0].where(text.str.contains("/", regex=False), "").to_numpy()


def summarize(dataset: MedsDataset) -> DatasetSummary:
    events = dataset.events
    timed = events["time"].dropna()
    code_counts = events["code"].value_counts()
    code_counts = code_counts[code_counts > 0]
    vocab = pd.Series(code_counts.to_numpy(), index=vocabulary_of(code_counts.index))
    by_vocab = vocab.groupby(level=0).size().sort_values(ascending=False)
    labels = tuple(
        LabelSummary(task, len(frame), int(frame["boolean_value"].sum()))
        for task, frame in sorted(dataset.labels.items())
    )
    return DatasetSummary(
        name=str(dataset.metadata.get("dataset_name", dataset.root.name)),
        subjects=int(events["subject_id"].nunique()),
        events=len(events),
        distinct_codes=len(code_counts),
        first_time=str(timed.min().date()) if len(timed) else "-",
        last_time=str(timed.max().date()) if len(timed) else "-",
        split_sizes=dataset.splits["split"].value_counts().to_dict(),
        vocabularies={(k or "(none)"): int(v) for k, v in by_vocab.items()},
        labels=labels,
    )
