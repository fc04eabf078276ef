"""Read, validate and write MEDS datasets (docs/architecture.md §2).

A MEDS directory holds `data/**/*.parquet` (subject_id, time, code, numeric_value), optional
`metadata/codes.parquet`, `metadata/dataset.json`, `metadata/subject_splits.parquet`, and task
labels in `labels/<task>.parquet` or `labels|task_labels/<task>/**/*.parquet`. The `data/` folder
itself is accepted too (what MEDS pipelines hand over); without `subject_splits.parquet`, split
folders (`data/train/`, `data/tuning/`, `data/held_out/`) give the splits.

Validation is vectorised: every check computes a mask over all rows and reports the first
offending row (1-based within its file) with the count of the others.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import meds
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from shared_model.data.errors import DataValidationError
from shared_model.data.paths import atomic_directory, contained_file

log = logging.getLogger(__name__)

BIRTH_CODE = meds.birth_code
SPLITS = (meds.train_split, meds.tuning_split, meds.held_out_split)
LABEL_DIRS = ("labels", "task_labels")
_SPLIT_FRACTIONS = (0.8, 0.1, 0.1)
_SPLIT_NAMES = "a split named " + ", ".join(SPLITS[:-1]) + " or " + SPLITS[-1]


@dataclass(frozen=True, eq=False)
class MedsDataset:
    """A validated MEDS dataset held in memory as pandas frames.

    `events` columns: subject_id (int64), time (datetime64[us], NaT for static facts),
    code (category), numeric_value (float32, NaN when absent); sorted by subject and time.
    """

    root: Path
    events: pd.DataFrame
    splits: pd.DataFrame
    labels: Mapping[str, pd.DataFrame] = field(default_factory=dict)
    codes: pd.DataFrame = field(default_factory=lambda: _empty_codes())
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def subject_ids(self) -> np.ndarray:
        return self.splits["subject_id"].to_numpy()


# --------------------------------------------------------------------------------------------
# Layout
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MedsLayout:
    """Where a dataset's parts lie: `root` holds metadata/ and labels/; `data` the event files."""

    root: Path
    data: Path

    @classmethod
    def of(cls, path: str | Path) -> MedsLayout:
        """A MEDS root (with data/), or the data/ folder itself (its parent is the root when that
        holds metadata/ or labels/, else the folder is root and data at once)."""
        path = Path(path)
        if not path.is_dir():
            raise DataValidationError(path, "a MEDS dataset directory", found="no such directory")
        if (path / meds.data_subdirectory).is_dir():
            return cls(path, path / meds.data_subdirectory)
        parent = path.parent
        if path.name == meds.data_subdirectory and any((parent / d).is_dir() for d in ("metadata", *LABEL_DIRS)):
            return cls(parent, path)
        return cls(path, path)

    def data_files(self) -> list[Path]:
        """The event parquet files (a bare data folder's own metadata/ and labels/ excluded)."""
        files = [
            p
            for p in sorted(self.data.glob("**/*.parquet"))
            if p.relative_to(self.data).parts[0] not in ("metadata", *LABEL_DIRS)
        ]
        if not files:
            raise DataValidationError(
                self.data, "a MEDS dataset: parquet event files in data/ (or in the folder itself)"
            )
        return files

    def split_folder(self, path: Path) -> str | None:
        """The first folder of a data file below the data folder (None for a file directly in it)."""
        parts = path.relative_to(self.data).parts
        return parts[0] if len(parts) > 1 else None


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def read_meds(root: str | Path) -> MedsDataset:
    """Read and validate a MEDS directory; raise DataValidationError on any bad input."""
    layout = MedsLayout.of(root)
    events = _concat_validated_events(layout.root, layout.data_files())
    subjects = np.unique(events["subject_id"].to_numpy())
    splits = _read_splits(layout, subjects)
    labels = _read_labels(layout.root, subjects)
    codes = _read_codes(layout.root)
    metadata = _read_dataset_json(layout.root)
    return MedsDataset(layout.root, events, splits, labels, codes, metadata)


def iter_event_files(root: str | Path) -> Iterator[tuple[Path, pd.DataFrame]]:
    """Validated events one data file at a time, for bounded-memory streaming.

    MEDS keeps each subject in one shard, so the birth check runs per file here.
    """
    layout = MedsLayout.of(root)
    for path in layout.data_files():
        table = read_parquet_table(layout.root, path)
        if table.num_rows == 0:
            continue
        events = _validated_events(table, path)
        _check_not_before_birth(events, [path], np.zeros(len(events), np.int32), np.arange(len(events)))
        yield path, events


def subject_ids(root: str | Path) -> np.ndarray:
    """All subject ids of a MEDS directory, reading only that column of each data file."""
    layout = MedsLayout.of(root)
    ids = [_file_subjects(layout, path) for path in layout.data_files()]
    return np.unique(np.concatenate(ids))


def _file_subjects(layout: MedsLayout, path: Path) -> np.ndarray:
    table = read_parquet_table(layout.root, path, columns=["subject_id"])
    return _integer_ids(table, path, "subject_id")


def read_parquet_table(root: Path, path: Path, columns: list[str] | None = None) -> pa.Table:
    """Read one parquet file that must lie inside `root`, as a DataValidationError on failure."""
    resolved = contained_file(root, path)
    if resolved.stat().st_size == 0:
        raise DataValidationError(path, "a non-empty parquet file", found="0 bytes")
    try:
        if columns is not None:
            names = pq.read_schema(resolved).names
            missing = [c for c in columns if c not in names]
            if missing:
                raise DataValidationError(
                    path, f"a column named '{missing[0]}'", column=missing[0], found=f"columns {names}"
                )
        return pq.read_table(resolved, columns=columns)
    except (pa.ArrowException, OSError) as exc:
        raise DataValidationError(path, "a readable parquet file", found=str(exc)) from exc


def _concat_validated_events(root: Path, files: list[Path]) -> pd.DataFrame:
    frames, file_ids = [], []
    for file_id, path in enumerate(files):
        table = read_parquet_table(root, path)
        if table.num_rows == 0:
            log.warning("%s holds no rows; skipped", path)
            continue
        frames.append(_validated_events(table, path))
        file_ids.append(np.full(table.num_rows, file_id, dtype=np.int32))
    if not frames:
        raise DataValidationError(root / "data", "at least one event row in data/*.parquet")
    events = pd.concat(frames, ignore_index=True)
    file_of_row = np.concatenate(file_ids)
    row_in_file = np.concatenate([np.arange(len(f)) for f in frames])
    _check_not_before_birth(events, files, file_of_row, row_in_file)
    order = np.lexsort((_time_key(events["time"]), events["subject_id"].to_numpy()))
    events = events.iloc[order].reset_index(drop=True)
    events["code"] = events["code"].astype("category")
    return events


def _validated_events(table: pa.Table, path: Path) -> pd.DataFrame:
    _require_columns(table, path, ("subject_id", "time", "code"))
    subject_id = _integer_ids(table, path, "subject_id")
    time = _timestamps(table, path, "time", allow_null=True)
    code = _codes(table, path)
    if "numeric_value" in table.column_names:
        numeric = _floats(table, path, "numeric_value")
    else:
        numeric = np.full(table.num_rows, np.nan, dtype=np.float32)
    return pd.DataFrame({"subject_id": subject_id, "time": time, "code": code, "numeric_value": numeric})


def _check_not_before_birth(
    events: pd.DataFrame, files: list[Path], file_of_row: np.ndarray, row_in_file: np.ndarray
) -> None:
    is_birth = (events["code"] == BIRTH_CODE).to_numpy()
    if not is_birth.any():
        return
    births = events.loc[is_birth].groupby("subject_id")["time"].min()
    birth_of_row = events["subject_id"].map(births)
    bad = (events["time"] < birth_of_row).to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataValidationError(
            files[file_of_row[i]],
            f"an event time on or after the subject's {BIRTH_CODE} ({birth_of_row.iloc[i]})",
            row=int(row_in_file[i]) + 1,
            column="time",
            found=str(events["time"].iloc[i]),
            more=int(bad.sum()) - 1,
        )


def read_splits(root: str | Path, subjects: np.ndarray) -> pd.DataFrame:
    """The subject splits of a MEDS directory: metadata/subject_splits.parquet, else the split
    folders of the data files, else assigned by a hash of the subject id."""
    return _read_splits(MedsLayout.of(root), np.asarray(subjects))


def read_labels(root: str | Path, subjects: np.ndarray) -> dict[str, pd.DataFrame]:
    return _read_labels(MedsLayout.of(root).root, np.asarray(subjects))


def _read_splits(layout: MedsLayout, subjects: np.ndarray) -> pd.DataFrame:
    path = layout.root / meds.subject_splits_filepath
    if not path.exists():
        by_folder = _folder_splits(layout)
        if by_folder is not None:
            return by_folder[by_folder["subject_id"].isin(subjects)].reset_index(drop=True)
        log.info("%s not found and no split folders: assigning splits 80/10/10 by subject id hash", path)
        return assign_splits(subjects)
    table = read_parquet_table(layout.root, path)
    _require_columns(table, path, ("subject_id", "split"))
    splits = pd.DataFrame(
        {
            "subject_id": _integer_ids(table, path, "subject_id"),
            "split": _strings(table, path, "split"),
        }
    )
    _fail_first(
        splits["subject_id"].duplicated().to_numpy(),
        path,
        "subject_id",
        "each subject in exactly one split",
        splits["subject_id"].to_numpy(),
    )
    _fail_first(~splits["split"].isin(SPLITS).to_numpy(), path, "split", _SPLIT_NAMES, splits["split"].to_numpy())
    known = splits[splits["subject_id"].isin(subjects)]
    missing = np.setdiff1d(subjects, known["subject_id"].to_numpy())
    if missing.size:
        log.warning("%d subject(s) have no split in %s; assigned by hash", missing.size, path)
        known = pd.concat([known, assign_splits(missing)], ignore_index=True)
    return known.sort_values("subject_id", ignore_index=True)


def _folder_splits(layout: MedsLayout) -> pd.DataFrame | None:
    """Splits from folder names (`data/train/*.parquet`, ...), or None when no folder is named
    after a split (then folders are mere shards). A folder or file outside the split folders, or
    a subject in two of them, is refused: those subjects would silently leave every task."""
    files = layout.data_files()
    folders = [layout.split_folder(p) for p in files]
    if not any(f in SPLITS for f in folders):
        return None
    frames = []
    for path, folder in zip(files, folders, strict=True):
        if folder not in SPLITS:
            place = layout.data / folder if folder else path
            raise DataValidationError(place, f"data files in split folders only: {_SPLIT_NAMES}", found=str(folder))
        frames.append(pd.DataFrame({"subject_id": np.unique(_file_subjects(layout, path)), "split": folder}))
    splits = pd.concat(frames, ignore_index=True).drop_duplicates()
    twice = splits["subject_id"].duplicated()
    if twice.any():
        subject = int(splits["subject_id"][twice].iloc[0])
        raise DataValidationError(
            layout.data,
            "each subject's files in one split folder",
            found=f"a subject in {sorted(splits.loc[splits['subject_id'] == subject, 'split'])}",
            more=int(twice.sum()) - 1,
        )
    return splits.sort_values("subject_id", ignore_index=True)


def assign_splits(subjects: np.ndarray, fractions: tuple[float, float, float] = _SPLIT_FRACTIONS) -> pd.DataFrame:
    """Deterministic train/tuning/held_out split (80/10/10 by default) from a hash of each subject id."""
    subjects = np.asarray(subjects, dtype=np.int64)
    u = _splitmix64(subjects.astype(np.uint64)) / np.float64(2**64)
    cuts = np.cumsum(fractions)[:-1]
    split = np.asarray(SPLITS, dtype=object)[np.searchsorted(cuts, u, side="right")]
    return pd.DataFrame({"subject_id": subjects, "split": split}).sort_values("subject_id", ignore_index=True)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return (z ^ (z >> np.uint64(31))).astype(np.float64)


def label_files(root: str | Path) -> dict[str, list[Path]]:
    """Task name -> its label parquet files (flat `labels/<task>.parquet` or sharded dirs)."""
    root = MedsLayout.of(root).root
    found: dict[str, list[Path]] = {}
    for dirname in LABEL_DIRS:
        base = root / dirname
        if not base.is_dir():
            continue
        for path in sorted(base.glob("*.parquet")):
            found.setdefault(path.stem, []).append(path)
        for task_dir in sorted(p for p in base.iterdir() if p.is_dir()):
            shards = sorted(task_dir.glob("**/*.parquet"))
            if shards:
                found.setdefault(task_dir.name, []).extend(shards)
    return found


def _read_labels(root: Path, subjects: np.ndarray) -> dict[str, pd.DataFrame]:
    return {task: _read_task_labels(root, paths, subjects) for task, paths in label_files(root).items()}


def _read_task_labels(root: Path, paths: list[Path], subjects: np.ndarray) -> pd.DataFrame:
    frames = []
    for path in paths:
        table = read_parquet_table(root, path)
        _require_columns(table, path, ("subject_id", "prediction_time", "boolean_value"))
        frame = pd.DataFrame(
            {
                "subject_id": _integer_ids(table, path, "subject_id"),
                "prediction_time": _timestamps(table, path, "prediction_time"),
                "boolean_value": _booleans(table, path, "boolean_value"),
            }
        )
        _fail_first(
            ~np.isin(frame["subject_id"].to_numpy(), subjects),
            path,
            "subject_id",
            "a subject_id present in data/",
            frame["subject_id"].to_numpy(),
        )
        frame["_file"] = str(path)
        frame["_row"] = np.arange(len(frame)) + 1
        frames.append(frame)
    labels = pd.concat(frames, ignore_index=True)
    dup = labels.duplicated(["subject_id", "prediction_time"], keep="first").to_numpy()
    if dup.any():
        i = int(np.flatnonzero(dup)[0])
        raise DataValidationError(
            labels["_file"].iloc[i],
            "one label row per (subject_id, prediction_time)",
            row=int(labels["_row"].iloc[i]),
            column="prediction_time",
            found=f"duplicate of subject {labels['subject_id'].iloc[i]} at {labels['prediction_time'].iloc[i]}",
            more=int(dup.sum()) - 1,
        )
    labels = labels.drop(columns=["_file", "_row"])
    return labels.sort_values(["subject_id", "prediction_time"], ignore_index=True)


def read_codes(root: str | Path) -> pd.DataFrame:
    """`metadata/codes.parquet` (code, description, parent_codes), empty when absent."""
    return _read_codes(MedsLayout.of(root).root)


def _read_codes(root: Path) -> pd.DataFrame:
    path = root / meds.code_metadata_filepath
    if not path.exists():
        return _empty_codes()
    table = read_parquet_table(root, path)
    _require_columns(table, path, ("code",))
    codes = pd.DataFrame({"code": _codes(table, path)})
    if "description" in table.column_names:
        codes["description"] = table.column("description").to_pandas()
    else:
        codes["description"] = None
    if "parent_codes" in table.column_names:
        parents = table.column("parent_codes")
        if not pa.types.is_list(parents.type) and not pa.types.is_large_list(parents.type):
            raise DataValidationError(
                path, "parent_codes of type list<string>", column="parent_codes", found=str(parents.type)
            )
        codes["parent_codes"] = [list(p) if p is not None else [] for p in parents.to_pylist()]
    else:
        codes["parent_codes"] = [[] for _ in range(len(codes))]
    return codes


def _read_dataset_json(root: Path) -> dict[str, Any]:
    path = root / meds.dataset_metadata_filepath
    if not path.exists():
        return {}
    contained_file(root, path)
    try:
        value = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataValidationError(path, "valid JSON", found=str(exc)) from exc
    except RecursionError as exc:  # `[[[[...` deeper than the parser's stack
        raise DataValidationError(path, "a JSON object (not nested thousands of levels deep)") from exc
    if not isinstance(value, dict):
        raise DataValidationError(path, "a JSON object", found=type(value).__name__)
    return value


def _empty_codes() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "code": pd.Series(dtype=object),
            "description": pd.Series(dtype=object),
            "parent_codes": pd.Series(dtype=object),
        }
    )


# --------------------------------------------------------------------------------------------
# Column checks of MEDS tables
# --------------------------------------------------------------------------------------------


def _require_columns(table: pa.Table, path: Path, columns: tuple[str, ...]) -> None:
    for column in columns:
        if column not in table.column_names:
            raise DataValidationError(
                path,
                f"a column named '{column}'",
                column=column,
                found=f"columns {table.column_names}",
            )


def _fail_first(mask: np.ndarray, path: Path, column: str, expected: str, values: Any) -> None:
    bad = np.flatnonzero(mask)
    if bad.size:
        i = int(bad[0])
        found = values[i]
        raise DataValidationError(
            path,
            expected,
            row=i + 1,
            column=column,
            found=found.item() if isinstance(found, np.generic) else found,
            more=int(bad.size) - 1,
        )


def _integer_ids(table: pa.Table, path: Path, column: str) -> np.ndarray:
    col = table.column(column)
    kind = col.type
    expected = f"non-negative integer ids (int64) in '{column}'"
    if pa.types.is_integer(kind):
        values = col.to_numpy(zero_copy_only=False)
        if col.null_count:
            _fail_first(col.is_null().to_numpy(zero_copy_only=False), path, column, expected, values)
        values = values.astype(np.int64)
    elif pa.types.is_floating(kind):
        values = col.to_numpy(zero_copy_only=False).astype(np.float64)
        bad = ~np.isfinite(values) | (values != np.round(values))
        _fail_first(bad, path, column, expected, values)
        values = values.astype(np.int64)
    else:
        raise DataValidationError(path, expected, column=column, found=f"column of type {kind}")
    _fail_first(values < 0, path, column, expected, values)
    return values


def _timestamps(table: pa.Table, path: Path, column: str, allow_null: bool = False) -> np.ndarray:
    col = table.column(column)
    kind = col.type
    if pa.types.is_timestamp(kind):
        if kind.tz is not None:
            col = col.cast(pa.timestamp(kind.unit, tz="UTC")).cast(pa.timestamp(kind.unit))
        col = col.cast(pa.timestamp("us"))
    elif pa.types.is_date(kind):
        col = col.cast(pa.timestamp("us"))
    else:
        raise DataValidationError(path, f"a timestamp column '{column}'", column=column, found=f"column of type {kind}")
    values = col.to_numpy(zero_copy_only=False).astype("datetime64[us]")
    if not allow_null:
        _fail_first(np.isnat(values), path, column, "a timestamp (not null)", values)
    return values


def _strings(table: pa.Table, path: Path, column: str) -> np.ndarray:
    col = table.column(column)
    kind = col.type
    if pa.types.is_dictionary(kind):
        col = col.cast(kind.value_type)
        kind = col.type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        raise DataValidationError(path, f"a string column '{column}'", column=column, found=f"column of type {kind}")
    values = col.to_numpy(zero_copy_only=False).astype(object)
    empty = col.is_null().to_numpy(zero_copy_only=False)
    empty |= pa.compute.equal(pa.compute.utf8_length(col), 0).fill_null(True).to_numpy(zero_copy_only=False)
    _fail_first(empty, path, column, f"a non-empty string in '{column}'", values)
    return values


def _codes(table: pa.Table, path: Path) -> np.ndarray:
    """The `code` column: non-empty strings that are not whitespace only and hold no control
    characters (each distinct code checked once)."""
    values = _strings(table, path, "code")
    column = table.column("code")
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    encoded = pa.compute.dictionary_encode(column.combine_chunks())
    bad = pa.compute.match_substring_regex(encoded.dictionary, r"[\x00-\x1f\x7f]|^\s+$")
    mask = bad.take(encoded.indices).to_numpy(zero_copy_only=False)
    _fail_first(mask, path, "code", "a code with no control characters and not only whitespace", values)
    return values


def _floats(table: pa.Table, path: Path, column: str) -> np.ndarray:
    col = table.column(column)
    if not (pa.types.is_floating(col.type) or pa.types.is_integer(col.type) or pa.types.is_null(col.type)):
        raise DataValidationError(
            path, f"a numeric column '{column}' (float32)", column=column, found=f"column of type {col.type}"
        )
    return col.cast(pa.float32()).to_numpy(zero_copy_only=False).astype(np.float32)


def _booleans(table: pa.Table, path: Path, column: str) -> np.ndarray:
    col = table.column(column)
    if not pa.types.is_boolean(col.type):
        raise DataValidationError(
            path, f"a boolean column '{column}'", column=column, found=f"column of type {col.type}"
        )
    nulls = col.is_null().to_numpy(zero_copy_only=False)
    values = col.to_numpy(zero_copy_only=False)
    _fail_first(nulls, path, column, "true or false (not null)", values)
    return values.astype(bool)


def _time_key(times: pd.Series) -> np.ndarray:
    """Sort key that puts static facts (NaT) before every timed event."""
    key = times.to_numpy().astype("datetime64[us]").astype(np.int64)
    return np.where(np.isnat(times.to_numpy()), np.iinfo(np.int64).min, key)


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------

# What we write, from the `meds` package's schemas: the columns we fill (no text_value, and only
# boolean labels). Reading does not use them: meds' validation names neither row nor value, and
# we accept more than they do (float or date columns that convert exactly), so the checks above
# are ours.
EVENT_SCHEMA = pa.schema([meds.DataSchema.schema().field(c) for c in ("subject_id", "time", "code", "numeric_value")])
LABEL_SCHEMA = pa.schema(
    [meds.LabelSchema.schema().field(c) for c in ("subject_id", "prediction_time", "boolean_value")]
)
CODES_SCHEMA = meds.CodeMetadataSchema.schema()
SPLITS_SCHEMA = meds.SubjectSplitSchema.schema()


def write_meds(
    target: str | Path,
    events: pd.DataFrame,
    splits: pd.DataFrame,
    *,
    labels: Mapping[str, pd.DataFrame] | None = None,
    codes: pd.DataFrame | None = None,
    metadata: Mapping[str, Any] | None = None,
    subjects_per_shard: int = 50_000,
    overwrite: bool = False,
) -> Path:
    """Write a MEDS directory atomically: `data/<split>/<shard>.parquet` plus metadata and labels.

    Events are sorted by subject and time (static facts first, producer order kept within a
    time); output bytes depend only on the inputs.
    """
    target = Path(target)
    with atomic_directory(target, overwrite=overwrite) as tmp:
        _write_event_shards(tmp / "data", events, splits, subjects_per_shard)
        (tmp / "metadata").mkdir()
        pq.write_table(
            pa.Table.from_pandas(splits[["subject_id", "split"]], schema=SPLITS_SCHEMA, preserve_index=False),
            tmp / meds.subject_splits_filepath,
        )
        codes = codes if codes is not None else _empty_codes()
        pq.write_table(
            pa.Table.from_pandas(
                codes[["code", "description", "parent_codes"]], schema=CODES_SCHEMA, preserve_index=False
            ),
            tmp / meds.code_metadata_filepath,
        )
        (tmp / meds.dataset_metadata_filepath).write_text(
            json.dumps(dict(metadata or {}), indent=2, sort_keys=True) + "\n"
        )
        if labels:
            (tmp / "labels").mkdir()
            for task, frame in sorted(labels.items()):
                table = pa.Table.from_pandas(
                    frame[["subject_id", "prediction_time", "boolean_value"]],
                    schema=LABEL_SCHEMA,
                    preserve_index=False,
                )
                pq.write_table(table, tmp / "labels" / f"{task}.parquet")
    return target


def _code_array(code: pd.Series) -> pa.Array:
    """Arrow strings from a (possibly categorical) code column without a per-row Python loop."""
    if isinstance(code.dtype, pd.CategoricalDtype):
        dictionary = pa.array(np.asarray(code.cat.categories, dtype=object), pa.string())
        indices = pa.array(code.cat.codes.to_numpy(np.int32))
        return pa.DictionaryArray.from_arrays(indices, dictionary).cast(pa.string())
    return pa.array(code.to_numpy(dtype=object), pa.string())


def _write_event_shards(data_dir: Path, events: pd.DataFrame, splits: pd.DataFrame, subjects_per_shard: int) -> None:
    subject = events["subject_id"].to_numpy(np.int64)
    order = np.lexsort((_time_key(events["time"]), subject))
    split_sorted = splits.sort_values("subject_id")
    split_subjects = split_sorted["subject_id"].to_numpy(np.int64)
    position = np.searchsorted(split_subjects, subject)
    clipped = np.minimum(position, len(split_subjects) - 1)
    if (split_subjects[clipped] != subject).any():
        raise ValueError("every event subject needs a split")
    split_of_event = split_sorted["split"].to_numpy()[clipped]
    table = pa.table(
        {
            "subject_id": pa.array(subject, pa.int64()),
            "time": pa.array(events["time"].to_numpy().astype("datetime64[us]"), pa.timestamp("us")),
            "code": _code_array(events["code"]),
            "numeric_value": pa.array(events["numeric_value"].to_numpy(np.float32), pa.float32()),
        },
        schema=EVENT_SCHEMA,
    )
    for split_name in pd.unique(split_sorted["split"]):
        rows = order[split_of_event[order] == split_name]
        if rows.size == 0:
            continue
        subjects_here = subject[rows]
        starts = np.flatnonzero(np.r_[True, subjects_here[1:] != subjects_here[:-1]])
        shard_starts = starts[::subjects_per_shard]
        bounds = np.r_[shard_starts, rows.size]
        (data_dir / str(split_name)).mkdir(parents=True)
        for shard, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
            pq.write_table(table.take(rows[lo:hi]), data_dir / str(split_name) / f"{shard}.parquet")
