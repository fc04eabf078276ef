"""Site profiles: what makes one synthetic institution differ from another (docs/architecture.md §5)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SiteProfile:
    """Population, care setting, disease burden and coding dialect of one institution."""

    name: str
    description: str
    n_patients: int
    age_mix: tuple[float, float, float]  # share enrolled aged 0-2, 2-10, 10-16 years
    acute_visit_rate: float  # multiplier on age-specific sick-visit rates
    er_share: float  # share of sick visits seen in the emergency department
    inpatient_rate: float  # multiplier on hospital admissions
    well_child_compliance: float  # probability a scheduled well-child visit happens
    vaccine_uptake: float  # probability a due vaccine is given at a well-child visit
    atopy_prevalence: float  # share of children with an atopic (allergic) constitution
    asthma_risk: float  # multiplier on asthma incidence
    mental_health_risk: float  # multiplier on depression/anxiety and self-harm
    adhd_risk: float
    obesity_prevalence: float
    t1d_prevalence: float
    specificity: float  # probability a diagnosis is coded with a specific ICD-10-CM code
    ndc_share: float  # probability a drug is recorded as an NDC package (else RxNorm)
    em_intensity: float  # shift of E&M levels: -1 lower, +1 higher than the national mix
    symptom_coding: float  # how often prodromal symptoms are coded at all

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


ARCHETYPES: tuple[SiteProfile, ...] = (
    SiteProfile(
        name="site-1",
        description="urban academic children's hospital network (ED-heavy, specific coding, RxNorm)",
        n_patients=0,
        age_mix=(0.25, 0.45, 0.30),
        acute_visit_rate=1.0,
        er_share=0.20,
        inpatient_rate=1.6,
        well_child_compliance=0.70,
        vaccine_uptake=0.85,
        atopy_prevalence=0.30,
        asthma_risk=1.3,
        mental_health_risk=1.2,
        adhd_risk=0.9,
        obesity_prevalence=0.20,
        t1d_prevalence=0.006,
        specificity=0.80,
        ndc_share=0.10,
        em_intensity=0.5,
        symptom_coding=0.9,
    ),
    SiteProfile(
        name="site-2",
        description="suburban pediatric primary-care network (well-child focus, unspecified codes, NDC)",
        n_patients=0,
        age_mix=(0.35, 0.45, 0.20),
        acute_visit_rate=1.25,
        er_share=0.05,
        inpatient_rate=0.5,
        well_child_compliance=0.90,
        vaccine_uptake=0.95,
        atopy_prevalence=0.24,
        asthma_risk=0.9,
        mental_health_risk=0.8,
        adhd_risk=1.4,
        obesity_prevalence=0.13,
        t1d_prevalence=0.004,
        specificity=0.25,
        ndc_share=0.90,
        em_intensity=0.0,
        symptom_coding=1.0,
    ),
    SiteProfile(
        name="site-3",
        description="rural community health plan (older children, fewer visits, mixed drug coding)",
        n_patients=0,
        age_mix=(0.15, 0.40, 0.45),
        acute_visit_rate=0.75,
        er_share=0.13,
        inpatient_rate=1.0,
        well_child_compliance=0.55,
        vaccine_uptake=0.75,
        atopy_prevalence=0.20,
        asthma_risk=1.0,
        mental_health_risk=1.3,
        adhd_risk=1.0,
        obesity_prevalence=0.26,
        t1d_prevalence=0.004,
        specificity=0.50,
        ndc_share=0.55,
        em_intensity=-0.5,
        symptom_coding=0.75,
    ),
)

_RATES = (
    "acute_visit_rate",
    "inpatient_rate",
    "asthma_risk",
    "mental_health_risk",
    "adhd_risk",
    "obesity_prevalence",
    "t1d_prevalence",
    "atopy_prevalence",
)
_PROBABILITIES = ("er_share", "well_child_compliance", "vaccine_uptake", "specificity", "ndc_share", "symptom_coding")


@dataclass(frozen=True)
class ConsortiumShift:
    """How different a generated consortium's sites are, per axis. 0: every site is the average
    of the three archetypes (a homogeneous consortium); 1: the archetypes as they are; 2: their
    differences doubled. Each site also drifts randomly by the same factor (1: the drift
    `default_profiles` gives sites beyond the third), so two sites of one archetype differ too.
    The transfer advisor's consortia vary these to learn which differences make transfer fail."""

    size: float = 0.0  # spread of the sites' patient counts (log-normal sigma 0.5 x size)
    age_mix: float = 1.0
    care_setting: float = 1.0  # sick-visit and admission rates, ED share, well-child visits, vaccines
    coding_dialect: float = 1.0  # code specificity, NDC vs RxNorm, E&M levels, symptom coding
    prevalence: float = 1.0  # asthma, atopy, mental health, ADHD, obesity, type 1 diabetes

    def __post_init__(self) -> None:
        for name, value in dataclasses.asdict(self).items():
            if not 0 <= value <= 3:
                raise ValueError(f"shift {name} must be between 0 and 3, got {value}")


_AXIS = {
    "acute_visit_rate": "care_setting",
    "inpatient_rate": "care_setting",
    "er_share": "care_setting",
    "well_child_compliance": "care_setting",
    "vaccine_uptake": "care_setting",
    "specificity": "coding_dialect",
    "ndc_share": "coding_dialect",
    "symptom_coding": "coding_dialect",
    "asthma_risk": "prevalence",
    "mental_health_risk": "prevalence",
    "adhd_risk": "prevalence",
    "obesity_prevalence": "prevalence",
    "t1d_prevalence": "prevalence",
    "atopy_prevalence": "prevalence",
}


def _drifted(base: SiteProfile, rng: np.random.Generator, shift: ConsortiumShift) -> dict:
    """The drifted fields of `base` (the draws in a fixed order, each scaled by its axis)."""
    scale = dataclasses.asdict(shift)
    changes: dict = {}
    for field in _RATES:
        changes[field] = float(getattr(base, field) * rng.lognormal(0.0, 0.2 * scale[_AXIS[field]]))
    for field in _PROBABILITIES:
        p = getattr(base, field)
        changes[field] = float(np.clip(p + rng.normal(0.0, 0.1 * scale[_AXIS[field]]), 0.02, 0.98))
    mix = np.asarray(base.age_mix) * rng.lognormal(0.0, 0.25 * shift.age_mix, size=3)
    changes["age_mix"] = tuple(float(x) for x in mix / mix.sum())
    changes["em_intensity"] = float(np.clip(base.em_intensity + rng.normal(0, 0.3 * shift.coding_dialect), -1, 1))
    changes["description"] = base.description + " (perturbed)"
    return changes


def default_profiles(sizes: list[int], seed: int) -> list[SiteProfile]:
    """One profile per site: the archetypes in turn, perturbed (deterministically) beyond three."""
    rng = np.random.default_rng([seed, 0x5173])
    profiles = []
    for i, n in enumerate(sizes):
        base = ARCHETYPES[i % len(ARCHETYPES)]
        changes: dict = {"name": f"site-{i + 1}", "n_patients": int(n)}
        if i >= len(ARCHETYPES):
            changes.update(_drifted(base, rng, ConsortiumShift()))
        profiles.append(dataclasses.replace(base, **changes))
    return profiles


def _scaled_archetype(base: SiteProfile, shift: ConsortiumShift) -> dict:
    """`base`'s fields moved from the archetypes' average by the shift of their axis (rates on a
    log scale, probabilities and E&M intensity linearly, clipped to their ranges)."""
    scale = dataclasses.asdict(shift)
    changes: dict = {}
    for field in _RATES:
        mean = float(np.exp(np.mean([np.log(getattr(a, field)) for a in ARCHETYPES])))
        changes[field] = float(mean * (getattr(base, field) / mean) ** scale[_AXIS[field]])
    for field in _PROBABILITIES:
        mean = float(np.mean([getattr(a, field) for a in ARCHETYPES]))
        changes[field] = float(np.clip(mean + scale[_AXIS[field]] * (getattr(base, field) - mean), 0.02, 0.98))
    mean_mix = np.mean([a.age_mix for a in ARCHETYPES], axis=0)
    mix = np.clip(mean_mix + shift.age_mix * (np.asarray(base.age_mix) - mean_mix), 0.01, None)
    changes["age_mix"] = tuple(float(x) for x in mix / mix.sum())
    mean_em = float(np.mean([a.em_intensity for a in ARCHETYPES]))
    changes["em_intensity"] = float(np.clip(mean_em + shift.coding_dialect * (base.em_intensity - mean_em), -1, 1))
    return changes


def consortium_profiles(sizes: list[int], seed: int, shift: ConsortiumShift) -> list[SiteProfile]:
    """A consortium of len(sizes) sites, the archetypes in turn, each moved by `shift` (see
    ConsortiumShift); a site's size is its entry of `sizes` spread by `shift.size`."""
    rng = np.random.default_rng([seed, 0xC0115])
    profiles = []
    for i, n in enumerate(sizes):
        archetype = ARCHETYPES[i % len(ARCHETYPES)]
        base = dataclasses.replace(archetype, **_scaled_archetype(archetype, shift))
        changes = _drifted(base, rng, shift)
        changes["description"] = f"{archetype.description}, shifted ({_describe(shift)})"
        patients = max(int(round(n * rng.lognormal(0.0, 0.5 * shift.size))), 50)
        profiles.append(dataclasses.replace(base, name=f"site-{i + 1}", n_patients=patients, **changes))
    return profiles


def _describe(shift: ConsortiumShift) -> str:
    return ", ".join(f"{k} {v:g}" for k, v in dataclasses.asdict(shift).items())
