"""How a partner set differs from a site, and how well the site does alone, measured on their
summaries only.

Each signal is a number per (site, partner set); the predictor learns on simulated consortia
which of them, and how, foretell the gain of pretraining on the partners. A partner set is read
as one pooled summary, so one site and a set of five are described alike. Pair signals vary
between a site's candidates and rank them; site signals are the same for all of them and say how
much the site gains at all (server/overview/predictor.py uses the two kinds differently)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd

from shared_model.contract.site_summary import SiteSummary, pooled

PAIR_SIGNALS = (
    "code_jsd",  # Jensen-Shannon divergence (bits) of the patients-per-code distributions
    "code_coverage",  # share of the site's code mentions on codes the partners also release
    "partner_coverage",  # share of the partners' code mentions on codes the site releases
    "prevalence_gap",  # mean |log ratio| of per-patient code prevalence on shared codes
    "age_distance",  # total variation distance of the age-band mixes
    "log_partner_patients",  # log of the partners' train patients
    "partner_task_rate",  # the partners' share of labelled patients with a positive label (NaN if not released)
)
SITE_SIGNALS = (
    "own_auroc",  # the AUROC the site reaches alone on the task (NaN if not released)
)
SIGNALS = PAIR_SIGNALS + SITE_SIGNALS


def _distribution(counts: dict[str, int], keys: list[str]) -> np.ndarray:
    values = np.array([counts.get(k, 0) for k in keys], dtype=np.float64)
    total = values.sum()
    return values / total if total > 0 else values


def _jensen_shannon(p: np.ndarray, q: np.ndarray) -> float:
    m = (p + q) / 2

    def kl(a: np.ndarray) -> float:
        mask = a > 0
        return float(np.sum(a[mask] * np.log2(a[mask] / m[mask])))

    return (kl(p) + kl(q)) / 2


def _coverage(own: dict[str, int], other: dict[str, int]) -> float:
    total = sum(own.values())
    return sum(n for code, n in own.items() if code in other) / total if total else 0.0


def _prevalence_gap(site: SiteSummary, partners: SiteSummary) -> float:
    shared = [c for c in site.code_counts if c in partners.code_counts]
    if not shared or not site.patients or not partners.patients:
        return 0.0
    weights = np.array([site.code_counts[c] for c in shared], dtype=np.float64)
    ratio = np.array(
        [(site.code_counts[c] / site.patients) / (partners.code_counts[c] / partners.patients) for c in shared]
    )
    return float(np.average(np.abs(np.log(ratio)), weights=weights))


def pair_signals(site: SiteSummary, partners: SiteSummary, task: str | None = None) -> dict[str, float]:
    """Every signal of SIGNALS for one site and one (pooled) partner set; the task signals are
    NaN without a `task` or when a summary does not release them."""
    codes = sorted(set(site.code_counts) | set(partners.code_counts))
    bands = sorted(set(site.age_band_counts) | set(partners.age_band_counts))
    age_site = _distribution(site.age_band_counts, bands)
    age_partners = _distribution(partners.age_band_counts, bands)
    return {
        "code_jsd": _jensen_shannon(_distribution(site.code_counts, codes), _distribution(partners.code_counts, codes)),
        "code_coverage": _coverage(site.code_counts, partners.code_counts),
        "partner_coverage": _coverage(partners.code_counts, site.code_counts),
        "prevalence_gap": _prevalence_gap(site, partners),
        "age_distance": float(np.abs(age_site - age_partners).sum() / 2),
        "log_partner_patients": math.log(max(partners.patients, 1)),
        "partner_task_rate": partners.task_rate(task),
        "own_auroc": site.own_auroc_of(task),
    }


def partner_sets(site: str, sites: list[str], max_partners: int) -> list[tuple[str, ...]]:
    """The candidates for `site`: every set of 1..max_partners other sites, and all of them."""
    others = [s for s in sites if s != site]
    candidates = [c for n in range(1, max_partners + 1) for c in itertools.combinations(others, n)]
    if tuple(others) not in candidates:
        candidates.append(tuple(others))
    return candidates


def signal_table(
    summaries: dict[str, SiteSummary], pairs: list[tuple[str, tuple[str, ...]]], task: str | None
) -> pd.DataFrame:
    """One row per (site, partner set): the partners joined by '+' and every signal (for `task`)."""
    rows = []
    for site, partners in pairs:
        signals = pair_signals(summaries[site], pooled([summaries[p] for p in partners]), task)
        rows.append({"site": site, "partners": "+".join(partners), **signals})
    return pd.DataFrame(rows)
