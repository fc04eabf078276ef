"""Run the advisor's experiment: build and measure every consortium, then fit the predictor on
all consortia but one and judge it on that one, for each in turn, and write the report."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from simulations.experiments.advisor.config import AdvisorConfig
from simulations.experiments.advisor.consortia import build_consortium, consortium_name
from simulations.experiments.advisor.measure import measure_consortium, measured_gains, own_aurocs, write_summaries
from simulations.experiments.common import same_settings_or_refuse

log = logging.getLogger(__name__)
# the fit's penalties and margins change no measurement; more seeds or consortia extend a finished run (its rows
# are per seed, its consortia per index), and a run judges only the seeds it is given
RESULT_NEUTRAL = ("ridge_alphas", "margins", "seeds", "scratch_seeds", "own_seeds", "consortia")


def measure_all(out: Path, config: AdvisorConfig, only: tuple[int, ...] | None = None) -> pd.DataFrame:
    """Every consortium's measured gains, one row per (consortium, site, partners)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    measured = {k: v for k, v in config.to_dict().items() if k not in RESULT_NEUTRAL}
    same_settings_or_refuse(out / "config.json", {"config": measured})
    frames = []
    for index in range(config.consortia):
        if only is not None and index + 1 not in only:
            continue
        sites, populations = build_consortium(config, index, out)
        site_dirs = {p.name: p for p in sites}
        consortium_dir = out / consortium_name(index)
        results = measure_consortium(config, site_dirs, {p.name: p for p in populations}, consortium_dir)
        write_summaries(site_dirs, consortium_dir / "summaries", config, own_aurocs(consortium_dir, config.own_seeds))
        gains = measured_gains(results, config.seeds, config.scratch_seeds)
        frames.append(gains.assign(consortium=consortium_name(index)))
    return pd.concat(frames, ignore_index=True)


def run_advisor_experiment(out: Path, config: AdvisorConfig, only: tuple[int, ...] | None = None) -> Path | None:
    """Measure (or resume) the consortia; with every consortium (`only` None), judge the predictor
    leave-one-consortium-out and write results.md, the plots and predictor.json. Returns the
    results.md path, or None when only some consortia were measured."""
    gains = measure_all(out, config, only)
    if only is not None:
        return None
    from simulations.experiments.advisor.evaluation import evaluate_and_report

    return evaluate_and_report(Path(out), config, gains)
