"""How different are the sites? Code-distribution divergence and label prevalence."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.spatial.distance import jensenshannon

from shared_model.data import MedsDataset


def code_distribution(dataset: MedsDataset) -> pd.Series:
    """Share of timed events carried by each code."""
    timed = dataset.events.loc[dataset.events["time"].notna(), "code"]
    counts = timed.value_counts()
    counts = counts[counts > 0]
    return counts / counts.sum()


def js_divergence_matrix(datasets: dict[str, MedsDataset]) -> pd.DataFrame:
    """Pairwise Jensen-Shannon divergence (base 2, in [0, 1]) between site code distributions."""
    dists = {name: code_distribution(ds) for name, ds in datasets.items()}
    union = sorted(set().union(*(d.index for d in dists.values())))
    aligned = {name: d.reindex(union, fill_value=0.0).to_numpy() for name, d in dists.items()}
    names = list(datasets)
    values = np.array([[jensenshannon(aligned[a], aligned[b], base=2) ** 2 for b in names] for a in names])
    return pd.DataFrame(values, index=names, columns=names)


def label_prevalence(datasets: dict[str, MedsDataset]) -> pd.DataFrame:
    rows = {
        name: {task: float(frame["boolean_value"].mean()) for task, frame in ds.labels.items()}
        for name, ds in datasets.items()
    }
    return pd.DataFrame(rows).T
