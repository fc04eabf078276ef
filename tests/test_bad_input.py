"""Every kind of bad input raises DataValidationError naming file, row and column; the CLI exits 2
and writes nothing."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from shared_model.data import DataValidationError, read_meds
from shared_model.data.claims_csv import convert_claims
from simulations.cli.app import app


def _first_shard(root: Path) -> Path:
    return sorted((root / "data").glob("**/*.parquet"))[0]


def _edit_parquet(path: Path, edit: Callable[[pa.Table], pa.Table]) -> None:
    pq.write_table(edit(pq.read_table(path)), path)


def _set(column: str, row: int, value: object, kind: pa.DataType | None = None) -> Callable[[pa.Table], pa.Table]:
    def edit(table: pa.Table) -> pa.Table:
        values = table.column(column).to_pylist()
        values[row] = value
        index = table.column_names.index(column)
        return table.set_column(index, column, pa.array(values, kind or table.schema.field(column).type))

    return edit


# (case id, file to edit relative to the dataset, edit, expected row, expected column)
MEDS_ROW_CASES = [
    ("negative subject id", "data", _set("subject_id", 2, -5), 3, "subject_id"),
    (
        "non-integer subject id",
        "data",
        lambda t: t.set_column(
            0, "subject_id", pa.array([1.5] + [float(x) for x in t.column("subject_id").to_pylist()[1:]])
        ),
        1,
        "subject_id",
    ),
    ("null code", "data", _set("code", 1, None), 2, "code"),
    ("empty code", "data", _set("code", 3, ""), 4, "code"),
    ("whitespace-only code", "data", _set("code", 3, " "), 4, "code"),
    ("newline code", "data", _set("code", 2, "\n"), 3, "code"),
    ("control character inside a code", "data", _set("code", 4, "ICD10CM/J45\x00"), 5, "code"),
    ("event before birth", "data", None, None, "time"),
    (
        "duplicate label rows",
        "labels/asthma.parquet",
        lambda t: pa.concat_tables([t, t.slice(0, 1)]),
        3,
        "prediction_time",
    ),
    ("label subject not in data", "labels/asthma.parquet", _set("subject_id", 1, 999), 2, "subject_id"),
    ("null label value", "labels/asthma.parquet", _set("boolean_value", 0, None), 1, "boolean_value"),
    ("null prediction time", "labels/asthma.parquet", _set("prediction_time", 1, None), 2, "prediction_time"),
    (
        "duplicate split rows",
        "metadata/subject_splits.parquet",
        lambda t: pa.concat_tables([t, t.slice(1, 1)]),
        3,
        "subject_id",
    ),
]


def _event_before_birth(table: pa.Table) -> pa.Table:
    codes = table.column("code").to_pylist()
    times = table.column("time").to_pylist()
    birth_row = codes.index("MEDS_BIRTH")
    times[birth_row + 1] = times[birth_row].replace(year=times[birth_row].year - 1)
    return table.set_column(1, "time", pa.array(times, pa.timestamp("us")))


@pytest.mark.parametrize(
    ("case", "target", "edit", "row", "column"), MEDS_ROW_CASES, ids=[c[0] for c in MEDS_ROW_CASES]
)
def test_meds_row_errors_name_file_row_and_column(tiny_meds: Path, case: str, target: str, edit, row, column) -> None:
    path = _first_shard(tiny_meds) if target == "data" else tiny_meds / target
    if case == "event before birth":
        edit = _event_before_birth
        codes = pq.read_table(path).column("code").to_pylist()
        row = codes.index("MEDS_BIRTH") + 2
    _edit_parquet(path, edit)
    with pytest.raises(DataValidationError) as info:
        read_meds(tiny_meds)
    err = info.value
    assert Path(err.file) == path
    assert (err.row, err.column) == (row, column)
    assert str(path) in str(err) and f"row {row}" in str(err) and f"column '{column}'" in str(err)


@pytest.mark.parametrize(
    ("column", "values", "type_text"),
    [
        ("time", ["2015-01-01"], "string"),
        ("subject_id", ["abc"], "string"),
        ("numeric_value", ["high"], "string"),
    ],
)
def test_wrong_dtype_names_file_and_column(tiny_meds: Path, column: str, values: list, type_text: str) -> None:
    path = _first_shard(tiny_meds)
    _edit_parquet(
        path, lambda t: t.set_column(t.column_names.index(column), column, pa.array(values * t.num_rows, pa.string()))
    )
    with pytest.raises(DataValidationError) as info:
        read_meds(tiny_meds)
    assert info.value.column == column and Path(info.value.file) == path
    assert type_text in str(info.value)


def test_missing_column_is_named(tiny_meds: Path) -> None:
    path = _first_shard(tiny_meds)
    _edit_parquet(path, lambda t: t.drop_columns(["code"]))
    with pytest.raises(DataValidationError, match="column 'code'") as info:
        read_meds(tiny_meds)
    assert Path(info.value.file) == path


def test_empty_parquet_file_is_rejected(tiny_meds: Path) -> None:
    path = _first_shard(tiny_meds)
    path.write_bytes(b"")
    with pytest.raises(DataValidationError, match="non-empty") as info:
        read_meds(tiny_meds)
    assert Path(info.value.file) == path


def test_path_outside_dataset_is_rejected(tiny_meds: Path, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.parquet"
    outside.write_bytes(_first_shard(tiny_meds).read_bytes())
    link = tiny_meds / "data" / "train" / "zz_escape.parquet"
    os.symlink(outside, link)
    with pytest.raises(DataValidationError, match="inside the dataset directory") as info:
        read_meds(tiny_meds)
    assert Path(info.value.file) == link


# ------------------------------------------------------------------------------------- CSV

PATIENTS = "patient_id,birth_date,sex\n10,2010-01-01,F\n11,2012-05-05,M\n"
CLAIMS = (
    "patient_id,service_date,visit_type,code\n10,2015-01-02,OP,ICD10CM/J45.909\n"
    "10,2015-01-02,OP,CPT/99213\n11,2016-03-04,ER,ICD10CM/J21.9\n"
)

# (case, which file, text, row, column)
CSV_CASES = [
    ("unparseable service date", "claims", CLAIMS.replace("2016-03-04", "03/04/2016"), 3, "service_date"),
    ("unparseable birth date", "patients", PATIENTS.replace("2012-05-05", "2012-13-45"), 2, "birth_date"),
    ("service date past 2262", "claims", CLAIMS.replace("2016-03-04", "2999-03-04"), 3, "service_date"),
    ("negative id", "claims", CLAIMS.replace("11,2016", "-11,2016"), 3, "patient_id"),
    ("non-integer id", "patients", PATIENTS.replace("10,2010", "P10,2010"), 1, "patient_id"),
    ("unknown visit type", "claims", CLAIMS.replace(",ER,", ",XX,"), 3, "visit_type"),
    ("code without vocabulary", "claims", CLAIMS.replace("CPT/99213", "99213"), 2, "code"),
    ("service before birth", "claims", CLAIMS.replace("2015-01-02,OP,CPT", "2009-01-02,OP,CPT"), 2, "service_date"),
    ("unknown sex", "patients", PATIENTS.replace(",M\n", ",X\n"), 2, "sex"),
    ("duplicate patient", "patients", PATIENTS + "10,2010-01-01,F\n", 3, "patient_id"),
    ("claim for unknown patient", "claims", CLAIMS + "12,2016-03-04,OP,CPT/99213\n", 4, "patient_id"),
]


def _write_csvs(tmp_path: Path, claims: str = CLAIMS, patients: str = PATIENTS) -> tuple[Path, Path]:
    (tmp_path / "claims.csv").write_text(claims)
    (tmp_path / "patients.csv").write_text(patients)
    return tmp_path / "claims.csv", tmp_path / "patients.csv"


@pytest.mark.parametrize(("case", "which", "text", "row", "column"), CSV_CASES, ids=[c[0] for c in CSV_CASES])
def test_csv_errors_name_file_row_and_column(tmp_path: Path, case, which, text, row, column) -> None:
    claims, patients = _write_csvs(tmp_path, **{which: text})
    with pytest.raises(DataValidationError) as info:
        convert_claims(claims, patients, tmp_path / "out")
    err = info.value
    assert Path(err.file) == (claims if which == "claims" else patients)
    assert (err.row, err.column) == (row, column)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("claims", "expected"),
    [
        ("", "empty file"),
        ("patient_id,service_date,code\n10,2015-01-02,CPT/99213\n", "column 'visit_type'"),
        ("patient_id,service_date,visit_type,code\n", "at least one data row"),
    ],
)
def test_csv_file_level_errors(tmp_path: Path, claims: str, expected: str) -> None:
    claims_path, patients_path = _write_csvs(tmp_path, claims=claims)
    with pytest.raises(DataValidationError, match=expected) as info:
        convert_claims(claims_path, patients_path, tmp_path / "out")
    assert Path(info.value.file) == claims_path


def test_cli_exits_2_with_located_message_and_writes_nothing(tmp_path: Path) -> None:
    claims, patients = _write_csvs(tmp_path, claims=CLAIMS.replace(",ER,", ",XX,"))
    out = tmp_path / "meds"
    result = CliRunner().invoke(
        app, ["convert", "--claims", str(claims), "--patients", str(patients), "--out", str(out)]
    )
    assert result.exit_code == 2
    assert "row 3" in result.output and "column 'visit_type'" in result.output and "claims.csv" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["claims.csv", "patients.csv"]


def test_cli_validate_exits_2_on_bad_dataset(tiny_meds: Path) -> None:
    _edit_parquet(_first_shard(tiny_meds), _set("subject_id", 0, -1))
    result = CliRunner().invoke(app, ["validate", str(tiny_meds)])
    assert result.exit_code == 2
    assert "column 'subject_id'" in result.output and "row 1" in result.output


def test_deeply_nested_dataset_json_is_bad_input(tiny_meds: Path) -> None:
    (tiny_meds / "metadata" / "dataset.json").write_text("[" * 100_000 + "]" * 100_000)
    result = CliRunner().invoke(app, ["validate", str(tiny_meds)])
    assert result.exit_code == 2 and "dataset.json" in result.output and "Traceback" not in result.output
