"""Claims CSV -> MEDS conversion of valid input."""

from __future__ import annotations

from pathlib import Path

from shared_model.data import read_meds
from shared_model.data.claims_csv import convert_claims
from tests.test_bad_input import CLAIMS, PATIENTS, _write_csvs


def test_convert_writes_visits_birth_and_sex(tmp_path: Path) -> None:
    claims, patients = _write_csvs(tmp_path, CLAIMS, PATIENTS)
    ds = read_meds(convert_claims(claims, patients, tmp_path / "meds"))
    codes = ds.events.groupby("subject_id")["code"].apply(lambda s: sorted(s.astype(str)))
    assert codes[10] == sorted(["SEX/F", "MEDS_BIRTH", "VISIT/OP", "ICD10CM/J45.909", "CPT/99213"])
    assert codes[11] == sorted(["SEX/M", "MEDS_BIRTH", "VISIT/ER", "ICD10CM/J21.9"])
    assert (ds.events["code"] == "VISIT/OP").sum() == 1  # one visit code per patient-day-type
    assert set(ds.splits["subject_id"]) == {10, 11}
