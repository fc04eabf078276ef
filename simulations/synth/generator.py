"""Vectorised synthetic pediatric claims for many institutions (docs/architecture.md §5).

Every patient has an enrollment window, an index date (the prediction time of the label tasks)
and latent traits (atopy, ADHD, obesity, type 1 diabetes, depression/anxiety). Visits come from
independent vectorised *blocks*: scheduled well-child care, acute illness, allergy care and the
courses of chronic conditions, each preceded by a prodrome so that history predicts onset:
wheeze, bronchospasm and albuterol before asthma; somatic complaints and suicidal ideation
before self-harm. A block emits (patient, day, concept) rows; the site's coding dialect then
turns concepts into code strings. No Python loop runs per patient or per event.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from shared_model.data.meds import BIRTH_CODE, assign_splits, write_meds
from shared_model.tensors.vocabulary import INDEX_CODE
from simulations.synth.catalog import Catalog, build_catalog
from simulations.synth.profiles import ConsortiumShift, SiteProfile, consortium_profiles, default_profiles

log = logging.getLogger(__name__)

YEAR = 365.25
NEVER = np.int64(10**7)  # a day far beyond any window
WINDOW_FIRST = int(np.datetime64("2016-01-01", "D").astype(np.int64))
WINDOW_LAST = int(np.datetime64("2024-01-01", "D").astype(np.int64))
COVID_START = int(np.datetime64("2020-03-01", "D").astype(np.int64))
GENERATOR_VERSION = "2"  # 2: an INDEX_DATE event per patient; labels defined on the data
POPULATION_STREAM = 0x909  # the random stream of a site's population sample, apart from the site's own


@dataclass(frozen=True, eq=False)
class Cohort:
    """Per-patient arrays (days are days since 1970-01-01)."""

    female: np.ndarray
    birth: np.ndarray
    start: np.ndarray
    end: np.ndarray
    index_day: np.ndarray
    frailty: np.ndarray
    atopic: np.ndarray
    obese: np.ndarray
    asthma_onset: np.ndarray
    adhd_onset: np.ndarray
    t1d_onset: np.ndarray
    internalizing_onset: np.ndarray
    depressive: np.ndarray  # else anxious, for those with internalizing onset
    self_harm_day: np.ndarray

    @property
    def size(self) -> int:
        return len(self.birth)

    def age_years(self, day: np.ndarray, who: np.ndarray | slice = slice(None)) -> np.ndarray:
        return (day - self.birth[who]) / YEAR


@dataclass
class EventRows:
    """Accumulates (patient, day, concept) rows from the blocks; local to one site's run."""

    patient: list[np.ndarray] = field(default_factory=list)
    day: list[np.ndarray] = field(default_factory=list)
    concept: list[np.ndarray] = field(default_factory=list)

    def add(self, patient: np.ndarray, day: np.ndarray, concept: np.ndarray | int) -> None:
        patient = np.asarray(patient, dtype=np.int64)
        self.patient.append(patient)
        self.day.append(np.broadcast_to(np.asarray(day, dtype=np.int64), patient.shape).copy())
        self.concept.append(np.broadcast_to(np.asarray(concept, dtype=np.int64), patient.shape).copy())

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return np.concatenate(self.patient), np.concatenate(self.day), np.concatenate(self.concept)


@dataclass(frozen=True, eq=False)
class SiteData:
    profile: SiteProfile
    events: pd.DataFrame
    splits: pd.DataFrame
    labels: dict[str, pd.DataFrame]
    codes: pd.DataFrame


# --------------------------------------------------------------------------------------------
# Small vectorised helpers
# --------------------------------------------------------------------------------------------


def _poisson_days(
    rng: np.random.Generator, lo: np.ndarray, hi: np.ndarray, rate: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Events of a Poisson process with per-patient `rate` (per year) on [lo, hi)."""
    span = np.maximum(hi - lo, 0)
    counts = rng.poisson(rate * span / YEAR)
    who = np.repeat(np.arange(len(lo)), counts)
    day = lo[who] + np.floor(rng.random(who.size) * span[who]).astype(np.int64)
    return who, day


def _choose(rng: np.random.Generator, weights: np.ndarray | list[float], size: int | None = None) -> np.ndarray:
    """One index per row of a (rows, k) weight matrix, or `size` draws from one (k,) vector."""
    weights = np.asarray(weights, dtype=np.float64)
    if weights.ndim == 1:
        return rng.choice(weights.size, size=size, p=weights / weights.sum())
    cum = np.cumsum(weights, axis=1)
    u = rng.random((cum.shape[0], 1)) * cum[:, -1:]
    return np.minimum((u > cum).sum(axis=1), weights.shape[1] - 1)


def _emit_template(
    rng: np.random.Generator,
    rows: EventRows,
    patient: np.ndarray,
    day: np.ndarray,
    concepts: np.ndarray,
    probs: np.ndarray,
) -> np.ndarray:
    """Emit concept j at visit i with probability probs[i, j]; returns the emitted mask."""
    mask = rng.random(probs.shape, dtype=np.float32) < probs
    visit, slot = np.nonzero(mask)
    rows.add(patient[visit], day[visit], concepts[slot])
    return mask


def _companion_matrix(
    cat: Catalog, keys: list[str], table: dict[str, dict[str, float]]
) -> tuple[np.ndarray, np.ndarray]:
    """(len(keys), m) probabilities of m companion concepts given each key concept."""
    companions = sorted({c for k in keys for c in table.get(k, {})})
    probs = np.zeros((len(keys), len(companions)), dtype=np.float32)
    for i, key in enumerate(keys):
        for name, p in table.get(key, {}).items():
            probs[i, companions.index(name)] = p
    return cat.ids(*companions), probs


def _emit_visit(
    rng: np.random.Generator,
    rows: EventRows,
    cat: Catalog,
    patient: np.ndarray,
    day: np.ndarray,
    visit_type: np.ndarray,
) -> None:
    """The visit-type code and the E&M procedure of each visit (0 OP, 1 ER, 2 IP, 3 RX)."""
    names = np.array(["visit_op", "visit_er", "visit_ip", "visit_rx"])
    rows.add(patient, day, cat.ids(*names)[visit_type])
    for vt, em in ((0, "office_em"), (1, "er_em"), (2, "ip_em")):
        sel = visit_type == vt
        rows.add(patient[sel], day[sel], cat.id(em))
    ip = visit_type == 2
    stay = rng.integers(1, 5, size=int(ip.sum()))
    rows.add(patient[ip], day[ip] + stay, cat.id("discharge"))
    rows.add(patient[ip], day[ip] + stay, cat.id("visit_ip"))


def _emit_drugs(
    rng: np.random.Generator,
    rows: EventRows,
    cat: Catalog,
    patient: np.ndarray,
    day: np.ndarray,
    drug: np.ndarray,
    lag_share: float = 0.35,
) -> None:
    """Dispense drugs the same day or, as a separate pharmacy (RX) visit, the next day."""
    lag = (rng.random(patient.size) < lag_share).astype(np.int64)
    rows.add(patient, day + lag, drug)
    rows.add(patient[lag == 1], day[lag == 1] + 1, cat.id("visit_rx"))


def _emit_with_companions(
    rng: np.random.Generator,
    rows: EventRows,
    cat: Catalog,
    patient: np.ndarray,
    day: np.ndarray,
    key: np.ndarray,
    keys: list[str],
    table: dict[str, dict[str, float]],
    scale: np.ndarray | float = 1.0,
) -> None:
    """Emit the key concepts and their companions (tests, drugs, symptoms) by probability."""
    key_ids = cat.ids(*keys)
    rows.add(patient, day, key_ids[key])
    companions, probs = _companion_matrix(cat, keys, table)
    if companions.size == 0:
        return
    p = probs[key] * np.asarray(scale, dtype=np.float32).reshape(-1, 1)
    mask = rng.random(p.shape, dtype=np.float32) < p
    visit, slot = np.nonzero(mask)
    concept = companions[slot]
    is_drug = cat.kind[concept] == "rx"
    rows.add(patient[visit][~is_drug], day[visit][~is_drug], concept[~is_drug])
    _emit_drugs(rng, rows, cat, patient[visit][is_drug], day[visit][is_drug], concept[is_drug])


# --------------------------------------------------------------------------------------------
# Cohort
# --------------------------------------------------------------------------------------------


def sample_cohort(rng: np.random.Generator, profile: SiteProfile) -> Cohort:
    n = profile.n_patients
    female = rng.random(n) < 0.49
    duration = np.minimum(1.5 * YEAR + rng.gamma(2.0, 0.9, n) * YEAR, 7.5 * YEAR).astype(np.int64)
    start = WINDOW_FIRST + (rng.random(n) * (WINDOW_LAST - WINDOW_FIRST - duration)).astype(np.int64)
    end = start + duration
    band = _choose(rng, profile.age_mix, n)
    band_lo = np.array([0.0, 2.0, 10.0])[band]
    band_hi = np.array([2.0, 10.0, 16.0])[band]
    age0 = band_lo + rng.random(n) * (band_hi - band_lo)
    age0 = np.where((band == 0) & (rng.random(n) < 0.4), 0.0, age0)  # enrolled at birth
    age0 = np.minimum(age0, 18.9 - duration / YEAR)
    birth = start - (age0 * YEAR).astype(np.int64)
    index_day = start + (0.5 * YEAR + rng.random(n) * (duration - 1.5 * YEAR)).astype(np.int64)
    age_at_index = (index_day - birth) / YEAR
    male_child = (~female) & (age_at_index < 12)

    atopic = rng.random(n) < profile.atopy_prevalence * np.where(male_child, 1.2, 0.9)
    obese = rng.random(n) < profile.obesity_prevalence * np.clip(age_at_index / 6, 0.2, 1.2)

    # Asthma: prevalent before the index date, incident within 12 months after it, or neither.
    p_prev = np.where(atopic, 0.30, 0.03) * profile.asthma_risk * np.clip((age_at_index - 1.5) / 4, 0, 1)
    p_inc = np.where(atopic, 0.22, 0.022) * profile.asthma_risk
    p_inc = p_inc * np.where(age_at_index < 2, 0.3, 1.0) * np.where(male_child, 1.3, 1.0)
    u = rng.random(n)
    earliest = np.maximum(birth + int(1.5 * YEAR), start - 4 * int(YEAR))
    prevalent = (u < p_prev) & (earliest < index_day - 30)
    incident = (~prevalent) & (u >= p_prev) & (u < p_prev + p_inc)
    asthma_onset = np.full(n, NEVER)
    asthma_onset[prevalent] = earliest[prevalent] + (
        rng.random(prevalent.sum()) * (index_day[prevalent] - 30 - earliest[prevalent])
    ).astype(np.int64)
    asthma_onset[incident] = index_day[incident] + rng.integers(1, 366, incident.sum())

    adhd = rng.random(n) < profile.adhd_risk * np.where(female, 0.05, 0.12)
    adhd_onset = np.where(adhd, birth + ((5 + 5 * rng.random(n)) * YEAR).astype(np.int64), NEVER)
    t1d = rng.random(n) < profile.t1d_prevalence
    t1d_onset = np.where(t1d, birth + ((2 + 14 * rng.random(n)) * YEAR).astype(np.int64), NEVER)

    # Depression/anxiety from late childhood; self-harm within 12 months of the index date.
    p_int = profile.mental_health_risk * np.where(female, 0.16, 0.09) * np.clip((age_at_index - 8) / 4, 0, 1)
    internalizing = rng.random(n) < p_int
    int_onset_age = np.maximum(9 + 7 * rng.random(n), age_at_index - 3 + 4.5 * rng.random(n))
    internalizing_onset = np.where(internalizing, birth + (int_onset_age * YEAR).astype(np.int64), NEVER)
    depressive = rng.random(n) < 0.5
    int_before = internalizing_onset < index_day
    int_soon = (internalizing_onset >= index_day) & (internalizing_onset < index_day + 365)
    p_sh = profile.mental_health_risk * (0.003 + 0.12 * int_before + 0.05 * int_soon + 0.01 * adhd + 0.004 * female)
    p_sh = np.where(age_at_index >= 10, p_sh, 0.0)
    self_harm = rng.random(n) < p_sh
    self_harm_day = np.where(self_harm, index_day + rng.integers(1, 366, n), NEVER)

    return Cohort(
        female=female,
        birth=birth,
        start=start,
        end=end,
        index_day=index_day,
        frailty=rng.gamma(2.0, 0.5, n),
        atopic=atopic,
        obese=obese,
        asthma_onset=asthma_onset,
        adhd_onset=adhd_onset,
        t1d_onset=t1d_onset,
        internalizing_onset=internalizing_onset,
        depressive=depressive,
        self_harm_day=self_harm_day,
    )


# --------------------------------------------------------------------------------------------
# Visit blocks
# --------------------------------------------------------------------------------------------

# (age in days, vaccines due) of the AAP periodicity schedule
WELL_SCHEDULE: tuple[tuple[int, tuple[str, ...]], ...] = (
    (4, ("vax_hepb",)),
    (30, ("vax_hepb",)),
    (61, ("vax_dtap", "vax_ipv", "vax_hib", "vax_pcv", "vax_rota", "vax_hepb")),
    (122, ("vax_dtap", "vax_ipv", "vax_hib", "vax_pcv", "vax_rota")),
    (183, ("vax_dtap", "vax_pcv", "vax_rota", "vax_hepb")),
    (274, ()),
    (365, ("vax_mmr", "vax_varicella", "vax_hepa", "vax_pcv", "vax_hib")),
    (456, ("vax_dtap",)),
    (548, ("vax_hepa",)),
    (730, ()),
    (913, ()),
    (1096, ()),
    (1461, ("vax_dtap", "vax_ipv", "vax_mmr", "vax_varicella")),
    *((int(a * YEAR), ()) for a in range(5, 11)),
    (int(11 * YEAR), ("vax_tdap", "vax_hpv", "vax_menacwy")),
    (int(12 * YEAR), ("vax_hpv",)),
    *((int(a * YEAR), ()) for a in range(13, 16)),
    (int(16 * YEAR), ("vax_menacwy",)),
    (int(17 * YEAR), ()),
    (int(18 * YEAR), ()),
)
VACCINES = (
    "vax_hepb",
    "vax_dtap",
    "vax_ipv",
    "vax_hib",
    "vax_pcv",
    "vax_rota",
    "vax_mmr",
    "vax_varicella",
    "vax_hepa",
    "vax_tdap",
    "vax_hpv",
    "vax_menacwy",
)


def well_child(rng: np.random.Generator, cohort: Cohort, profile: SiteProfile, cat: Catalog, rows: EventRows) -> None:
    ages = np.array([a for a, _ in WELL_SCHEDULE], dtype=np.int64)
    jitter_sd = np.where(ages < 730, 6, 40)
    day = (
        cohort.birth[:, None]
        + ages[None, :]
        + (rng.normal(0, 1, (cohort.size, ages.size)) * jitter_sd).astype(np.int64)
    )
    compliance = profile.well_child_compliance * np.where(ages >= 12 * YEAR, 0.8, 1.0)
    keep = (day >= cohort.start[:, None]) & (day < cohort.end[:, None]) & (rng.random(day.shape) < compliance)
    patient, slot = np.nonzero(keep)
    day = day[patient, slot]
    age = ages[slot]
    n = patient.size

    rows.add(patient, day, cat.id("visit_op"))
    rows.add(patient, day, cat.id("well_exam"))
    preventive = np.select(
        [age < 365, age < 5 * YEAR, age < 12 * YEAR, age < 18 * YEAR],
        cat.ids("prev_infant", "prev_early", "prev_late", "prev_adolescent"),
        cat.id("prev_adult"),
    )
    rows.add(patient, day, preventive)

    due = np.array([[v in vaccines for v in VACCINES] for _, vaccines in WELL_SCHEDULE], dtype=bool)
    given = _emit_template(
        rng, rows, patient, day, cat.ids(*VACCINES), due[slot].astype(np.float32) * profile.vaccine_uptake
    )
    month = ((day.astype("datetime64[D]").astype("datetime64[M]").astype(np.int64)) % 12) + 1
    flu = (rng.random(n) < 0.5 * profile.vaccine_uptake) & (month >= 9) & (age >= 183)
    rows.add(patient[flu], day[flu], cat.id("vax_flu"))
    any_shot = given.any(axis=1) | flu
    rows.add(patient[any_shot], day[any_shot], cat.id("vax_admin"))
    rows.add(patient[any_shot], day[any_shot], cat.id("immunization"))

    obese = cohort.obese[patient] & (age >= 2 * YEAR)
    active = lambda onset: onset[patient] <= day  # noqa: E731 - tiny local predicate
    columns = {
        "dev_screen": np.isin(age, [274, 548, 913]) * 0.8,
        "behav_assess": (age >= 12 * YEAR) * 0.6,
        "vision_screen": (age >= 3 * YEAR) * 0.5,
        "hearing_screen": (age >= 4 * YEAR) * 0.3,
        "lead_test": np.isin(age, [365, 730]) * 0.5,
        "hemoglobin": (age == 365) * 0.5,
        "bmi_normal": ((age >= 2 * YEAR) & ~obese) * 0.6,
        "bmi_obese": obese * 0.7,
        "obesity": obese * 0.5,
        "diet_counsel": obese * 0.4,
        "eczema": (cohort.atopic[patient] & (age < 3 * YEAR)) * 0.25,
        "allergic_rhinitis": (cohort.atopic[patient] & (age >= 3 * YEAR)) * 0.15,
        "adhd": active(cohort.adhd_onset) * 0.5,
        "depression": (active(cohort.internalizing_onset) & cohort.depressive[patient]) * 0.4,
        "anxiety": (active(cohort.internalizing_onset) & ~cohort.depressive[patient]) * 0.4,
        "asthma": active(cohort.asthma_onset) * 0.5,
        "t1d": active(cohort.t1d_onset) * 0.6,
    }
    probs = np.stack([np.asarray(v, dtype=np.float32) for v in columns.values()], axis=1)
    _emit_template(rng, rows, patient, day, cat.ids(*columns), probs)


ACUTE = (
    "otitis",
    "uri",
    "pharyngitis",
    "bronchiolitis",
    "gastroenteritis",
    "conjunctivitis",
    "pneumonia",
    "uti",
    "fever",
    "croup",
    "sinusitis",
    "influenza",
    "viral",
    "covid",
    "injury",
    "rash",
    "abdominal_pain",
    "headache",
    "cough",
    "bronchitis",
    "constipation",
)
# weights of ACUTE diagnoses by age band <1, 1-4, 5-11, 12+ years
ACUTE_WEIGHTS = np.array(
    [
        [20, 25, 1, 15, 8, 6, 2, 2, 8, 3, 0, 2, 8, 0, 2, 6, 0.5, 0, 5, 1, 3],
        [18, 22, 5, 3, 8, 5, 3, 2, 6, 5, 1, 4, 7, 0, 6, 5, 2, 0.5, 6, 2, 4],
        [6, 15, 14, 0, 6, 3, 2, 2, 3, 1, 5, 6, 5, 0, 12, 4, 5, 3, 5, 3, 4],
        [2, 14, 12, 0, 6, 2, 2, 4, 2, 0, 7, 6, 4, 0, 18, 4, 6, 6, 4, 3, 2],
    ],
    dtype=np.float64,
)
RESPIRATORY = ("bronchiolitis", "pneumonia", "croup", "cough", "bronchitis")
ACUTE_COMPANIONS: dict[str, dict[str, float]] = {
    "otitis": {"amoxicillin": 0.6, "amox_clav": 0.15, "cefdinir": 0.1, "ibuprofen": 0.2},
    "uri": {"acetaminophen": 0.15},
    "pharyngitis": {"strep_test": 0.75, "amoxicillin": 0.4, "azithromycin": 0.1},
    "bronchiolitis": {"nebulizer": 0.1},
    "gastroenteritis": {"ondansetron": 0.3},
    "conjunctivitis": {"erythromycin_eye": 0.6},
    "pneumonia": {"chest_xray": 0.6, "amoxicillin": 0.5, "azithromycin": 0.3, "ceftriaxone": 0.1, "injection": 0.1},
    "uti": {"urinalysis": 0.8, "urine_culture": 0.6, "cephalexin": 0.4, "tmp_smx": 0.3},
    "fever": {"acetaminophen": 0.3, "ibuprofen": 0.3, "urinalysis": 0.2},
    "croup": {"prednisolone": 0.5},
    "sinusitis": {"amox_clav": 0.5, "amoxicillin": 0.3},
    "influenza": {"flu_test": 0.6, "oseltamivir": 0.5},
    "covid": {"covid_test": 0.7},
    "injury": {"xray_ankle": 0.3, "wound_repair": 0.2, "ibuprofen": 0.3},
    "rash": {"hydrocortisone_top": 0.3, "mupirocin": 0.1},
    "abdominal_pain": {"urinalysis": 0.2},
    "headache": {"ibuprofen": 0.2},
    "bronchitis": {"azithromycin": 0.1, "albuterol": 0.1},
    "constipation": {"peg3350": 0.6},
}


def _acute_rate(age: np.ndarray) -> np.ndarray:
    return np.select([age < 1, age < 5, age < 12], [4.0, 3.2, 1.8], 1.3)


def _seasonal_keep(rng: np.random.Generator, day: np.ndarray) -> np.ndarray:
    """Thin uniformly drawn days to a winter-peaked season (keep probability 0.43-1)."""
    doy = (day - 15) % 365.25
    return rng.random(day.size) < (1 + 0.4 * np.cos(2 * np.pi * doy / 365.25)) / 1.4


def acute_illness(
    rng: np.random.Generator, cohort: Cohort, profile: SiteProfile, cat: Catalog, rows: EventRows
) -> None:
    mid_age = cohort.age_years((cohort.start + cohort.end) // 2)
    rate = _acute_rate(mid_age) * profile.acute_visit_rate * cohort.frailty * np.where(cohort.atopic, 1.3, 1.0)
    patient, day = _poisson_days(rng, cohort.start, cohort.end, rate * 1.4)
    keep = _seasonal_keep(rng, day)
    patient, day = patient[keep], day[keep]
    age = cohort.age_years(day, patient)
    band = np.digitize(age, [1, 5, 12])
    dx = _choose(rng, ACUTE_WEIGHTS[band])
    # atopic children present more often with lower-respiratory illness; COVID after March 2020
    respiratory = np.array([ACUTE.index(r) for r in RESPIRATORY])
    swap = cohort.atopic[patient] & (rng.random(dx.size) < 0.2)
    dx[swap] = respiratory[rng.integers(0, respiratory.size, swap.sum())]
    dx[(day < COVID_START) & (dx == ACUTE.index("covid"))] = ACUTE.index("viral")
    covid = (day >= COVID_START) & (rng.random(dx.size) < 0.05)
    dx[covid] = ACUTE.index("covid")

    er_p = profile.er_share * np.where(age < 2, 1.4, 1.0) * np.where(dx == ACUTE.index("injury"), 1.8, 1.0)
    ip_p = 0.003 * profile.inpatient_rate * np.where(np.isin(dx, respiratory[:2]), 5.0, 1.0)
    u = rng.random(dx.size)
    visit_type = np.where(u < ip_p, 2, np.where(u < ip_p + er_p, 1, 0))
    _emit_visit(rng, rows, cat, patient, day, visit_type)
    _emit_with_companions(rng, rows, cat, patient, day, dx, list(ACUTE), ACUTE_COMPANIONS)
    # wheezing is coded for some atopic children at respiratory visits
    resp = np.isin(dx, respiratory) & cohort.atopic[patient]
    wheeze = resp & (rng.random(dx.size) < 0.3 * profile.symptom_coding)
    rows.add(patient[wheeze], day[wheeze], cat.id("wheeze"))


def allergy_care(rng: np.random.Generator, cohort: Cohort, profile: SiteProfile, cat: Catalog, rows: EventRows) -> None:
    """Eczema, allergic rhinitis and wheezy episodes of atopic children (asthma or not)."""
    rate = np.where(cohort.atopic, 0.7, 0.05)
    patient, day = _poisson_days(rng, cohort.start, cohort.end, rate)
    young = cohort.age_years(day, patient) < 4
    weights = np.where(young[:, None], [[0.75, 0.1, 0.15]], [[0.25, 0.6, 0.15]])
    keys = ["eczema", "allergic_rhinitis", "food_allergy"]
    _emit_visit(rng, rows, cat, patient, day, np.zeros(patient.size, dtype=np.int64))
    _emit_with_companions(
        rng,
        rows,
        cat,
        patient,
        day,
        _choose(rng, weights),
        keys,
        {
            "eczema": {"hydrocortisone_top": 0.5, "triamcinolone_top": 0.2},
            "allergic_rhinitis": {"cetirizine": 0.6},
            "food_allergy": {"cetirizine": 0.2},
        },
    )
    # wheezy episodes: shared by asthmatic and non-asthmatic atopic children (diagnostic noise)
    rate = np.where(cohort.atopic, 0.3, 0.03) * profile.symptom_coding
    patient, day = _poisson_days(rng, cohort.start, cohort.end, rate)
    _respiratory_episode(rng, rows, cat, patient, day, er_share=0.2)


def _respiratory_episode(
    rng: np.random.Generator, rows: EventRows, cat: Catalog, patient: np.ndarray, day: np.ndarray, er_share: float
) -> None:
    visit_type = (rng.random(patient.size) < er_share).astype(np.int64)
    _emit_visit(rng, rows, cat, patient, day, visit_type)
    keys = ["wheeze", "cough", "bronchospasm", "bronchitis"]
    dx = _choose(rng, [0.4, 0.25, 0.2, 0.15], patient.size)
    scale = np.where(visit_type == 1, 1.5, 1.0)
    _emit_with_companions(
        rng,
        rows,
        cat,
        patient,
        day,
        dx,
        keys,
        {k: {"albuterol": 0.4, "nebulizer": 0.3, "prednisolone": 0.12} for k in keys},
        scale=scale,
    )


def asthma_course(
    rng: np.random.Generator, cohort: Cohort, profile: SiteProfile, cat: Catalog, rows: EventRows
) -> None:
    who = np.flatnonzero(cohort.asthma_onset < NEVER)
    onset = cohort.asthma_onset[who]
    # prodrome: wheeze, cough, bronchospasm in the months before the diagnosis
    k = 1 + rng.poisson(1.6 * profile.symptom_coding, who.size)
    patient = np.repeat(who, k)
    day = np.repeat(onset, k) - rng.integers(7, 300, patient.size)
    _respiratory_episode(rng, rows, cat, patient, day, er_share=0.3)
    # diagnosis visit
    _emit_visit(rng, rows, cat, who, onset, np.zeros(who.size, dtype=np.int64))
    age = cohort.age_years(onset, who)
    _emit_with_companions(
        rng,
        rows,
        cat,
        who,
        onset,
        np.zeros(who.size, dtype=np.int64),
        ["asthma"],
        {"asthma": {"spirometry": 0.35, "albuterol": 0.9, "fluticasone": 0.4, "budesonide": 0.2, "montelukast": 0.2}},
        scale=np.where(age < 6, 0.8, 1.0),
    )
    # follow-up, exacerbations and refills after the diagnosis
    end = cohort.end[who]
    patient, day = _poisson_days(rng, onset, end, np.full(who.size, 2.0))
    _emit_visit(rng, rows, cat, who[patient], day, np.zeros(patient.size, dtype=np.int64))
    _emit_with_companions(
        rng,
        rows,
        cat,
        who[patient],
        day,
        np.zeros(patient.size, dtype=np.int64),
        ["asthma"],
        {"asthma": {"albuterol": 0.6, "fluticasone": 0.3, "montelukast": 0.15}},
    )
    patient, day = _poisson_days(rng, onset, end, np.full(who.size, 0.35 * profile.asthma_risk))
    visit_type = np.where(rng.random(patient.size) < 0.6, 1, 0)
    visit_type[rng.random(patient.size) < 0.05] = 2
    _emit_visit(rng, rows, cat, who[patient], day, visit_type)
    _emit_with_companions(
        rng,
        rows,
        cat,
        who[patient],
        day,
        np.zeros(patient.size, dtype=np.int64),
        ["asthma_exacerbation"],
        {"asthma_exacerbation": {"nebulizer": 0.7, "prednisolone": 0.7}},
    )
    _refills(rng, rows, cat, who, onset, end, 3.0, ["albuterol", "fluticasone", "montelukast"], [0.6, 0.3, 0.1])


def _refills(
    rng: np.random.Generator,
    rows: EventRows,
    cat: Catalog,
    who: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    rate: float,
    drugs: list[str],
    weights: list[float],
) -> None:
    patient, day = _poisson_days(rng, lo, hi, np.full(who.size, rate))
    drug = cat.ids(*drugs)[_choose(rng, weights, patient.size)]
    rows.add(who[patient], day, cat.id("visit_rx"))
    rows.add(who[patient], day, drug)


def adhd_course(rng: np.random.Generator, cohort: Cohort, profile: SiteProfile, cat: Catalog, rows: EventRows) -> None:
    who = np.flatnonzero(cohort.adhd_onset < NEVER)
    onset = cohort.adhd_onset[who]
    k = rng.poisson(1.0 * profile.symptom_coding, who.size)
    patient = np.repeat(who, k)
    day = np.repeat(onset, k) - rng.integers(14, 365, patient.size)
    _emit_visit(rng, rows, cat, patient, day, np.zeros(patient.size, dtype=np.int64))
    _emit_with_companions(
        rng,
        rows,
        cat,
        patient,
        day,
        np.zeros(patient.size, dtype=np.int64),
        ["behavior"],
        {"behavior": {"behav_assess": 0.5}},
    )
    patient, day = _poisson_days(rng, onset, cohort.end[who], np.full(who.size, 3.0))
    patient = np.r_[np.arange(who.size), patient]
    day = np.r_[onset, day]
    _emit_visit(rng, rows, cat, who[patient], day, np.zeros(patient.size, dtype=np.int64))
    _emit_with_companions(
        rng,
        rows,
        cat,
        who[patient],
        day,
        np.zeros(patient.size, dtype=np.int64),
        ["adhd"],
        {"adhd": {"behav_assess": 0.4}},
    )
    _refills(
        rng,
        rows,
        cat,
        who,
        onset,
        cohort.end[who],
        5.0,
        ["methylphenidate", "amphetamine", "guanfacine"],
        [0.5, 0.4, 0.1],
    )


def obesity_care(rng: np.random.Generator, cohort: Cohort, profile: SiteProfile, cat: Catalog, rows: EventRows) -> None:
    who = np.flatnonzero(cohort.obese)
    patient, day = _poisson_days(rng, cohort.start[who], cohort.end[who], np.full(who.size, 0.5))
    patient = who[patient]
    _emit_visit(rng, rows, cat, patient, day, np.zeros(patient.size, dtype=np.int64))
    _emit_with_companions(
        rng,
        rows,
        cat,
        patient,
        day,
        np.zeros(patient.size, dtype=np.int64),
        ["obesity"],
        {"obesity": {"a1c": 0.3, "lipid_panel": 0.3, "diet_counsel": 0.5, "bmi_obese": 0.5}},
    )


def diabetes_course(
    rng: np.random.Generator, cohort: Cohort, profile: SiteProfile, cat: Catalog, rows: EventRows
) -> None:
    who = np.flatnonzero(cohort.t1d_onset < NEVER)
    onset = cohort.t1d_onset[who]
    pre = onset - rng.integers(3, 60, who.size)
    _emit_visit(rng, rows, cat, who, pre, np.zeros(who.size, dtype=np.int64))
    _emit_template(
        rng,
        rows,
        who,
        pre,
        cat.ids("polydipsia", "polyuria", "weight_loss", "glucose_test"),
        np.tile(np.float32([0.6, 0.5, 0.4, 0.5]), (who.size, 1)),
    )
    _emit_visit(rng, rows, cat, who, onset, np.full(who.size, 2, dtype=np.int64))
    for name in ("dka", "t1d", "glucose_test", "a1c", "insulin_lispro", "insulin_glargine"):
        rows.add(who, onset, cat.id(name))
    patient, day = _poisson_days(rng, onset, cohort.end[who], np.full(who.size, 4.0))
    _emit_visit(rng, rows, cat, who[patient], day, np.zeros(patient.size, dtype=np.int64))
    _emit_with_companions(
        rng, rows, cat, who[patient], day, np.zeros(patient.size, dtype=np.int64), ["t1d"], {"t1d": {"a1c": 0.8}}
    )
    _refills(rng, rows, cat, who, onset, cohort.end[who], 8.0, ["insulin_lispro", "insulin_glargine"], [0.5, 0.5])


def mental_health_course(
    rng: np.random.Generator, cohort: Cohort, profile: SiteProfile, cat: Catalog, rows: EventRows
) -> None:
    who = np.flatnonzero(cohort.internalizing_onset < NEVER)
    onset = cohort.internalizing_onset[who]
    diagnosis = np.where(cohort.depressive[who], 0, 1)
    keys = ["depression", "anxiety"]
    # prodrome: somatic complaints, sleep problems and family conflict in the year before
    k = 1 + rng.poisson(1.2 * profile.symptom_coding, who.size)
    patient = np.repeat(who, k)
    day = np.repeat(onset, k) - rng.integers(14, 365, patient.size)
    complaint = _choose(rng, [0.3, 0.3, 0.15, 0.15, 0.1], patient.size)
    _emit_visit(rng, rows, cat, patient, day, np.zeros(patient.size, dtype=np.int64))
    _emit_with_companions(
        rng,
        rows,
        cat,
        patient,
        day,
        complaint,
        ["abdominal_pain", "headache", "insomnia", "emotional", "family_conflict"],
        {k: {"behav_assess": 0.4} for k in ["emotional", "insomnia", "family_conflict"]},
    )
    # diagnosis and psychotherapy
    _emit_visit(rng, rows, cat, who, onset, np.zeros(who.size, dtype=np.int64))
    _emit_with_companions(
        rng, rows, cat, who, onset, diagnosis, keys, {k: {"psych_eval": 0.5, "behav_assess": 0.6} for k in keys}
    )
    in_therapy = rng.random(who.size) < 0.6
    patient, day = _poisson_days(rng, onset, cohort.end[who], np.where(in_therapy, 5.0, 0.5))
    _emit_visit(rng, rows, cat, who[patient], day, np.zeros(patient.size, dtype=np.int64))
    _emit_with_companions(
        rng, rows, cat, who[patient], day, diagnosis[patient], keys, {k: {"psychotherapy": 0.9} for k in keys}
    )
    medicated = rng.random(who.size) < 0.5
    _refills(
        rng,
        rows,
        cat,
        who[medicated],
        onset[medicated],
        cohort.end[who][medicated],
        6.0,
        ["sertraline", "fluoxetine", "escitalopram"],
        [0.45, 0.35, 0.2],
    )
    # suicidal ideation: often before self-harm, sometimes without it
    harm = np.flatnonzero(cohort.self_harm_day < NEVER)
    ideation = harm[rng.random(harm.size) < 0.6]
    day = cohort.self_harm_day[ideation] - rng.integers(14, 200, ideation.size)
    noise = who[rng.random(who.size) < 0.08]
    noise_day = cohort.internalizing_onset[noise] + rng.integers(0, 365, noise.size)
    patient, day = np.r_[ideation, noise], np.r_[day, noise_day]
    _emit_visit(rng, rows, cat, patient, day, np.ones(patient.size, dtype=np.int64))
    rows.add(patient, day, cat.id("suicidal_ideation"))
    _emit_template(
        rng, rows, patient, day, cat.ids("psych_eval", "depression"), np.tile(np.float32([0.6, 0.4]), (patient.size, 1))
    )
    # the self-harm event itself
    day = cohort.self_harm_day[harm]
    visit_type = np.where(rng.random(harm.size) < 0.3, 2, 1)
    _emit_visit(rng, rows, cat, harm, day, visit_type)
    rows.add(harm, day, cat.id("self_harm"))
    _emit_template(
        rng,
        rows,
        harm,
        day,
        cat.ids("suicidal_ideation", "psych_eval", "depression"),
        np.tile(np.float32([0.6, 0.5, 0.4]), (harm.size, 1)),
    )


BLOCKS = (
    well_child,
    acute_illness,
    allergy_care,
    asthma_course,
    adhd_course,
    obesity_care,
    diabetes_course,
    mental_health_course,
)


# --------------------------------------------------------------------------------------------
# Coding dialect, labels, assembly
# --------------------------------------------------------------------------------------------


def dialect_probabilities(cat: Catalog, profile: SiteProfile) -> np.ndarray:
    """(concepts, width) probability of each candidate code under the site's coding habits."""
    present = cat.codes >= 0
    n_candidates = present.sum(axis=1, keepdims=True)
    position = np.arange(cat.codes.shape[1])[None, :]
    dx = np.where(position == 0, 1 - profile.specificity, profile.specificity / np.maximum(n_candidates - 1, 1))
    dx = np.where(n_candidates == 1, (position == 0).astype(float), dx)
    rx = np.where(position == 0, 1 - profile.ndc_share, profile.ndc_share / np.maximum(n_candidates - 1, 1))
    centred = position - (n_candidates - 1) / 2
    px = cat.weights * np.exp(profile.em_intensity * centred)
    kind = cat.kind[:, None]
    probs = np.select([kind == "dx", kind == "rx", kind == "px"], [dx, rx, px], (position == 0).astype(float))
    probs = np.where(present, probs, 0.0)
    return probs / probs.sum(axis=1, keepdims=True)


#: the built-in tasks' outcome codes (each task's ACES configuration, simulations/synth/tasks/, says the same)
ASTHMA_CODES = re.compile(r"^ICD10CM/J45")
SELF_HARM_CODES = re.compile(r"^ICD10CM/(X7[1-9]|X8[0-3]|T14\.91|T(3[6-9]|[45][0-9]|6[0-5])\.[0-9A-Z]{2}2)")


def _labels(
    cohort: Cohort, patient: np.ndarray, day: np.ndarray, code: np.ndarray, codes: list[str], subject_ids: np.ndarray
) -> dict[str, pd.DataFrame]:
    """The built-in tasks, defined on the data alone (so that ACES reproduces them): at the
    patient's index date (the INDEX_DATE event), with at least one claim before it and aged at
    least 2 (asthma; and no asthma code yet) or 10 (self-harm): an outcome code in the next 365 days."""
    index = cohort.index_day[patient]
    has_history = np.bincount(patient[day < index], minlength=cohort.size) > 0
    age_days = cohort.index_day - cohort.birth

    def patients_with(pattern: re.Pattern, when: np.ndarray) -> np.ndarray:
        matches = np.array([bool(pattern.match(c)) for c in codes])[code]
        return np.bincount(patient[matches & when], minlength=cohort.size) > 0

    next_year = (day > index) & (day <= index + 365)
    tasks = {
        "asthma": (
            has_history & (age_days >= 731) & ~patients_with(ASTHMA_CODES, day <= index),
            patients_with(ASTHMA_CODES, next_year),
        ),
        "self_harm": (has_history & (age_days >= 3653), patients_with(SELF_HARM_CODES, next_year)),
    }
    prediction_time = cohort.index_day.astype("datetime64[D]").astype("datetime64[us]")
    return {
        task: pd.DataFrame(
            {
                "subject_id": subject_ids[eligible],
                "prediction_time": prediction_time[eligible],
                "boolean_value": outcome[eligible],
            }
        )
        for task, (eligible, outcome) in tasks.items()
    }


def generate_site(profile: SiteProfile, seed: int, site_index: int, held_out_share: float = 0.1) -> SiteData:
    """All events, splits, labels and code metadata of one site; deterministic in (seed, site).
    The tuning split is a tenth of the patients, the held-out split `held_out_share`."""
    rng = np.random.default_rng([seed, site_index])
    return _generate(rng, profile, site_index, (0.9 - held_out_share, 0.1, held_out_share))


def population_sample(profile: SiteProfile, seed: int, site_index: int, patients: int) -> SiteData:
    """`patients` new patients of the same site: its profile, a random stream of their own, every
    one in the held-out split. A simulation scores a site's models on it to measure them on the
    site's population, where the site's own held-out split (a few dozen positives at a small
    site) would add its sampling error to every comparison."""
    if patients < 1:
        raise ValueError(f"patients must be >= 1, got {patients}")
    rng = np.random.default_rng([seed, site_index, POPULATION_STREAM])
    return _generate(rng, replace(profile, n_patients=patients), site_index, (0.0, 0.0, 1.0))


def _generate(
    rng: np.random.Generator, profile: SiteProfile, site_index: int, fractions: tuple[float, float, float]
) -> SiteData:
    cat = build_catalog()
    cohort = sample_cohort(rng, profile)
    rows = EventRows()
    for block in BLOCKS:
        block(rng, cohort, profile, cat, rows)
    patient, day, concept = rows.arrays()
    inside = (day >= cohort.start[patient]) & (day < cohort.end[patient])
    patient, day, concept = patient[inside], day[inside], concept[inside]

    probs = dialect_probabilities(cat, profile)
    choice = _choose(rng, probs[concept])
    code = cat.codes[concept, choice]
    order = np.lexsort((code, day, patient))
    patient, day, code = patient[order], day[order], code[order]
    distinct = np.r_[True, (np.diff(patient) != 0) | (np.diff(day) != 0) | (np.diff(code) != 0)]
    patient, day, code = patient[distinct], day[distinct], code[distinct]

    subject_ids = _subject_ids(rng, profile.n_patients, site_index)
    categories = [*cat.code_strings, BIRTH_CODE, "SEX/F", "SEX/M", INDEX_CODE]
    n_codes = len(cat.code_strings)
    everyone = np.arange(cohort.size)
    static_code = np.where(cohort.female, n_codes + 1, n_codes + 2)
    all_patient = np.r_[everyone, everyone, everyone, patient]
    all_code = np.r_[static_code, np.full(cohort.size, n_codes), np.full(cohort.size, n_codes + 3), code]
    time = np.r_[
        np.full(cohort.size, np.datetime64("NaT", "us")),
        cohort.birth.astype("datetime64[D]").astype("datetime64[us]"),
        cohort.index_day.astype("datetime64[D]").astype("datetime64[us]"),
        day.astype("datetime64[D]").astype("datetime64[us]"),
    ]
    events = pd.DataFrame(
        {
            "subject_id": subject_ids[all_patient],
            "time": time,
            "code": pd.Categorical.from_codes(all_code, categories=categories),
            "numeric_value": np.full(all_patient.size, np.nan, dtype=np.float32),
        }
    )
    labels = _labels(cohort, patient, day, code, cat.code_strings, subject_ids)
    used = np.unique(all_code)
    return SiteData(
        profile,
        events,
        assign_splits(subject_ids, fractions),
        labels,
        _code_metadata(cat, [categories[i] for i in used]),
    )


def _subject_ids(rng: np.random.Generator, n: int, site_index: int) -> np.ndarray:
    """Distinct 9-digit member ids in a site-specific range (stand-ins for raw identifiers)."""
    draws = np.unique(rng.integers(0, 10**8, size=int(n * 1.2) + 16))
    rng.shuffle(draws)
    return (site_index + 1) * 10**8 + np.sort(draws[:n])


def _code_metadata(cat: Catalog, codes: list[str]) -> pd.DataFrame:
    parents = sorted({cat.parents[c] for c in codes if c in cat.parents})
    described = {**cat.descriptions, INDEX_CODE: "Index date: the prediction time of the built-in tasks"}
    rows = [(c, described.get(c), [cat.parents[c]] if c in cat.parents else []) for c in codes]
    rows += [(p, cat.descriptions.get(p), []) for p in parents if p not in codes]
    return pd.DataFrame(rows, columns=["code", "description", "parent_codes"])


def synthesize(
    out: str | Path,
    sizes: list[int],
    seed: int,
    *,
    overwrite: bool = False,
    shift: ConsortiumShift | None = None,
    held_out_share: float = 0.1,
) -> list[Path]:
    """Write `out/site-1 ... out/site-N`, one MEDS directory per site (each written atomically):
    the archetype sites, or with `shift` a consortium drifting from them by that much. A larger
    `held_out_share` (the transfer advisor's experiment) scores small differences more exactly."""
    if not 0.05 <= held_out_share <= 0.6:
        raise ValueError(f"held_out_share must be between 0.05 and 0.6, got {held_out_share}")
    return [
        _write_site(Path(out), seed, generate_site(profile, seed, index, held_out_share), overwrite)
        for index, profile in enumerate(_profiles(sizes, seed, shift))
    ]


def synthesize_populations(
    out: str | Path,
    sizes: list[int],
    seed: int,
    patients: int,
    *,
    overwrite: bool = False,
    shift: ConsortiumShift | None = None,
) -> list[Path]:
    """Write `out/site-1 ... out/site-N`: `patients` new patients of each site that `synthesize`
    with the same sizes, seed and shift writes, all held out (see `population_sample`)."""
    return [
        _write_site(Path(out), seed, population_sample(profile, seed, index, patients), overwrite)
        for index, profile in enumerate(_profiles(sizes, seed, shift))
    ]


def _profiles(sizes: list[int], seed: int, shift: ConsortiumShift | None) -> list[SiteProfile]:
    return consortium_profiles(sizes, seed, shift) if shift is not None else default_profiles(sizes, seed)


def _write_site(out: Path, seed: int, site: SiteData, overwrite: bool) -> Path:
    profile = site.profile
    metadata = {
        "dataset_name": f"claimpt-synth/{profile.name}",
        "dataset_version": f"seed-{seed}",
        "etl_name": "claimpt.synth",
        "etl_version": GENERATOR_VERSION,
        "meds_version": "0.4",
        "site_profile": profile.to_dict(),
    }
    path = write_meds(
        out / profile.name,
        site.events,
        site.splits,
        labels=site.labels,
        codes=site.codes,
        metadata=metadata,
        overwrite=overwrite,
    )
    log.info("%s: %d patients, %d events", profile.name, profile.n_patients, len(site.events))
    return path
