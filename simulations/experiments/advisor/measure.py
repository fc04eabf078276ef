"""A consortium's measured transfer: every site fine-tuned from scratch and from an encoder
pretrained on each candidate partner set, scored on the site's population sample, one row per
(site, partner set, seed) in results.csv; and each site's own AUROC from scratch, scored on its
own held-out split as the site measures it alone (shared_model/training/own_auroc.py), one row per seed in
own.csv; then each site's summary, with that AUROC where the site would release it.

Rows are appended as they finish, so a killed run resumes where it stopped; pretrained encoders
are cached by content (simulations/experiments/transfer/pretraining.py)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from server.overview.signals import partner_sets
from shared_model.contract.site_summary import SiteSummary, save_summaries, site_summary
from shared_model.data import MedsDataset, read_meds
from shared_model.model.config import ClaimTransformerConfig
from shared_model.settings import FinetuneSettings
from shared_model.training.finetuning import finetune_and_score
from shared_model.training.own_auroc import held_out_label_counts, released_own_auroc, scratch_auroc
from simulations.experiments.advisor.config import AdvisorConfig
from simulations.experiments.transfer.pretraining import CheckpointCache, Pretraining

log = logging.getLogger(__name__)
RESULT_COLUMNS = ["site", "partners", "seed", "auroc", "train_positives"]
SCRATCH = ""  # the partners of a run trained from scratch
OWN_FILE = "own.csv"  # each site's own estimate of its AUROC from scratch (`own_aurocs`)


def write_summaries(
    site_dirs: dict[str, Path], out: Path, config: AdvisorConfig, own: dict[str, list[float]]
) -> dict[str, SiteSummary]:
    """Each site's releasable summary, as the site itself would compute and send it, with its own
    AUROC (`own`: its seeds' values) where the site's rule releases it."""
    summaries = {}
    for name, path in site_dirs.items():
        dataset = read_meds(path)
        counts = held_out_label_counts(dataset, config.task)
        value = released_own_auroc(own.get(name, []), *counts, config.k_anonymity)
        summaries[name] = site_summary(dataset, config.k_anonymity, own_auroc={config.task: value})
    save_summaries(summaries, out)
    return summaries


def _pretraining(partners: tuple[str, ...], config: AdvisorConfig) -> Pretraining:
    return Pretraining(
        "central",
        tuple(sorted(partners)),
        config.pretrain_epochs,
        config.seed,
        "fedavg",
        config.k_anonymity,
        time_encoding=config.time_encoding,
    )


def measure_consortium(
    config: AdvisorConfig, site_dirs: dict[str, Path], population_dirs: dict[str, Path], out: Path
) -> pd.DataFrame:
    """Run (or resume) the consortium's fine-tunes, each scored on its site's population sample
    (results.csv), and each site's own estimate of what it reaches alone (own.csv, `own_aurocs`);
    returns results.csv."""
    names = list(site_dirs)
    runs = [(site, SCRATCH, seed) for site in names for seed in config.scratch_seeds] + [
        (site, "+".join(partners), seed)
        for site in names
        for partners in partner_sets(site, names, config.max_partners)
        for seed in config.seeds
    ]
    own = [(site, SCRATCH, seed) for site in names for seed in config.own_seeds]
    fine_tune = _FineTunes(config, site_dirs, population_dirs, out / "pretrained")
    _measure(out / OWN_FILE, own, lambda run: fine_tune(*run, on_population=False), f"{out.name} own")
    return _measure(out / "results.csv", runs, lambda run: fine_tune(*run, on_population=True), out.name)


class _FineTunes:
    """One fine-tune of the consortium's task at a site, from scratch or from a partner set's
    pretrained encoder, scored on the site's population sample; or from scratch, scored on its
    own held-out split, as the site measures its own AUROC."""

    def __init__(
        self, config: AdvisorConfig, site_dirs: dict[str, Path], population_dirs: dict[str, Path], cache_dir: Path
    ) -> None:
        self.config, self.site_dirs, self.population_dirs = config, site_dirs, population_dirs
        self.cache = CheckpointCache(cache_dir, site_dirs)
        self.scratch_config = ClaimTransformerConfig(vocab_size=3, n_groups=1, time_encoding=config.time_encoding)
        self.datasets: dict[str, tuple[MedsDataset, MedsDataset]] = {}

    def __call__(self, site: str, partners: str, seed: int, *, on_population: bool) -> dict:
        config = self.config
        checkpoint = self.cache.get(_pretraining(tuple(partners.split("+")), config)) if partners else None
        if site not in self.datasets:
            self.datasets[site] = read_meds(self.site_dirs[site]), read_meds(self.population_dirs[site])
        dataset, population = self.datasets[site]
        if not on_population:  # exactly as the site measures it
            auroc = scratch_auroc(dataset, config.task, config.own_auroc_recipe, seed)
            return {"site": site, "partners": SCRATCH, "seed": seed, "auroc": auroc, "train_positives": None}
        outcome = finetune_and_score(
            dataset,
            config.task,
            train_size=config.cohort_size,
            seed=seed,
            checkpoint=checkpoint,
            settings=FinetuneSettings(seed=seed, epochs=config.finetune_epochs, guard=False),
            model_config=self.scratch_config,
            scored_on=population,
        )
        return {
            "site": site,
            "partners": partners,
            "seed": seed,
            "auroc": outcome.record["auroc"],
            "train_positives": outcome.record.get("train_positives"),
        }


def _measure(
    path: Path, runs: list[tuple[str, str, int]], fine_tune: Callable[[tuple], dict], label: str
) -> pd.DataFrame:
    """The runs not yet in `path`, each appended as it finishes (a killed run resumes); returns `path`."""
    done = _read_results(path) if path.exists() else None
    finished = set() if done is None else set(zip(done["site"], done["partners"], done["seed"], strict=True))
    todo = [run for run in runs if run not in finished]
    log.info("%s: %d fine-tunes, %d to run", label, len(runs), len(todo))
    started = time.perf_counter()
    for index, run in enumerate(todo, start=1):
        row = fine_tune(run)
        pd.DataFrame([row], columns=RESULT_COLUMNS).to_csv(path, mode="a", header=not path.exists(), index=False)
        elapsed = time.perf_counter() - started
        log.info(
            "%s [%d/%d] %s from %s, seed %d: AUROC %.3f (about %.0f min to go)",
            label,
            len(runs) - len(todo) + index,
            len(runs),
            row["site"],
            row["partners"] or "scratch",
            row["seed"],
            row["auroc"],
            elapsed / index * (len(todo) - index) / 60,
        )
    return _read_results(path) if path.exists() else pd.DataFrame(columns=RESULT_COLUMNS)


def own_aurocs(consortium_dir: Path, seeds: tuple[int, ...]) -> dict[str, list[float]]:
    """Each site's AUROCs over `seeds` (its `own_seeds`), trained from scratch and scored on its
    own held-out split: what a site measures alone, before anyone trains. Empty when not measured."""
    path = consortium_dir / OWN_FILE
    if not path.exists():
        return {}
    rows = _read_results(path)
    rows = rows[rows["seed"].isin(seeds)]
    return {str(site): mine["auroc"].tolist() for site, mine in rows.groupby("site")}


def _read_results(path: Path) -> pd.DataFrame:
    """results.csv, an empty AUROC (a held-out set of one class) as NaN, scratch's partners as ''."""
    return pd.read_csv(path, keep_default_na=False, na_values={"auroc": [""]})


def measured_gains(results: pd.DataFrame, seeds: tuple[int, ...], scratch_seeds: tuple[int, ...]) -> pd.DataFrame:
    """Per (site, partner set): the mean AUROC over `seeds` minus the site's mean from scratch over
    `scratch_seeds` (`gain`), and the same from the first and from the second half of each kind's
    seeds (`gain_first_half`, `gain_second_half`: how reproducible the measurement is). Rows of
    other seeds are ignored; a held-out set of one class (no AUROC) leaves the gain NaN."""
    scratch = results[(results["partners"] == SCRATCH) & results["seed"].isin(scratch_seeds)]
    pretrained = results[(results["partners"] != SCRATCH) & results["seed"].isin(seeds)]

    def gain(pretrained: pd.DataFrame, scratch: pd.DataFrame) -> pd.Series:
        level = scratch.groupby("site")["auroc"].agg(lambda a: a.mean(skipna=False))
        means = pretrained.groupby(["site", "partners"])["auroc"].agg(lambda a: a.mean(skipna=False))
        return means - level.reindex(means.index.get_level_values("site")).to_numpy()

    def halves(rows: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
        ordered = sorted(rows["seed"].unique())
        first = rows["seed"].isin(ordered[: max(len(ordered) // 2, 1)])
        return rows[first], rows[~first]

    (pretrained_1, pretrained_2), (scratch_1, scratch_2) = halves(pretrained), halves(scratch)
    table = gain(pretrained, scratch).rename("gain").to_frame()
    table["gain_first_half"] = gain(pretrained_1, scratch_1).reindex(table.index)
    table["gain_second_half"] = gain(pretrained_2, scratch_2).reindex(table.index)
    return table.reset_index()
