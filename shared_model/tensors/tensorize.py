"""Events -> the Claim-PT tensor layout (docs/architecture.md §2). The one place data is tensorised.

Per sample (a subject and a prediction time): the last `max_visits` visits strictly before the
prediction day, left-padded; each visit holds up to `max_codes` code ids, most frequent first.
Pretraining samples hold out each subject's last visit that has a target group and use the
visits before it (next-visit prediction). Fully vectorised: no Python loop per event or subject.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from shared_model.tensors.vocabulary import FIRST_CODE_ID, Vocabulary, is_birth_code, is_clinical_code

#: visit-type ids; a day's type is the highest-precedence VISIT code (IP > ER > OP > RX), else OTHER
VISIT_TYPE_IDS = {"VISIT/RX": 2, "VISIT/OP": 3, "VISIT/ER": 4, "VISIT/IP": 5}
#: event markers of other MEDS producers that say the same (by coding system, upper case)
MARKER_VISIT_TYPES = {"ADMISSION": 5, "HOSPITAL_ADMISSION": 5, "ED_REGISTRATION": 4, "ED_ADMISSION": 4}
OTHER_VISIT = 1
N_VISIT_TYPES = 6
SEX_IDS = {"SEX/F": 1, "SEX/M": 2}
SEX_SYSTEMS = ("SEX", "GENDER")  # SEX/F, GENDER//F, GENDER//FEMALE, ...
SEX_VALUES = {"F": 1, "FEMALE": 1, "M": 2, "MALE": 2}
N_SEX = 3
AGE_BUCKET_EDGES_YEARS = (1, 2, 5, 12, 18)  # bucket 0 = unknown age
N_AGE_BUCKETS = len(AGE_BUCKET_EDGES_YEARS) + 2

Arrays = dict[str, np.ndarray]  # named columns of samples, one row per sample


@dataclass(frozen=True)
class Layout:
    max_visits: int = 30
    max_codes: int = 10
    max_visit_groups: int = 10  # CP targets kept per visit
    max_target_groups: int = 20  # NVP / next-visit targets kept per sample


#: field -> (dtype on disk, shape after the sample axis as a function of the layout)
FIELDS: dict[str, tuple[type, tuple[str, ...]]] = {
    "codes": (np.int32, ("max_visits", "max_codes")),
    "visit_type": (np.int8, ("max_visits",)),
    "date_index": (np.int16, ("max_visits",)),
    "days_before": (np.int32, ("max_visits",)),
    "age_days": (np.int32, ("max_visits",)),
    "demo": (np.int8, (2,)),
    "visit_groups": (np.int16, ("max_visits", "max_visit_groups")),
    "target_groups": (np.int16, ("max_target_groups",)),
    "label": (np.float32, ()),
    "subject_id": (np.int64, ()),
    "prediction_day": (np.int32, ()),
}
MODEL_INPUTS = ("codes", "visit_type", "date_index", "days_before", "age_days", "demo")


def field_shape(name: str, layout: Layout) -> tuple[int, ...]:
    return tuple(getattr(layout, s) if isinstance(s, str) else s for s in FIELDS[name][1])


def empty_arrays(layout: Layout) -> Arrays:
    return {name: np.zeros((0, *field_shape(name, layout)), dtype=dtype) for name, (dtype, _) in FIELDS.items()}


@dataclass(frozen=True, eq=False)
class _Visits:
    subject: np.ndarray  # per visit, sorted by (subject, day)
    day: np.ndarray
    visit_type: np.ndarray
    codes: np.ndarray  # (visits, max_codes)
    groups: np.ndarray  # (visits, max_target_groups), -1 padded
    first_of_subject: np.ndarray  # per visit: index of the subject's first visit


def visit_type_of(code: str) -> int:
    """A code's visit-type id: VISIT/* codes, or an admission / ED marker; 0 for any other code."""
    return VISIT_TYPE_IDS.get(code) or MARKER_VISIT_TYPES.get(code.partition("/")[0].upper(), 0)


def sex_of(code: str) -> int:
    """A static code's sex id (SEX/F, GENDER//MALE, ...); 0 when it states none."""
    system, _, value = code.partition("/")
    return SEX_VALUES.get(value.strip("/").upper(), 0) if system.upper() in SEX_SYSTEMS else 0


def _ranked_pairs(visit: np.ndarray, item: np.ndarray, width: int, n_visits: int, fill: int) -> np.ndarray:
    """Distinct (visit, item) pairs, smallest items first, into a (n_visits, width) matrix."""
    span = int(item.max(initial=0)) + 1
    key = np.sort(visit.astype(np.int64) * span + item)
    key = key[np.r_[True, key[1:] != key[:-1]]] if key.size else key
    v, it = key // span, key % span
    start = np.searchsorted(v, v, side="left")
    rank = np.arange(v.size) - start
    keep = rank < width
    out = np.full((n_visits, width), fill, dtype=np.int64)
    out[v[keep], rank[keep]] = it[keep]
    return out


def _visits(events: pd.DataFrame, vocab: Vocabulary, layout: Layout) -> tuple[_Visits, pd.Series, pd.Series]:
    timed = events[events["time"].notna()]
    code = timed["code"].astype("category")
    categories = pd.Index(code.cat.categories.astype(str))
    clinical_category = is_clinical_code(categories)
    category_code_id = np.where(clinical_category, vocab.encode(categories), 0)
    category_visit_type = np.array([visit_type_of(c) for c in categories], dtype=np.int64)
    cat_idx = code.cat.codes.to_numpy()

    subject = timed["subject_id"].to_numpy(np.int64)
    day = timed["time"].to_numpy().astype("datetime64[D]").astype(np.int64)
    is_birth = is_birth_code(categories)[cat_idx]
    births = pd.Series(day[is_birth], index=subject[is_birth]).groupby(level=0).min()
    static = events[events["time"].isna()]
    sex = pd.Series([sex_of(c) for c in static["code"].astype(str)], index=static["subject_id"].to_numpy())
    sex = sex[sex > 0].groupby(level=0).max()

    # a day's events form a visit if they are clinical codes or say the visit's type: birth and
    # index-date markers do not
    forms_visit = clinical_category | (category_visit_type > 0)
    keep = forms_visit[cat_idx]
    subject, day, cat_idx = subject[keep], day[keep], cat_idx[keep]
    order = np.lexsort((day, subject))
    subject, day, cat_idx = subject[order], day[order], cat_idx[order]
    new_visit = np.r_[True, (subject[1:] != subject[:-1]) | (day[1:] != day[:-1])]
    visit_of_event = np.cumsum(new_visit) - 1
    starts = np.flatnonzero(new_visit)
    n_visits = starts.size
    visit_subject, visit_day = subject[starts], day[starts]
    visit_type = np.maximum.reduceat(category_visit_type[cat_idx], starts) if n_visits else np.zeros(0, np.int64)
    visit_type = np.where(visit_type == 0, OTHER_VISIT, visit_type)

    code_id = category_code_id[cat_idx]
    clinical = code_id > 0
    codes = _ranked_pairs(visit_of_event[clinical], code_id[clinical], layout.max_codes, n_visits, 0)
    group = vocab.group_of_ids()[code_id]
    has_group = group >= 0
    groups = _ranked_pairs(
        visit_of_event[has_group],
        group[has_group],
        max(layout.max_target_groups, layout.max_visit_groups),
        n_visits,
        -1,
    )
    first_of_subject = np.searchsorted(visit_subject, visit_subject, side="left")
    return _Visits(visit_subject, visit_day, visit_type, codes, groups, first_of_subject), births, sex


def next_visit_samples(events: pd.DataFrame, vocab: Vocabulary, layout: Layout = Layout()) -> Arrays:
    """One pretraining sample per subject: predict the groups of their last visit that has any."""
    visits, births, sex = _visits(events, vocab, layout)
    has_target = visits.groups[:, 0] >= 0
    candidates = np.flatnonzero(has_target & (np.arange(visits.day.size) > visits.first_of_subject))
    if candidates.size == 0:
        return empty_arrays(layout)
    last_per_subject = pd.Series(candidates).groupby(visits.subject[candidates]).max().to_numpy()
    return _gather(
        visits,
        births,
        sex,
        layout,
        last_per_subject,
        visits.day[last_per_subject],
        target=last_per_subject,
        label=np.full(last_per_subject.size, np.nan, np.float32),
    )


def labelled_samples(
    events: pd.DataFrame, labels: pd.DataFrame, vocab: Vocabulary, layout: Layout = Layout()
) -> Arrays:
    """One sample per label row: history strictly before the prediction day; target groups are
    those of the first visit on or after it (for next-visit evaluation at labelled times)."""
    visits, births, sex = _visits(events, vocab, layout)
    if len(labels) == 0:
        return empty_arrays(layout)
    subject = labels["subject_id"].to_numpy(np.int64)
    pt_day = labels["prediction_time"].to_numpy().astype("datetime64[D]").astype(np.int64)
    cut = _first_visit_on_or_after(visits, subject, pt_day)
    in_range = cut < visits.day.size
    same_subject = np.zeros(cut.size, bool)
    same_subject[in_range] = visits.subject[cut[in_range]] == subject[in_range]
    target = np.where(same_subject, cut, -1)
    return _gather(
        visits,
        births,
        sex,
        layout,
        cut,
        pt_day,
        target=target,
        label=labels["boolean_value"].to_numpy().astype(np.float32),
        subject=subject,
    )


def _first_visit_on_or_after(visits: _Visits, subject: np.ndarray, day: np.ndarray) -> np.ndarray:
    """Per query (subject, day): the index of the first visit at or after it in (subject, day)
    order. One merged sort, no key arithmetic: any int64 ids (63-bit pseudonyms, negative ids)
    and any days give the same answer."""
    is_visit = np.r_[np.ones(visits.day.size, np.int8), np.zeros(subject.size, np.int8)]
    order = np.lexsort((is_visit, np.r_[visits.day, day], np.r_[visits.subject, subject]))  # queries first on ties
    visits_before = np.cumsum(is_visit[order]) - is_visit[order]
    cut = np.empty(subject.size, np.int64)
    is_query = is_visit[order] == 0
    cut[order[is_query] - visits.day.size] = visits_before[is_query]
    return cut


def _gather(
    visits: _Visits,
    births: pd.Series,
    sex: pd.Series,
    layout: Layout,
    cut: np.ndarray,
    pt_day: np.ndarray,
    *,
    target: np.ndarray,
    label: np.ndarray,
    subject: np.ndarray | None = None,
) -> Arrays:
    """Assemble samples whose history is the subject's visits before index `cut` (the last
    max_visits of them, right-aligned)."""
    n_visits = visits.day.size
    subject = visits.subject[np.minimum(cut, n_visits - 1)] if subject is None else subject
    first = np.searchsorted(visits.subject, subject, side="left")
    idx = cut[:, None] - layout.max_visits + np.arange(layout.max_visits)[None, :]
    valid = (idx >= first[:, None]) & (idx < cut[:, None])
    idx = np.where(valid, idx, 0)

    def take(values: np.ndarray, fill: int = 0) -> np.ndarray:
        picked = values[idx] if n_visits else np.full(idx.shape + values.shape[1:], fill)
        mask = valid.reshape(valid.shape + (1,) * (picked.ndim - 2))
        return np.where(mask, picked, fill)

    visit_day = take(visits.day)
    birth = pd.Series(subject).map(births).to_numpy(dtype=np.float64)
    known_birth = ~np.isnan(birth)
    birth_day = np.where(known_birth, birth, 0).astype(np.int64)
    doy = (
        visit_day - (visit_day.astype("datetime64[D]").astype("datetime64[Y]").astype("datetime64[D]").astype(np.int64))
    ) + 1
    age_days = np.maximum(visit_day - birth_day[:, None], 0)  # another producer's data may date events before birth
    age_at_pt = (pt_day - birth_day) / 365.25
    age_bucket = np.where(known_birth, np.digitize(age_at_pt, AGE_BUCKET_EDGES_YEARS) + 1, 0)
    sex_id = pd.Series(subject).map(sex).fillna(0).to_numpy(np.int64)
    target_groups = np.full((cut.size, layout.max_target_groups), -1, dtype=np.int64)
    has_target = target >= 0
    if n_visits:
        target_groups[has_target] = visits.groups[target[has_target], : layout.max_target_groups]
    return {
        "codes": take(visits.codes).astype(np.int32),
        "visit_type": take(visits.visit_type).astype(np.int8),
        "date_index": np.where(valid, doy, 0).astype(np.int16),
        "days_before": np.where(valid, pt_day[:, None] - visit_day, 0).astype(np.int32),
        "age_days": np.where(valid & known_birth[:, None], age_days, 0).astype(np.int32),
        "demo": np.stack([age_bucket, sex_id], axis=1).astype(np.int8),
        "visit_groups": take(visits.groups[:, : layout.max_visit_groups], fill=-1).astype(np.int16),
        "target_groups": target_groups.astype(np.int16),
        "label": label.astype(np.float32),
        "subject_id": subject.astype(np.int64),
        "prediction_day": pt_day.astype(np.int32),
    }


def select(arrays: Arrays, rows: np.ndarray) -> Arrays:
    """The same rows of every field (boolean mask or indices)."""
    return {name: values[rows] for name, values in arrays.items()}


def content_order(arrays: Arrays) -> np.ndarray:
    """A row order that depends on what each sample holds, never on its subject id: the rows'
    bytes (every field but `subject_id`) sorted as opaque keys. Samples in this order are drawn,
    batched and split the same way whatever the ids are (raw or pseudonymised); rows with the
    same content are interchangeable."""
    n = len(arrays["subject_id"])
    if n == 0:
        return np.zeros(0, np.int64)
    columns = [
        np.ascontiguousarray(arrays[name]).reshape(n, -1).view(np.uint8).reshape(n, -1)
        for name in FIELDS
        if name != "subject_id"
    ]
    rows = np.ascontiguousarray(np.concatenate(columns, axis=1))
    return np.argsort(rows.view(np.dtype((np.void, rows.shape[1]))).ravel(), kind="stable")


def concat(parts: list[Arrays]) -> Arrays:
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}


def latest_per_subject(arrays: Arrays) -> Arrays:
    """One sample per subject, the one with the latest prediction day, in content order (a sample
    drawn from them is the same patients whatever their ids)."""
    order = np.lexsort((-arrays["prediction_day"].astype(np.int64), arrays["subject_id"]))
    ordered = select(arrays, order)
    first = np.r_[True, ordered["subject_id"][1:] != ordered["subject_id"][:-1]] if len(order) else np.zeros(0, bool)
    latest = select(ordered, first)
    return select(latest, content_order(latest))


__all__ = [
    "FIELDS",
    "FIRST_CODE_ID",
    "Arrays",
    "Layout",
    "MODEL_INPUTS",
    "concat",
    "content_order",
    "labelled_samples",
    "latest_per_subject",
    "next_visit_samples",
    "select",
]
