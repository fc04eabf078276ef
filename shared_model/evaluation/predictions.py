"""Held-out predictions in the MEDS-DEV format, so that MEDS tools (meds-evaluation, MEDS-DEV's
leaderboard) read them: the task's label rows (subject_id, prediction_time, boolean_value) plus
predicted_boolean_value and predicted_boolean_probability."""

from __future__ import annotations

import meds
import numpy as np
import pandas as pd
import pyarrow as pa

from shared_model.tensors.tensorize import Arrays

PREDICTION_SCHEMA = pa.schema(
    [
        *[meds.LabelSchema.schema().field(c) for c in ("subject_id", "prediction_time", "boolean_value")],
        pa.field("predicted_boolean_value", pa.bool_()),
        pa.field("predicted_boolean_probability", pa.float32()),
    ]
)
THRESHOLD = 0.5


def probabilities(scores: np.ndarray, *, logits: bool) -> np.ndarray:
    """Scores as float32 probabilities (the sigmoid of logits)."""
    scores = np.asarray(scores, np.float64)
    return (1.0 / (1.0 + np.exp(-scores)) if logits else scores).astype(np.float32)


def meds_predictions(samples: Arrays, probabilities: np.ndarray, labels: pd.DataFrame) -> pa.Table:
    """One row per scored sample, with the prediction_time of the label row it was made for.

    Samples keep the prediction day only; a label row is matched by subject, day and label.
    Rows that share all three see the same visits (those strictly before the day), so they have
    the same score: which of them takes which row does not matter."""
    frame = pd.DataFrame(
        {
            "subject_id": samples["subject_id"].astype(np.int64),
            "day": samples["prediction_day"].astype(np.int64),
            "boolean_value": samples["label"] > 0.5,
            "predicted_boolean_probability": np.asarray(probabilities, np.float32),
        }
    )
    rows = labels[["subject_id", "prediction_time", "boolean_value"]].copy()
    rows["day"] = rows["prediction_time"].to_numpy().astype("datetime64[D]").astype(np.int64)
    keys = ["subject_id", "day", "boolean_value"]
    frame["nth"] = frame.groupby(keys).cumcount()
    rows["nth"] = rows.groupby(keys).cumcount()
    matched = frame.merge(rows, on=[*keys, "nth"], how="left", validate="one_to_one")
    if matched["prediction_time"].isna().any():
        raise ValueError("a scored sample has no label row: samples and labels are of different tasks")
    matched["predicted_boolean_value"] = matched["predicted_boolean_probability"] >= THRESHOLD
    matched = matched.sort_values(["subject_id", "prediction_time"], kind="mergesort")
    return pa.Table.from_pandas(matched[PREDICTION_SCHEMA.names], schema=PREDICTION_SCHEMA, preserve_index=False)
