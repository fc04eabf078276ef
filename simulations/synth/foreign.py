"""The synthetic sites as another EHR project would hand them over: the test of "any MEDS dataset".

The same patients and labels as `synthesize`, recoded into a home-grown vocabulary with no
ICD-10-CM prefix (`DJ45909` for a diagnosis, `P99213` a procedure, `M745679` a drug), visits
marked by `ADMISSION`/`DISCHARGE` and `ED_REGISTRATION` events instead of `VISIT/*`, sex as
`GENDER//F`, glucose measurements (`LAB/GL` with a value) on some visits, nanosecond timestamps
and float64 values; written as a bare data folder (`train/`, `tuning/`, `held_out/` shards
directly under the folder, labels in `labels/`, no `metadata/`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from shared_model.data.paths import atomic_directory
from simulations.synth.generator import SiteData, generate_site
from simulations.synth.profiles import default_profiles

log = logging.getLogger(__name__)

#: our coding system -> the foreign one's prefix (the dots of ICD codes dropped)
_PREFIXES = {"ICD10CM": "D", "CPT": "P", "HCPCS": "P", "RXNORM": "M", "NDC": "M"}
_VISIT_MARKERS = {"VISIT/IP": ["ADMISSION", "DISCHARGE"], "VISIT/ER": ["ED_REGISTRATION"]}  # OP, RX: unmarked
_LAB_SHARE = 0.2  # visits with a glucose measurement
_SCHEMA = pa.schema(
    [("subject_id", pa.int64()), ("time", pa.timestamp("ns")), ("code", pa.string()), ("numeric_value", pa.float64())]
)


def foreign_code(code: str) -> list[str]:
    """One of our codes as the foreign codes that stand for it (none for dropped visit types)."""
    if code in _VISIT_MARKERS:
        return _VISIT_MARKERS[code]
    if code.startswith("VISIT/"):
        return []
    if code.startswith("SEX/"):
        return [f"GENDER//{code[4:]}"]
    system, slash, value = code.partition("/")
    if slash and system in _PREFIXES:
        return [_PREFIXES[system] + value.replace(".", "")]
    return [code]


def foreign_events(events: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """The events recoded (vectorised over the distinct codes), plus lab measurements."""
    code = events["code"].astype("category")
    mapping = {c: foreign_code(str(c)) for c in code.cat.categories}
    flat = pd.Series(mapping).explode().dropna()
    recoded = events.assign(code=code.astype(str)).merge(
        pd.DataFrame({"code": flat.index, "foreign": flat.to_numpy()}), on="code", how="inner", sort=False
    )
    visits = recoded.loc[recoded["time"].notna(), ["subject_id", "time"]].drop_duplicates()
    labs = visits[rng.random(len(visits)) < _LAB_SHARE]
    glucose = np.round(rng.lognormal(np.log(95.0), 0.2, size=len(labs)), 1)
    out = pd.concat(
        [
            pd.DataFrame(
                {
                    "subject_id": recoded["subject_id"].to_numpy(np.int64),
                    "time": recoded["time"].to_numpy(),
                    "code": recoded["foreign"].to_numpy(object),
                    "numeric_value": recoded["numeric_value"].to_numpy(np.float64),
                }
            ),
            pd.DataFrame(
                {"subject_id": labs["subject_id"], "time": labs["time"], "code": "LAB/GL", "numeric_value": glucose}
            ),
        ],
        ignore_index=True,
    )
    order = np.lexsort((out["code"].to_numpy(str), out["time"].to_numpy().astype(np.int64), out["subject_id"]))
    return out.iloc[order].reset_index(drop=True)


def write_foreign_site(target: Path, site: SiteData, seed: int, *, overwrite: bool = False) -> Path:
    """One site as a bare MEDS data folder with split folders and labels/ (atomically)."""
    rng = np.random.default_rng([seed, 7919])
    events = foreign_events(site.events, rng)
    split_of = site.splits.set_index("subject_id")["split"]
    with atomic_directory(target, overwrite=overwrite) as tmp:
        for split, rows in events.groupby(events["subject_id"].map(split_of), sort=True):
            (tmp / str(split)).mkdir()
            table = pa.Table.from_pandas(rows.astype({"time": "datetime64[ns]"}), schema=_SCHEMA, preserve_index=False)
            pq.write_table(table, tmp / str(split) / "0.parquet")
        (tmp / "labels").mkdir()
        for task, frame in sorted(site.labels.items()):
            pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), tmp / "labels" / f"{task}.parquet")
    return target


def synthesize_foreign(out: str | Path, sizes: list[int], seed: int, *, overwrite: bool = False) -> list[Path]:
    """Write `out/site-1 ... out/site-N` in the foreign style (the same patients as `synthesize`)."""
    out = Path(out)
    paths = []
    for index, profile in enumerate(default_profiles(sizes, seed)):
        site = generate_site(profile, seed, index)
        paths.append(write_foreign_site(out / profile.name, site, seed, overwrite=overwrite))
        log.info("%s: %d patients in the foreign style", profile.name, profile.n_patients)
    return paths
