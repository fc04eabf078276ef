"""Synthetic multi-institution pediatric claims in MEDS (docs/architecture.md §5)."""

from simulations.synth.generator import SiteData, generate_site, population_sample, synthesize, synthesize_populations
from simulations.synth.profiles import ConsortiumShift, SiteProfile, default_profiles

__all__ = [
    "ConsortiumShift",
    "SiteData",
    "SiteProfile",
    "default_profiles",
    "generate_site",
    "population_sample",
    "synthesize",
    "synthesize_populations",
]
