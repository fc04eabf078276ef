"""Convert Claim-PT style claims CSV files to a MEDS directory (docs/architecture.md §2).

`claims.csv`: patient_id, service_date, visit_type (IP|OP|ER|RX), code (`VOCAB/value`).
`patients.csv`: patient_id, birth_date, sex (F|M|U). Dates are ISO `YYYY-MM-DD`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from shared_model.data.errors import DataValidationError
from shared_model.data.meds import BIRTH_CODE, assign_splits, write_meds
from shared_model.data.paths import MAX_INPUT_FILE_BYTES

VISIT_TYPES = ("IP", "OP", "ER", "RX")
SEXES = ("F", "M", "U")
CLAIMS_COLUMNS = ("patient_id", "service_date", "visit_type", "code")
PATIENTS_COLUMNS = ("patient_id", "birth_date", "sex")


def read_csv_strict(path: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    """Read a CSV as strings, insisting on the given columns; values are checked by the caller."""
    path = Path(path)
    if not path.is_file():
        raise DataValidationError(path, "an existing CSV file", found="no such file")
    size = path.stat().st_size
    if size == 0:
        raise DataValidationError(path, "a CSV file with a header row", found="empty file")
    if size > MAX_INPUT_FILE_BYTES:
        raise DataValidationError(path, f"at most {MAX_INPUT_FILE_BYTES} bytes", found=f"{size} bytes")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataValidationError(path, "a well-formed UTF-8 CSV file", found=str(exc)) from exc
    frame.columns = [c.strip() for c in frame.columns]
    for column in columns:
        if column not in frame.columns:
            raise DataValidationError(
                path, f"a column named '{column}'", column=column, found=f"columns {list(frame.columns)}"
            )
    if frame.empty:
        raise DataValidationError(path, "at least one data row", found="header only")
    return frame[list(columns)].apply(lambda s: s.str.strip())


def _check(mask: np.ndarray | pd.Series, path: Path, column: str, expected: str, values: pd.Series) -> None:
    bad = np.flatnonzero(np.asarray(mask))
    if bad.size:
        i = int(bad[0])
        raise DataValidationError(
            path, expected, row=i + 1, column=column, found=values.iloc[i], more=int(bad.size) - 1
        )


def _ids(frame: pd.DataFrame, path: Path) -> np.ndarray:
    ids = frame["patient_id"]
    _check(~ids.str.fullmatch(r"\d{1,18}"), path, "patient_id", "a non-negative integer id", ids)
    return ids.astype(np.int64).to_numpy()


def _dates(frame: pd.DataFrame, path: Path, column: str) -> np.ndarray:
    parsed = pd.to_datetime(frame[column], format="%Y-%m-%d", errors="coerce")
    outside = parsed.isna() | (parsed < pd.Timestamp.min) | (parsed > pd.Timestamp.max)  # what timestamps can hold
    _check(outside, path, column, "a date in YYYY-MM-DD format between 1678 and 2261", frame[column])
    return parsed.to_numpy().astype("datetime64[us]")


def _choice(frame: pd.DataFrame, path: Path, column: str, allowed: tuple[str, ...]) -> np.ndarray:
    values = frame[column].str.upper()
    _check(~values.isin(allowed), path, column, f"one of {', '.join(allowed)}", frame[column])
    return values.to_numpy(dtype=object)


def convert_claims(claims_csv: Path, patients_csv: Path, out: Path, *, overwrite: bool = False) -> Path:
    """Validate both CSV files completely, then write the MEDS directory atomically."""
    patients = read_csv_strict(patients_csv, PATIENTS_COLUMNS)
    claims = read_csv_strict(claims_csv, CLAIMS_COLUMNS)

    pid = _ids(patients, patients_csv)
    _check(pd.Series(pid).duplicated(), patients_csv, "patient_id", "each patient_id once", patients["patient_id"])
    birth = _dates(patients, patients_csv, "birth_date")
    sex = _choice(patients, patients_csv, "sex", SEXES)

    cid = _ids(claims, claims_csv)
    _check(
        ~np.isin(cid, pid),
        claims_csv,
        "patient_id",
        "a patient_id listed in " + Path(patients_csv).name,
        claims["patient_id"],
    )
    service = _dates(claims, claims_csv, "service_date")
    visit_type = _choice(claims, claims_csv, "visit_type", VISIT_TYPES)
    code = claims["code"]
    _check(
        ~code.str.fullmatch(r"[^/\s]+/\S+"),
        claims_csv,
        "code",
        "a code of the form VOCAB/value (e.g. ICD10CM/J45.909)",
        code,
    )
    birth_of_claim = pd.Series(birth, index=pid).reindex(cid).to_numpy()
    _check(
        service < birth_of_claim,
        claims_csv,
        "service_date",
        "a service_date on or after the patient's birth_date",
        claims["service_date"],
    )

    visits = pd.DataFrame({"subject_id": cid, "time": service, "code": "VISIT/" + visit_type}).drop_duplicates()
    events = pd.concat(
        [
            pd.DataFrame({"subject_id": pid, "time": np.datetime64("NaT", "us"), "code": "SEX/" + sex}),
            pd.DataFrame({"subject_id": pid, "time": birth, "code": BIRTH_CODE}),
            visits,
            pd.DataFrame({"subject_id": cid, "time": service, "code": code.to_numpy(dtype=object)}),
        ],
        ignore_index=True,
    )
    events["numeric_value"] = np.float32(np.nan)
    events["code"] = events["code"].astype("category")
    metadata = {"dataset_name": Path(out).name, "etl_name": "claimpt.convert", "meds_version": "0.4"}
    return write_meds(out, events, assign_splits(np.unique(pid)), metadata=metadata, overwrite=overwrite)
