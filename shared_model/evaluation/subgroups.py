"""The demographic subgroups a clinical model is judged on: sex and age band at prediction time.

Both come from the sample's `demo` field (tensorize), so they need no second read of the data and
exist for every data source the pipeline reads.
"""

from __future__ import annotations

import numpy as np

from shared_model.tensors.tensorize import AGE_BUCKET_EDGES_YEARS, SEX_VALUES, Arrays

UNKNOWN = "unknown"
SEX_NAMES = {0: UNKNOWN, SEX_VALUES["F"]: "female", SEX_VALUES["M"]: "male"}


def _age_band_names() -> dict[int, str]:
    """Bucket id -> label: 0 unknown, then '<1', '1-2', ..., '18+' from the tensoriser's edges."""
    edges = AGE_BUCKET_EDGES_YEARS
    names = {0: UNKNOWN, 1: f"<{edges[0]}", len(edges) + 1: f"{edges[-1]}+"}
    names.update({i + 2: f"{low}-{high}" for i, (low, high) in enumerate(zip(edges, edges[1:], strict=False))})
    return names


AGE_BAND_NAMES = _age_band_names()


def demographic_groups(arrays: Arrays) -> dict[str, np.ndarray]:
    """Each sample's sex and age band (years at prediction time) as labels."""
    age_bucket, sex = arrays["demo"][:, 0].astype(int), arrays["demo"][:, 1].astype(int)
    return {
        "sex": np.array([SEX_NAMES.get(s, UNKNOWN) for s in sex], dtype=str),
        "age_band": np.array([AGE_BAND_NAMES.get(a, UNKNOWN) for a in age_bucket], dtype=str),
    }
