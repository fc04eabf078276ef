"""Task labels the standard way: an ACES task configuration (package `es-aces`) run over a MEDS
dataset, one data file at a time (MEDS keeps each subject in one file), written as
`labels/<task>.parquet` with the MEDS label schema.

Any ACES configuration works (predicates on codes and values, windows relative to a trigger); its
`label` window gives `boolean_value` and its `index_timestamp` the `prediction_time`."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa

from shared_model.data.errors import DataValidationError
from shared_model.data.meds import LABEL_SCHEMA, iter_event_files
from shared_model.data.paths import atomic_write_parquet


def load_task_config(path: Path):
    """The ACES task configuration at `path`, or a DataValidationError naming what is wrong."""
    from aces.config import TaskExtractorConfig

    path = Path(path)
    if not path.is_file():
        raise DataValidationError(path, "an ACES task configuration (YAML)", found="no such file")
    try:
        return TaskExtractorConfig.load(config_path=path)
    except Exception as exc:  # ACES raises ValueError, KeyError, TypeError, yaml errors... on bad configs
        raise DataValidationError(path, "a valid ACES task configuration", found=_said(exc)) from exc


def extract_labels(config_path: Path, data: Path) -> pd.DataFrame:
    """subject_id, prediction_time, boolean_value of every subject and trigger the task selects."""
    import polars as pl
    from aces import predicates, query
    from omegaconf import OmegaConf

    load_task_config(config_path)  # a bad configuration is refused before any data is read
    frames = []
    for path, _ in iter_event_files(data):  # each file passes our own checks before ACES reads it
        config = load_task_config(config_path)  # ACES' query changes the configuration it is given
        data_config = OmegaConf.create({"path": str(path), "standard": "meds"})
        try:
            predicates_df = predicates.get_predicates_df(config, data_config)
            # ACES builds its window boundaries in microseconds and cannot stack them with another
            # resolution (SchemaError on nanosecond data, as CoreBEHRT writes it): one resolution
            predicates_df = predicates_df.with_columns(pl.col("timestamp").cast(pl.Datetime("us")))
            result = query.query(config, predicates_df)
        except Exception as exc:  # a predicate on a column this file lacks, a window that cannot be built...
            raise DataValidationError(path, "data the ACES task can be run on", found=_said(exc)) from exc
        if len(result) and "label" not in result.columns:
            raise DataValidationError(config_path, "a task configuration with a `label` window (binary task)")
        if len(result):
            frames.append(
                pd.DataFrame(
                    {
                        "subject_id": result["subject_id"].to_numpy(),
                        "prediction_time": result["index_timestamp"].to_numpy().astype("datetime64[us]"),
                        "boolean_value": result["label"].to_numpy() > 0,
                    }
                )
            )
    if not frames:
        raise DataValidationError(data, f"subjects selected by the task {Path(config_path).name}", found="none")
    labels = pd.concat(frames, ignore_index=True).drop_duplicates(["subject_id", "prediction_time"])
    return labels.sort_values(["subject_id", "prediction_time"], ignore_index=True)


def write_labels(labels: pd.DataFrame, target: Path) -> Path:
    """`labels` as a MEDS label file, written atomically."""
    return atomic_write_parquet(target, pa.Table.from_pandas(labels, schema=LABEL_SCHEMA, preserve_index=False))


def _said(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
