"""One MEDS dataset split into simulated sites, for multi-site studies on data this project did not
write (docs/results/any-meds.md).

Each subject goes to one site, with its train/tuning/held_out split and its label rows. The sites
differ in how much care their patients use: subjects are ranked by their number of timed events
and cut into as many equal bands as there are sites; a subject of band b goes to site b with
probability `skew` and to any other site otherwise (skew = 1 / sites: no shift; 1: each site holds
one band only). Event volume is the shift that matters for a utilisation outcome and one every
real consortium has (a tertiary centre's patients are seen more often than a rural clinic's).
Rows are copied unchanged (timestamps keep their resolution), as parquet written by pyarrow.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import meds
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from shared_model.data import DataValidationError
from shared_model.data.meds import MedsLayout, iter_event_files, label_files


def site_of_subject(event_counts: dict[int, int], sites: int, skew: float, seed: int) -> dict[int, int]:
    """Subject id -> site index (0-based): the band of its event count, kept with probability `skew`."""
    subjects = np.array(sorted(event_counts), dtype=np.int64)
    counts = np.array([event_counts[s] for s in subjects])
    rng = np.random.default_rng(seed)
    order = np.lexsort((rng.random(len(subjects)), counts))  # ties broken at random, reproducibly
    band = np.empty(len(subjects), np.int64)
    band[order] = np.arange(len(subjects)) * sites // max(len(subjects), 1)
    other = (band + rng.integers(1, sites, len(subjects))) % sites if sites > 1 else band
    site = np.where(rng.random(len(subjects)) < skew, band, other)
    return dict(zip(subjects.tolist(), site.tolist(), strict=True))


def split_into_sites(data: Path, out: Path, sites: int, skew: float, seed: int) -> list[Path]:
    """Write out/site-1 ... site-N (data files, labels/, metadata/ with each site's own rows of
    codes.parquet and subject_splits.parquet when the input has them); nothing if the input is bad."""
    if not 1 <= sites <= 50:
        raise DataValidationError(out, "between 1 and 50 sites", found=sites)
    if not (1 / sites <= skew <= 1):
        raise DataValidationError(out, f"a skew between 1/sites ({1 / sites:.3f}) and 1", found=skew)
    if out.exists():
        raise DataValidationError(out, "a directory that does not exist yet", found="it exists")
    layout = MedsLayout.of(data)
    files, counts = [], {}
    for path, events in iter_event_files(data):  # every file validated before anything is written
        timed = events["time"].notna().groupby(events["subject_id"]).sum()  # 0 for a subject with static rows only
        counts.update({int(s): int(n) for s, n in timed.items()})
        files.append(path)
    site = site_of_subject(counts, sites, skew, seed)
    members = [pa.array([s for s, i in site.items() if i == index], pa.int64()) for index in range(sites)]
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    roots = [staging / f"site-{i + 1}" for i in range(sites)]
    try:
        for path in files:
            table = pq.read_table(path)
            for root, subjects in zip(roots, members, strict=True):
                _write_rows(table, subjects, root / "data" / path.relative_to(layout.data))
        for task, paths in label_files(data).items():
            labels = pa.concat_tables([pq.read_table(p) for p in paths])
            for root, subjects in zip(roots, members, strict=True):
                _write_rows(labels, subjects, root / "labels" / f"{task}.parquet")
        splits_file = layout.root / meds.subject_splits_filepath
        splits = pq.read_table(splits_file) if splits_file.is_file() else None
        codes = layout.root / meds.code_metadata_filepath
        for index, (root, subjects) in enumerate(zip(roots, members, strict=True)):
            if splits is not None:
                _write_rows(splits, subjects, root / meds.subject_splits_filepath)
            (root / "metadata").mkdir(parents=True, exist_ok=True)
            if codes.is_file():  # it describes codes, not patients (its parents give the pretraining groups)
                shutil.copyfile(codes, root / meds.code_metadata_filepath)
            metadata = {
                "dataset_name": f"{layout.root.name}/site-{index + 1}",
                "dataset_version": f"split-seed-{seed}",
                "etl_name": "claimpt.split",
                "etl_version": "1",
                "meds_version": meds.__version__,
                "split": {"of": str(layout.root), "sites": sites, "skew": skew, "by": "timed events per subject"},
            }
            (root / meds.dataset_metadata_filepath).write_text(json.dumps(metadata, indent=2) + "\n")
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return [out / root.name for root in roots]


def _write_rows(table: pa.Table, subjects: pa.Array, target: Path) -> None:
    rows = table.filter(pc.is_in(table["subject_id"], value_set=subjects))
    if rows.num_rows:
        target.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(rows, target)
