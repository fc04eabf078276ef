"""Property tests at the data doors: random small MEDS directories and claims CSV pairs, valid
and damaged. Valid ones are read with every event kept; damaged ones raise DataValidationError,
never another exception."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared_model.data import DataValidationError, read_meds
from shared_model.data.claims_csv import convert_claims

CODES = ["ICD10CM/J45.909", "CPT/99213", "DE10", "LAB//GL", "ADMISSION", "RXNORM/745679"]
SPLIT_NAMES = ["train", "tuning", "held_out"]
#: examples per test; CLAIMPT_DAMAGE_EXAMPLES=3000 for a bulk run
EXAMPLES = settings(
    max_examples=int(os.environ.get("CLAIMPT_DAMAGE_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@st.composite
def meds_events(draw: st.DrawFn) -> pd.DataFrame:
    """1-4 subjects, each born on a day, with 0-6 coded events (some with values) after birth."""
    rows = []
    subjects = draw(st.lists(st.integers(0, 10**12), min_size=1, max_size=4, unique=True))
    for subject in subjects:
        birth = np.datetime64("1950-01-01", "s") + np.timedelta64(draw(st.integers(0, 60 * 365)), "D")
        rows.append((subject, birth, "MEDS_BIRTH", None))
        for _ in range(draw(st.integers(0, 6))):
            offset = np.timedelta64(draw(st.integers(0, 10**9)), "s")
            value = draw(st.none() | st.floats(-1e6, 1e6, allow_nan=False))
            rows.append((subject, birth + offset, draw(st.sampled_from(CODES)), value))
    frame = pd.DataFrame(rows, columns=["subject_id", "time", "code", "numeric_value"])
    frame["time"] = frame["time"].astype("datetime64[us]")
    return frame


def _table(frame: pd.DataFrame) -> pa.Table:
    return pa.table(
        {
            "subject_id": pa.array(frame["subject_id"], pa.int64()),
            "time": pa.array(frame["time"], pa.timestamp("us")),
            "code": pa.array(frame["code"], pa.string()),
            "numeric_value": pa.array(frame["numeric_value"], pa.float32()),
        }
    )


def _write(root: Path, frame: pd.DataFrame, *, bare: bool, by_split: bool) -> Path:
    """A MEDS root (data/ + metadata/) or a bare data folder, split into folders or not."""
    data = root if bare else root / "data"
    subjects = sorted(frame["subject_id"].unique())
    split_of = {s: SPLIT_NAMES[i % 3] for i, s in enumerate(subjects)}
    groups = frame.groupby(frame["subject_id"].map(split_of)) if by_split else [("all", frame)]
    for name, rows in groups:
        folder = data / name if by_split else data
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(_table(rows), folder / "0.parquet")
    if not bare:
        (root / "metadata").mkdir(parents=True)
        splits = pd.DataFrame({"subject_id": subjects, "split": [split_of[s] for s in subjects]})
        pq.write_table(pa.Table.from_pandas(splits, preserve_index=False), root / "metadata" / "subject_splits.parquet")
        (root / "metadata" / "dataset.json").write_text(json.dumps({"dataset_name": "random"}))
    return data


def _damage(root: Path, data: Path, kind: str, rng: np.random.Generator) -> None:
    shard = sorted(data.glob("**/*.parquet"))[0]
    table = pq.read_table(shard)
    if kind == "truncate":
        shard.write_bytes(shard.read_bytes()[: int(rng.integers(0, shard.stat().st_size))])
    elif kind == "not parquet":
        shard.write_bytes(rng.bytes(int(rng.integers(1, 400))))
    elif kind == "split names":
        path = root / "metadata" / "subject_splits.parquet"
        if path.exists():
            splits = pq.read_table(path)
            pq.write_table(splits.set_column(1, "split", pa.array(["test"] * splits.num_rows)), path)
        else:
            (data / "validation").mkdir()
            shutil.copy(shard, data / "validation" / "0.parquet")
    elif kind == "dataset.json":
        if (root / "metadata").is_dir():
            (root / "metadata" / "dataset.json").write_text("[" * 100_000)
    elif kind == "before birth":
        extra = pa.table(
            {
                "subject_id": pa.array([table.column("subject_id")[0].as_py()], pa.int64()),
                "time": pa.array([np.datetime64("1900-01-01", "us")], pa.timestamp("us")),
                "code": pa.array(["DE10"]),
                "numeric_value": pa.array([None], pa.float32()),
            }
        )
        pq.write_table(pa.concat_tables([table, extra]), shard)
    else:
        column, value = {
            "empty code": ("code", ""),
            "blank code": ("code", " \t"),
            "control code": ("code", "J45\n"),
            "null subject": ("subject_id", None),
            "negative subject": ("subject_id", -1),
            "text time": ("time", "yesterday"),
            "text value": ("numeric_value", "high"),
        }[kind]
        values = table.column(column).to_pylist()
        values[int(rng.integers(0, table.num_rows))] = value
        kind_of = pa.string() if isinstance(value, str) else table.column(column).type
        if isinstance(value, str) and column != "code":
            values = [str(v) for v in values]
            values[int(rng.integers(0, table.num_rows))] = value
        position = table.schema.get_field_index(column)
        pq.write_table(table.set_column(position, column, pa.array(values, kind_of)), shard)


DAMAGES = [
    "truncate",
    "not parquet",
    "split names",
    "dataset.json",
    "empty code",
    "blank code",
    "control code",
    "null subject",
    "negative subject",
    "text time",
    "text value",
    "before birth",
]


@EXAMPLES
@given(events=meds_events(), bare=st.booleans(), by_split=st.booleans())
def test_valid_meds_directories_are_read_with_every_event(events: pd.DataFrame, bare: bool, by_split: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        _write(Path(tmp) / "ds", events, bare=bare, by_split=by_split)
        dataset = read_meds(Path(tmp) / "ds")
    assert len(dataset.events) == len(events)
    assert sorted(dataset.events["code"].astype(str)) == sorted(events["code"])
    assert set(dataset.splits["subject_id"]) == set(events["subject_id"])


@EXAMPLES
@given(
    events=meds_events(),
    bare=st.booleans(),
    by_split=st.booleans(),
    damage=st.sampled_from(DAMAGES),
    seed=st.integers(0, 2**32 - 1),
)
def test_damaged_meds_directories_raise_data_validation_error_only(
    events: pd.DataFrame, bare: bool, by_split: bool, damage: str, seed: int
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "ds"
        data = _write(root, events, bare=bare, by_split=by_split)
        _damage(root, data, damage, np.random.default_rng(seed))
        try:
            read_meds(root)
        except DataValidationError:
            return
    # what leaves valid data: a bare folder has no dataset.json to break, and without split
    # folders another folder is a mere shard
    assert bare and (damage == "dataset.json" or (damage == "split names" and not by_split))


# --- claims CSV pairs ---


@st.composite
def claims_pair(draw: st.DrawFn) -> tuple[str, str, int]:
    ids = draw(st.lists(st.integers(0, 10**12), min_size=1, max_size=4, unique=True))
    patients = ["patient_id,birth_date,sex"]
    claims = ["patient_id,service_date,visit_type,code"]
    for pid in ids:
        born = pd.Timestamp("1950-01-01") + pd.Timedelta(days=draw(st.integers(0, 60 * 365)))
        patients.append(f"{pid},{born:%Y-%m-%d},{draw(st.sampled_from(['F', 'M', 'U']))}")
        for _ in range(draw(st.integers(0, 5))):
            day = born + pd.Timedelta(days=draw(st.integers(0, 30 * 365)))
            visit = draw(st.sampled_from(["IP", "OP", "ER", "RX"]))
            claims.append(f"{pid},{day:%Y-%m-%d},{visit},{draw(st.sampled_from([c for c in CODES if '/' in c]))}")
    if len(claims) == 1:
        claims.append(f"{ids[-1]},{born:%Y-%m-%d},OP,CPT/99213")  # the last patient, born on `born`
    return "\n".join(claims) + "\n", "\n".join(patients) + "\n", len(claims) - 1


@EXAMPLES
@given(pair=claims_pair())
def test_valid_claims_csv_pairs_keep_every_claim(pair: tuple[str, str, int]) -> None:
    claims, patients, n_claims = pair
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "claims.csv").write_text(claims)
        (tmp / "patients.csv").write_text(patients)
        dataset = read_meds(convert_claims(tmp / "claims.csv", tmp / "patients.csv", tmp / "meds"))
    code = dataset.events["code"].astype(str)
    assert (~code.str.startswith(("VISIT/", "SEX/", "MEDS_BIRTH"))).sum() == n_claims


@EXAMPLES
@given(pair=claims_pair(), which=st.sampled_from(["claims", "patients"]), cut=st.data())
def test_damaged_claims_csv_pairs_raise_data_validation_error_only(
    pair: tuple[str, str, int], which: str, cut: st.DataObject
) -> None:
    """One character of one file replaced, deleted or doubled, or a field emptied: the pair either
    still converts (the change kept it valid) or raises DataValidationError, nothing else."""
    claims, patients, _ = pair
    files = {"claims": claims, "patients": patients}
    text = files[which]
    position = cut.draw(st.integers(0, len(text) - 1))
    edit = cut.draw(st.sampled_from(["replace", "delete", "double", "junk line", "empty field"]))
    junk = cut.draw(st.sampled_from(['"', ",", "\x00", "é", "/", " ", "9" * 30, "2999-01-05", "\n"]))
    if edit == "replace":
        text = text[:position] + junk + text[position + 1 :]
    elif edit == "delete":
        text = text[:position] + text[position + 1 :]
    elif edit == "double":
        text = text[:position] + text[position] * 2 + text[position + 1 :]
    elif edit == "junk line":
        text = text + junk + "\n"
    else:
        lines = text.splitlines()
        line = cut.draw(st.integers(0, len(lines) - 1))
        fields = lines[line].split(",")
        fields[cut.draw(st.integers(0, len(fields) - 1))] = ""
        lines[line] = ",".join(fields)
        text = "\n".join(lines) + "\n"
    files[which] = text
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "claims.csv").write_bytes(files["claims"].encode("utf-8", "surrogatepass"))
        (tmp / "patients.csv").write_bytes(files["patients"].encode("utf-8", "surrogatepass"))
        try:
            convert_claims(tmp / "claims.csv", tmp / "patients.csv", tmp / "meds")
        except DataValidationError:
            assert not (tmp / "meds").exists()  # nothing written half-way
