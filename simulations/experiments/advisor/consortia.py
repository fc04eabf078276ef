"""The simulated consortia: each one's shift, its sites on disk, and the partner sets measured."""

from __future__ import annotations

import json
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np

from simulations.experiments.advisor.config import AdvisorConfig
from simulations.synth import synthesize
from simulations.synth.profiles import ConsortiumShift


def consortium_name(index: int) -> str:
    return f"consortium-{index + 1}"


def consortium_shift(config: AdvisorConfig, index: int) -> ConsortiumShift:
    """Every axis drawn uniformly from [0, max_shift] by the experiment's seed and the index."""
    rng = np.random.default_rng([config.seed, index, 0xAD5])
    return ConsortiumShift(**{f.name: float(rng.uniform(0, config.max_shift)) for f in fields(ConsortiumShift)})


def consortium_seed(config: AdvisorConfig, index: int) -> int:
    return config.seed * 1000 + index


def build_consortium(config: AdvisorConfig, index: int, root: Path) -> list[Path]:
    """The consortium's site directories, generated once (a finished site is reused)."""
    sites_dir = root / consortium_name(index) / "sites"
    names = [f"site-{i + 1}" for i in range(config.sites)]
    if all((sites_dir / name / "metadata" / "dataset.json").exists() for name in names):
        return [sites_dir / name for name in names]
    shift = consortium_shift(config, index)
    paths = synthesize(
        sites_dir,
        [config.patients] * config.sites,
        consortium_seed(config, index),
        overwrite=True,
        shift=shift,
        held_out_share=config.held_out_share,
    )
    (root / consortium_name(index) / "shift.json").write_text(json.dumps(asdict(shift), indent=2) + "\n")
    return paths
