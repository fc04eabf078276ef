"""Code vocabulary and group map (docs/architecture.md §2).

Ids: 0 padding, 1 unknown (UNK), codes from 2 in order of patient count (desc), then code (asc),
so "most frequent codes first" within a visit is simply "smallest ids first".
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

PAD_ID = 0
UNK_ID = 1
FIRST_CODE_ID = 2
SPECIAL_PREFIXES = ("VISIT/", "SEX/")
BIRTH_CODE = "MEDS_BIRTH"
DEFAULT_TARGET_VOCABULARIES = ("ICD10CM",)
FORMAT_VERSION = 1


def is_clinical_code(codes: pd.Index | np.ndarray) -> np.ndarray:
    """True for codes that enter visits; False for visit-type, sex and birth markers."""
    text = pd.Index(np.asarray(codes, dtype=object)).astype(str)
    special = text.str.startswith(SPECIAL_PREFIXES) | (text == BIRTH_CODE)
    return ~np.asarray(special)


def default_group(code: str, parents: Mapping[str, list[str]] | None = None) -> str:
    """A code's pretraining group: its first parent code if known, else the vocabulary's prefix
    rule (ICD-10: three-character category; CPT/HCPCS: first three characters), else itself."""
    if parents and parents.get(code):
        return parents[code][0]
    vocabulary, slash, value = code.partition("/")
    if not slash:
        return code
    if vocabulary.upper().startswith("ICD"):
        return f"{vocabulary}/{value.replace('.', '')[:3]}"
    if vocabulary.upper() in ("CPT", "HCPCS"):
        return f"{vocabulary}/{value[:3]}"
    return code


def count_patients_per_code(events: pd.DataFrame) -> pd.Series:
    """Number of distinct subjects in whom each clinical code occurs (timed events only)."""
    timed = events.loc[events["time"].notna(), ["subject_id", "code"]]
    pairs = timed.drop_duplicates()
    counts = pairs["code"].astype(str).value_counts()
    return counts[is_clinical_code(counts.index)]


@dataclass(frozen=True)
class Vocabulary:
    """Ordered codes with patient counts, and the target groups each code maps to (-1: none)."""

    codes: tuple[str, ...]
    counts: tuple[int, ...]
    groups: tuple[str, ...]
    code_group: tuple[int, ...]
    target_vocabularies: tuple[str, ...] = DEFAULT_TARGET_VOCABULARIES
    _index: dict[str, int] = field(default=None, repr=False, compare=False)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {c: i + FIRST_CODE_ID for i, c in enumerate(self.codes)})

    @property
    def size(self) -> int:
        """Embedding rows: padding + UNK + codes."""
        return len(self.codes) + FIRST_CODE_ID

    @property
    def n_groups(self) -> int:
        return len(self.groups)

    def encode(self, codes: Iterable[str]) -> np.ndarray:
        """Code strings -> ids (UNK for codes outside the vocabulary)."""
        return np.array([self._index.get(c, UNK_ID) for c in codes], dtype=np.int32)

    def restricted_to(self, codes: Iterable[str]) -> Vocabulary:
        """The same ids, sizes and groups, but only `codes` encode to their ids; every other code
        encodes as UNK (a site keeps the consortium's layout and uses only codes it may)."""
        allowed = set(codes)
        restricted = dataclasses.replace(self)
        object.__setattr__(restricted, "_index", {c: i for c, i in self._index.items() if c in allowed})
        return restricted

    def group_of_ids(self) -> np.ndarray:
        """Group id per code id (index = code id), -1 for padding, UNK and non-target codes."""
        return np.r_[np.full(FIRST_CODE_ID, -1), np.asarray(self.code_group, dtype=np.int64)].astype(np.int32)

    @classmethod
    def from_counts(
        cls,
        counts: Mapping[str, int] | pd.Series,
        *,
        parents: Mapping[str, list[str]] | None = None,
        min_count: int = 1,
        max_size: int | None = None,
        target_vocabularies: tuple[str, ...] = DEFAULT_TARGET_VOCABULARIES,
    ) -> Vocabulary:
        """Keep codes seen in >= min_count patients, the `max_size` most frequent, deterministically."""
        series = pd.Series(dict(counts) if not isinstance(counts, pd.Series) else counts, dtype=np.int64)
        series = series[(series >= min_count) & is_clinical_code(series.index)]
        frame = pd.DataFrame({"code": series.index.astype(str), "count": series.to_numpy()})
        frame = frame.sort_values(["count", "code"], ascending=[False, True], kind="mergesort")
        if max_size is not None:
            frame = frame.head(max_size)
        frame["group"] = [default_group(c, parents) for c in frame["code"]]
        vocab_of = frame["code"].str.partition("/")[0]
        is_target = vocab_of.isin(target_vocabularies) if "*" not in target_vocabularies else True
        targets = frame[is_target]
        group_totals = targets.groupby("group")["count"].sum().reset_index()
        group_totals = group_totals.sort_values(["count", "group"], ascending=[False, True], kind="mergesort")
        group_ids = {g: i for i, g in enumerate(group_totals["group"])}
        code_group = np.where(is_target, frame["group"].map(group_ids).fillna(-1), -1).astype(int)
        return cls(
            tuple(frame["code"]),
            tuple(int(c) for c in frame["count"]),
            tuple(group_totals["group"]),
            tuple(int(g) for g in code_group),
            tuple(target_vocabularies),
        )

    def to_json(self) -> str:
        return json.dumps(
            {
                "format_version": FORMAT_VERSION,
                "special_ids": {"padding": PAD_ID, "unknown": UNK_ID, "first_code": FIRST_CODE_ID},
                "target_vocabularies": list(self.target_vocabularies),
                "codes": list(self.codes),
                "counts": list(self.counts),
                "groups": list(self.groups),
                "code_group": list(self.code_group),
            },
            indent=1,
        )

    @classmethod
    def from_json(cls, text: str) -> Vocabulary:
        data = json.loads(text)
        if data.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"unsupported vocabulary format {data.get('format_version')!r}")
        if not (len(data["codes"]) == len(data["counts"]) == len(data["code_group"])):
            raise ValueError("vocabulary codes, counts and code_group differ in length")
        return cls(
            tuple(data["codes"]),
            tuple(data["counts"]),
            tuple(data["groups"]),
            tuple(data["code_group"]),
            tuple(data["target_vocabularies"]),
        )


def parents_from_metadata(codes_frames: Iterable[pd.DataFrame]) -> dict[str, list[str]]:
    """Union of `metadata/codes.parquet` parent lists (first site wins on conflicts)."""
    parents: dict[str, list[str]] = {}
    for frame in codes_frames:
        for code, parent_list in zip(frame["code"], frame["parent_codes"], strict=True):
            if parent_list is not None and len(parent_list) and code not in parents:
                parents[str(code)] = [str(p) for p in parent_list]
    return parents
