"""The simulated consortia: each one's shift, its sites on disk, and the partner sets measured."""

from __future__ import annotations

import json
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np

from simulations.experiments.advisor.config import AdvisorConfig
from simulations.synth import synthesize, synthesize_populations
from simulations.synth.profiles import ConsortiumShift


def consortium_name(index: int) -> str:
    return f"consortium-{index + 1}"


def consortium_shift(config: AdvisorConfig, index: int) -> ConsortiumShift:
    """Every axis drawn uniformly from [0, max_shift] by the experiment's seed and the index."""
    rng = np.random.default_rng([config.seed, index, 0xAD5])
    return ConsortiumShift(**{f.name: float(rng.uniform(0, config.max_shift)) for f in fields(ConsortiumShift)})


def consortium_seed(config: AdvisorConfig, index: int) -> int:
    return config.seed * 1000 + index


def build_consortium(config: AdvisorConfig, index: int, root: Path) -> tuple[list[Path], list[Path]]:
    """The consortium's site directories and, in the same order, each site's population sample
    (AdvisorConfig.population_patients), generated once (finished ones are reused)."""
    directory = root / consortium_name(index)
    names = [f"site-{i + 1}" for i in range(config.sites)]
    shift = consortium_shift(config, index)
    sizes, seed = [config.patients] * config.sites, consortium_seed(config, index)
    sites = _built(directory / "sites", names) or synthesize(
        directory / "sites", sizes, seed, overwrite=True, shift=shift, held_out_share=config.held_out_share
    )
    populations = _built(directory / "populations", names) or synthesize_populations(
        directory / "populations", sizes, seed, config.population_patients, overwrite=True, shift=shift
    )
    (directory / "shift.json").write_text(json.dumps(asdict(shift), indent=2) + "\n")
    return sites, populations


def _built(directory: Path, names: list[str]) -> list[Path] | None:
    done = all((directory / name / "metadata" / "dataset.json").exists() for name in names)
    return [directory / name for name in names] if done else None
