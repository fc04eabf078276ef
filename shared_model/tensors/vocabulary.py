"""Code vocabulary and group map (docs/architecture.md §2).

Ids: 0 padding, 1 unknown (UNK), codes from 2 in order of patient count (desc), then code (asc),
so "most frequent codes first" within a visit is simply "smallest ids first".

Pretraining targets (next-visit and per-visit category prediction) are groups of codes from the
target coding systems (`target_vocabularies`: names or patterns such as `D*`, default ICD-10-CM).
When the data holds none of them, a dataset from another coding world still pretrains: every
coding system becomes a target except event markers (admission, discharge, transfer, lab
measurements, MEDS_* events), and the `max_groups` most frequent groups are kept
(docs/architecture.md §2).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import meds
import numpy as np
import pandas as pd

from shared_model.settings import MAX_CODES, VocabularySettings

log = logging.getLogger(__name__)

PAD_ID = 0
UNK_ID = 1
FIRST_CODE_ID = 2
SPECIAL_PREFIXES = ("VISIT/", "SEX/")
BIRTH_CODE = meds.birth_code
#: birth and death as other producers write them: MEDS and ACES (MEDS_BIRTH, MEDS_DEATH), CoreBEHRT
#: (DOB, DOD), OMOP-derived extracts (BIRTH, DEATH). A birth code dates the patient's age; a death
#: code is an event marker, an input but never a pretraining target.
BIRTH_CODES = (BIRTH_CODE, "DOB", "BIRTH")
DEATH_CODES = (meds.death_code, "DOD", "DEATH")
INDEX_CODE = "INDEX_DATE"  # a task's index date (the synthetic data's prediction times): a trigger, never an input
ALL_CODING_SYSTEMS = "*"  # as a target vocabulary: every coding system except event markers
#: coding systems (the part before the first "/") that mark events rather than describe the
#: patient's conditions: inputs to the model, never pretraining targets
MARKER_SYSTEMS = frozenset(
    {
        "ADMISSION", "DISCHARGE", "TRANSFER", "TRANSFER_TO", "HOSPITAL_ADMISSION", "HOSPITAL_DISCHARGE",
        "ED_REGISTRATION", "ED_OUT", "ICU_ADMISSION", "ICU_DISCHARGE", "LAB", "LABS", "MEASUREMENT",
        "VITALS", "VISIT", "SEX", "GENDER",
    }
)  # fmt: skip
FORMAT_VERSION = 1


def is_clinical_code(codes: pd.Index | np.ndarray) -> np.ndarray:
    """True for codes that enter visits; False for visit-type, sex, birth and index-date markers."""
    text = pd.Index(np.asarray(codes, dtype=object)).astype(str)
    special = text.str.startswith(SPECIAL_PREFIXES) | text.isin((*BIRTH_CODES, INDEX_CODE))
    return ~np.asarray(special)


def is_birth_code(codes: pd.Series | pd.Index | np.ndarray) -> np.ndarray:
    """True for every producer's birth code (BIRTH_CODES)."""
    return np.isin(np.asarray(codes, dtype=object).astype(str), BIRTH_CODES)


def coding_system(codes: pd.Series) -> pd.Series:
    """The coding system of each code: the part before the first "/" (the whole code when none)."""
    return codes.astype(str).str.partition("/")[0]


def is_marker(codes: pd.Series) -> np.ndarray:
    """True for event markers (MEDS_* events, death, admission/discharge/transfer, labs, visit and sex)."""
    system = coding_system(codes).str.upper().str.replace(r"[0-9]+$", "", regex=True)  # LAB9: a lab, as LAB/9
    death = codes.astype(str).isin(DEATH_CODES)
    return np.asarray(system.isin(MARKER_SYSTEMS) | system.str.startswith("MEDS_") | death)


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
    target_vocabularies: tuple[str, ...] = ("ICD10CM",)
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
        settings: VocabularySettings = VocabularySettings(),
    ) -> Vocabulary:
        """Keep codes seen in >= min_count patients, the `max_vocab` most frequent, deterministically;
        their groups in the target coding systems (see the module docstring) become targets."""
        series = pd.Series(dict(counts) if not isinstance(counts, pd.Series) else counts, dtype=np.int64)
        series = series[(series >= settings.min_count) & is_clinical_code(series.index)]
        frame = pd.DataFrame({"code": series.index.astype(str), "count": series.to_numpy()})
        frame = frame.sort_values(["count", "code"], ascending=[False, True], kind="mergesort")
        if settings.max_vocab:
            frame = frame.head(settings.max_vocab)
        frame["group"] = [default_group(c, parents) for c in frame["code"]]
        target_vocabularies, max_groups = settings.target_systems, settings.max_groups
        is_target = _is_target(frame["code"], target_vocabularies)
        if len(frame) and not is_target.any() and ALL_CODING_SYSTEMS not in target_vocabularies:
            log.warning(
                "no %s codes in the data: pretraining targets fall back to every coding system but event "
                "markers (the %d most frequent groups)",
                "/".join(target_vocabularies),
                max_groups,
            )
            target_vocabularies = (ALL_CODING_SYSTEMS,)
            is_target = _is_target(frame["code"], target_vocabularies)
        group_totals = frame[is_target].groupby("group")["count"].sum().reset_index()
        group_totals = group_totals.sort_values(["count", "group"], ascending=[False, True], kind="mergesort")
        group_totals = group_totals.head(max_groups)
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
        """A vocabulary from its JSON, which may have crossed the wire: every field is checked
        (types, equal lengths, unique codes, group ids within the groups) before anything indexes
        by it; a ValueError names the field, never a value."""
        try:
            data = json.loads(text)
        except (TypeError, ValueError) as exc:
            raise ValueError("the vocabulary is not JSON") from exc
        if not isinstance(data, dict) or data.get("format_version") != FORMAT_VERSION:
            raise ValueError("the vocabulary is not in a format this version reads")
        codes = _list_of(data, "codes", str, MAX_CODES)
        counts = _list_of(data, "counts", int, MAX_CODES)
        groups = _list_of(data, "groups", str, MAX_CODES)
        code_group = _list_of(data, "code_group", int, MAX_CODES)
        systems = _list_of(data, "target_vocabularies", str, 1_000)
        if not (len(codes) == len(counts) == len(code_group)):
            raise ValueError("vocabulary codes, counts and code_group differ in length")
        if len(set(codes)) != len(codes) or len(set(groups)) != len(groups):
            raise ValueError("the vocabulary repeats a code or a group")
        if any(c < 0 for c in counts) or any(not -1 <= g < len(groups) for g in code_group):
            raise ValueError("the vocabulary's counts or group ids are out of range")
        return cls(tuple(codes), tuple(counts), tuple(groups), tuple(code_group), tuple(systems))


def _list_of(data: dict, key: str, kind: type, max_items: int) -> list:
    value = data.get(key)
    if not isinstance(value, list) or len(value) > max_items:
        raise ValueError(f"the vocabulary's {key} is not a list of at most {max_items} items")
    if not all(isinstance(v, kind) and not isinstance(v, bool) for v in value):
        raise ValueError(f"the vocabulary's {key} holds something other than {kind.__name__}")
    if kind is str and any(len(v) > 1_000 for v in value):
        raise ValueError(f"the vocabulary's {key} holds an entry over 1,000 characters")
    return value


def parents_from_metadata(codes_frames: Iterable[pd.DataFrame]) -> dict[str, list[str]]:
    """Union of `metadata/codes.parquet` parent lists (first site wins on conflicts)."""
    parents: dict[str, list[str]] = {}
    for frame in codes_frames:
        for code, parent_list in zip(frame["code"], frame["parent_codes"], strict=True):
            if parent_list is not None and len(parent_list) and code not in parents:
                parents[str(code)] = [str(p) for p in parent_list]
    return parents


def _is_target(codes: pd.Series, target_vocabularies: tuple[str, ...]) -> np.ndarray:
    """Codes whose coding system matches one of the patterns (fnmatch: `ICD10CM`, `D*`, `*`);
    event markers never."""
    systems = coding_system(codes)
    matches = np.zeros(len(codes), dtype=bool)
    for pattern in target_vocabularies:
        matches |= np.asarray(systems.map(lambda s, p=pattern: fnmatch.fnmatchcase(s, p)), dtype=bool)
    return matches & ~is_marker(codes)
