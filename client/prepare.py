"""`claimpt site prepare`: turn a site's raw MEDS extract into the pseudonymised MEDS directory
its SuperNode reads (docs/architecture.md §1: validate -> pseudonymise -> tensorise).

Tensorisation itself happens inside the ClientApp: it needs the consortium vocabulary, which only
exists after the federation's vocabulary round, and it is cached per process there.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from client.pseudonymise import load_or_create_key, pseudonyms
from shared_model.data import MedsDataset, read_meds, write_meds

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreparedSite:
    out: Path
    subjects: int
    events: int
    labels: tuple[str, ...]


def relabel_subjects(dataset: MedsDataset, new_ids: np.ndarray, metadata: dict | None = None) -> MedsDataset:
    """The same dataset with every `subject_id` (events, splits, labels) replaced: `new_ids[i]` for
    the i-th subject of `dataset.splits`."""
    lookup = pd.Series(np.asarray(new_ids, np.int64), index=dataset.splits["subject_id"].to_numpy(np.int64))

    def mapped(frame: pd.DataFrame) -> pd.DataFrame:
        return frame.assign(subject_id=lookup.reindex(frame["subject_id"].to_numpy()).to_numpy(np.int64))

    return MedsDataset(
        dataset.root,
        mapped(dataset.events),
        mapped(dataset.splits),
        {task: mapped(frame) for task, frame in dataset.labels.items()},
        dataset.codes,
        {**dataset.metadata, **(metadata or {})},
    )


def pseudonymise_dataset(dataset: MedsDataset, key: bytes) -> MedsDataset:
    """The same dataset with every `subject_id` (events, splits, labels) replaced by its pseudonym."""
    return relabel_subjects(
        dataset,
        pseudonyms(dataset.splits["subject_id"].to_numpy(np.int64), key),
        {"pseudonymisation": "HMAC-SHA256 (per-site key)"},
    )


def prepare_site(raw: str | Path, out: str | Path, key_file: str | Path, *, overwrite: bool = False) -> PreparedSite:
    """Validate `raw` (any error names file, row and column), pseudonymise, write `out` atomically."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass --force to replace it")
    dataset = read_meds(raw)
    key = load_or_create_key(key_file)
    prepared = pseudonymise_dataset(dataset, key)
    write_meds(
        out,
        prepared.events,
        prepared.splits,
        labels=prepared.labels,
        codes=prepared.codes,
        metadata=prepared.metadata,
        overwrite=overwrite,
    )
    result = PreparedSite(out, len(prepared.splits), len(prepared.events), tuple(sorted(prepared.labels)))
    log.info(
        "prepared %s: %d patients, %d events, labels %s",
        out,
        result.subjects,
        result.events,
        ", ".join(result.labels) or "none",
    )
    return result
