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


def default_profiles(sizes: list[int], seed: int) -> list[SiteProfile]:
    """One profile per site: the archetypes in turn, perturbed (deterministically) beyond three."""
    rng = np.random.default_rng([seed, 0x5173])
    profiles = []
    for i, n in enumerate(sizes):
        base = ARCHETYPES[i % len(ARCHETYPES)]
        changes: dict = {"name": f"site-{i + 1}", "n_patients": int(n)}
        if i >= len(ARCHETYPES):
            for field in _RATES:
                changes[field] = float(getattr(base, field) * rng.lognormal(0.0, 0.2))
            for field in _PROBABILITIES:
                p = getattr(base, field)
                changes[field] = float(np.clip(p + rng.normal(0.0, 0.1), 0.02, 0.98))
            mix = np.asarray(base.age_mix) * rng.lognormal(0.0, 0.25, size=3)
            changes["age_mix"] = tuple(float(x) for x in mix / mix.sum())
            changes["em_intensity"] = float(np.clip(base.em_intensity + rng.normal(0, 0.3), -1, 1))
            changes["description"] = base.description + " (perturbed)"
        profiles.append(dataclasses.replace(base, **changes))
    return profiles
