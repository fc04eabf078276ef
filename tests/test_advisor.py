"""The transfer advisor: site summaries, pair signals, the predictor, the advice, its experiment
(on a consortium small enough for a test), `claimpt advise`, and the advisory round."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from flwr.app import Context, Message
from scipy.stats import spearmanr
from typer.testing import CliRunner

from client.app import make_client_app
from server.federation import run_federation
from server.overview import consortium_overview
from server.overview.predictor import TransferPredictor, load_predictor
from server.overview.signals import SIGNALS, SITE_SIGNALS, pair_signals, partner_sets, signal_table
from shared_model.contract.run_config import FederatedRunConfig
from shared_model.contract.site_summary import OwnAurocRecipe, SiteSummary, pooled, site_summary
from shared_model.data import DataValidationError, MedsDataset, read_meds
from shared_model.model.config import ClaimTransformerConfig
from shared_model.settings import FinetuneSettings
from shared_model.tensors.tasks import train_code_counts
from shared_model.training.finetuning import finetune_and_score
from shared_model.training.own_auroc import held_out_label_counts, released_own_auroc
from simulations.cli.app import app as cli
from simulations.experiments.advisor import AdvisorConfig, run_advisor_experiment
from simulations.experiments.advisor.advice import recommend
from simulations.experiments.advisor.evaluation import judge, leave_one_consortium_out, tune
from simulations.experiments.advisor.fit import fit_predictor
from simulations.experiments.advisor.measure import measured_gains, own_aurocs
from simulations.experiments.advisor.report import checks
from simulations.experiments.advisor.runner import measure_all
from tests.inprocess_grid import InProcessGrid

TINY = AdvisorConfig(
    consortia=2,
    sites=3,
    patients=240,
    held_out_share=0.3,
    population_patients=150,
    cohort_size=30,
    seeds=(0,),
    scratch_seeds=(0,),
    own_seeds=(100,),
    pretrain_epochs=1,
    finetune_epochs=1,
    max_partners=1,
)


def test_a_summary_holds_only_counts_of_at_least_k(fed_sites: list[Path]) -> None:
    dataset = read_meds(fed_sites[0])
    summary = site_summary(dataset, 11)
    counts = train_code_counts(dataset)
    assert set(summary.code_counts) == set(counts[counts >= 11].index) and (counts < 11).any()
    assert min(summary.age_band_counts.values()) >= 11
    assert sum(summary.age_band_counts.values()) <= summary.patients == (dataset.splits["split"] == "train").sum()
    assert SiteSummary.from_json(summary.to_json()) == summary
    with pytest.raises(ValueError, match="counts >= k"):
        SiteSummary(100, {"ICD10CM/J45.909": 3}, {}, k=5)


def test_a_summary_gives_a_tasks_counts_only_when_its_positives_and_negatives_reach_k(fed_sites: list[Path]) -> None:
    dataset = read_meds(fed_sites[0])
    train = dataset.splits.loc[dataset.splits["split"] == "train", "subject_id"]
    labels = dataset.labels["asthma"][lambda t: t["subject_id"].isin(train)]
    positive = labels.loc[labels["boolean_value"], "subject_id"].nunique()
    labelled = labels["subject_id"].nunique()
    assert site_summary(dataset, 11).task_counts["asthma"] == (labelled, positive)
    assert site_summary(dataset, 11).task_rate("asthma") == pytest.approx(positive / labelled)
    smallest = min(positive, labelled - positive)
    assert "asthma" in site_summary(dataset, smallest).task_counts
    assert "asthma" not in site_summary(dataset, smallest + 1).task_counts
    assert site_summary(dataset, 11, with_tasks=False).task_counts == {}
    for few_negatives in ((100, 97), (100, 3)):  # 3 negatives, or 3 positives, at k=5
        with pytest.raises(ValueError, match="counts >= k"):
            SiteSummary(200, {}, {}, k=5, task_counts={"asthma": few_negatives})


def test_a_sites_own_auroc_is_released_to_a_hundredth_and_only_from_k_held_out_positives_and_negatives() -> None:
    assert released_own_auroc([0.6012, 0.7033, float("nan")], positives=11, negatives=40, k=11) == 0.65
    assert released_own_auroc([0.6, 0.7], positives=10, negatives=40, k=11) is None
    assert released_own_auroc([0.6, 0.7], positives=40, negatives=10, k=11) is None
    assert released_own_auroc([float("nan")], positives=40, negatives=40, k=11) is None
    summary = SiteSummary(100, {}, {}, 11, own_auroc={"asthma": 0.65})
    assert SiteSummary.from_json(summary.to_json()) == summary
    for finer_or_impossible in (0.6512, 1.2, float("nan")):  # a summary that says more does not read
        with pytest.raises(ValueError, match="own AUROCs"):
            SiteSummary(100, {}, {}, 11, own_auroc={"asthma": finer_or_impossible})
    recipe = OwnAurocRecipe(cohort_size=200, epochs=40, seeds=(100, 101), time_encoding="days_before+age")
    assert OwnAurocRecipe.from_dict(json.loads(json.dumps(recipe.to_dict()))) == recipe


def test_signals_tell_identical_sites_from_disjoint_ones() -> None:
    site = SiteSummary(100, {"A": 50, "B": 20}, {"0-2": 40, "2-5": 60}, 11)
    same = pair_signals(site, site)
    assert same["code_jsd"] == pytest.approx(0) and same["age_distance"] == pytest.approx(0)
    assert same["code_coverage"] == same["partner_coverage"] == 1
    other = SiteSummary(400, {"C": 50}, {"10-15": 400}, 11)
    apart = pair_signals(site, other)
    assert apart["code_jsd"] == pytest.approx(1) and apart["age_distance"] == pytest.approx(1)
    assert apart["code_coverage"] == 0 and apart["log_partner_patients"] == pytest.approx(math.log(400))
    both = pooled([site, other])
    assert both.patients == 500 and both.code_counts == {"A": 50, "B": 20, "C": 50}


def test_the_task_signals_read_the_task_the_advice_is_for() -> None:
    counts = {"asthma": (80, 20), "adhd": (80, 40)}
    site = SiteSummary(100, {"A": 50}, {}, 11, task_counts=counts, own_auroc={"asthma": 0.61, "adhd": 0.7})
    partner = SiteSummary(300, {"A": 90}, {}, 11, task_counts={"asthma": (200, 20)}, own_auroc={"asthma": 0.9})
    signals = pair_signals(site, pooled([partner, site]), "asthma")
    assert signals["partner_task_rate"] == pytest.approx(40 / 280) and signals["own_auroc"] == 0.61  # the site's
    unknown = pair_signals(site, pooled([partner, site]), "adhd")  # a partner does not give its counts
    assert math.isnan(unknown["partner_task_rate"]) and unknown["own_auroc"] == 0.7
    assert math.isnan(pair_signals(partner, site, "adhd")["own_auroc"])  # the partner keeps it
    assert pooled([partner, site]).own_auroc == {}
    assert math.isnan(pair_signals(site, site)["own_auroc"])


def _candidates(rng: np.random.Generator, sites: int, consortium: str = "c") -> pd.DataFrame:
    """Every site's candidates (three single partners and one pair) with random pair signals, and
    random site signals the same for all of a site's candidates."""
    rows = pd.DataFrame(rng.uniform(0, 1, size=(4 * sites, len(SIGNALS))), columns=list(SIGNALS))
    rows["consortium"] = consortium
    rows["site"] = np.repeat([f"{consortium}-site-{i}" for i in range(sites)], 4)
    rows["partners"] = ["p0", "p1", "p2", "p0+p1"] * sites
    for signal in SITE_SIGNALS:
        rows[signal] = np.repeat(rng.uniform(0, 1, sites), 4)
    return rows


def test_the_predictor_learns_a_rule_from_signals_and_reads_back_from_json() -> None:
    rng = np.random.default_rng(0)
    rows = _candidates(rng, 50)
    rows["gain"] = 0.3 - 0.4 * rows["own_auroc"] + 0.2 * rows["code_coverage"] - 0.1 * rows["age_distance"]
    rows["gain"] += rng.normal(0, 0.01, len(rows))
    predictor = fit_predictor(rows.iloc[:160], alpha=0.1)
    held_out = rows.iloc[160:]  # ten sites it never saw
    assert spearmanr(predictor.predict(held_out), held_out["gain"]).statistic > 0.9
    again = TransferPredictor.from_json(predictor.to_json())
    assert again.predict(held_out) == pytest.approx(predictor.predict(held_out))
    with pytest.raises(ValueError, match="not a transfer predictor"):
        TransferPredictor.from_json(json.dumps({"format": "something else"}))
    stored = json.loads(predictor.to_json())
    stored["features"] = dict(reversed(stored["features"].items()))  # signals are read by name
    assert TransferPredictor.from_json(json.dumps(stored)).predict(held_out) == pytest.approx(
        predictor.predict(held_out)
    )
    del stored["features"]["code_jsd"]
    with pytest.raises(ValueError, match="every signal by name"):
        TransferPredictor.from_json(json.dumps(stored))
    with pytest.raises(ValueError, match="single partners"):
        predictor.predict(held_out[held_out["partners"] == "p0+p1"])


def test_differences_between_sites_do_not_teach_the_pair_signals() -> None:
    # sites with better code coverage gain more, but among one site's partners coverage makes no
    # difference: ranking a site's partners by it would be learning the sites, not the partners
    rng = np.random.default_rng(2)
    rows = _candidates(rng, 60)
    level = rng.uniform(0, 1, 60)
    rows["code_coverage"] = np.repeat(level, 4) + rng.uniform(-0.05, 0.05, len(rows))
    rows["gain"] = 0.2 * np.repeat(level, 4) + 0.1 * rows["age_distance"] + rng.normal(0, 0.005, len(rows))
    coefficients = dict(zip(SIGNALS, fit_predictor(rows, alpha=0.1).coefficients, strict=True))
    assert abs(coefficients["code_coverage"]) < 0.2 * coefficients["age_distance"]


def test_a_signal_a_summary_does_not_give_counts_as_its_mean() -> None:
    rng = np.random.default_rng(1)
    rows = _candidates(rng, 30)
    rows["gain"] = -0.3 * rows["own_auroc"] + 0.05 * rows["code_coverage"] + rng.normal(0, 0.005, len(rows))
    keeps_it = rows["site"].isin(rows["site"].unique()[:5])  # sites that keep their own AUROC to themselves
    rows.loc[keeps_it, "own_auroc"] = np.nan
    predictor = fit_predictor(rows, alpha=0.1, task="asthma")
    assert predictor.mean[SIGNALS.index("own_auroc")] == pytest.approx(rows["own_auroc"].mean())
    known = rows[~keeps_it]
    assert spearmanr(predictor.predict(known), known["gain"]).statistic > 0.9
    missing = known.assign(own_auroc=np.nan)
    at_mean = known.assign(own_auroc=rows["own_auroc"].mean())
    assert predictor.predict(missing) == pytest.approx(predictor.predict(at_mean))
    assert TransferPredictor.from_json(predictor.to_json()).task == "asthma"


def test_partners_are_recommended_only_when_they_are_predicted_to_help() -> None:
    assert partner_sets("a", ["a", "b", "c", "d"], 1) == [("b",), ("c",), ("d",), ("b", "c", "d")]
    candidates = pd.DataFrame(
        {
            "site": ["a", "a", "b", "b"],
            "partners": ["b", "c", "a", "c"],
            "predicted_gain": [0.02, 0.05, -0.01, 0.004],
        }
    )
    assert recommend(candidates, margin=0.0) == {"a": ("c",), "b": ("c",)}
    assert recommend(candidates, margin=0.01) == {"a": ("c",), "b": ()}  # b: train without partners


def _judged_table(predicted: list[float]) -> pd.DataFrame:
    measured = [0.10, 0.02, -0.03, 0.04, 0.08, 0.01]
    return pd.DataFrame(
        {
            "consortium": "c",
            "site": ["a", "a", "a", "b", "b", "b"],
            "partners": ["b", "c", "b+c", "a", "c", "a+c"],
            "size": [1, 1, 2, 1, 1, 2],
            "gain": measured,
            "gain_first_half": measured,
            "gain_second_half": measured,
            "predicted_gain": predicted,
            "margin": 0.0,
        }
    )


def test_the_judge_scores_perfect_and_misleading_advice() -> None:
    perfect, sites = judge(_judged_table([0.10, 0.02, -0.03, 0.04, 0.08, 0.01]))
    assert perfect.loc[0, "spearman_pairs"] == pytest.approx(1) and perfect.loc[0, "share_of_best"] == 1
    assert perfect.loc[0, "spearman_within_sites"] == pytest.approx(1)
    assert perfect.loc[0, "spearman_pairs_site_means_known"] == pytest.approx(1)
    assert list(sites["recommended"]) == ["b", "c"] and perfect.loc[0, "sites_worse_than_scratch"] == 0
    # predicting the opposite sends site a to its only harmful set, and b away from every partner
    misleading, sites = judge(_judged_table([-0.10, -0.02, 0.03, -0.04, -0.08, -0.01]))
    assert misleading.loc[0, "spearman_pairs"] == pytest.approx(-1)
    assert misleading.loc[0, "spearman_within_sites"] == pytest.approx(-1)
    assert misleading.loc[0, "spearman_pairs_site_means_known"] == pytest.approx(-1)
    assert misleading.loc[0, "sites_worse_than_scratch"] == 1 and list(sites["recommended"]) == ["b+c", "none"]
    assert misleading.loc[0, "share_of_best"] == pytest.approx(-0.03 / (0.10 + 0.08))
    assert misleading.loc[0, "all_others_share_of_best"] == pytest.approx((-0.03 + 0.01) / (0.10 + 0.08))


def test_the_report_asks_whether_the_advice_beats_joining_everyone() -> None:
    def verdict(predicted: list[float]) -> bool:
        consortia, sites = judge(_judged_table(predicted))
        return next(ok for claim, ok, _ in checks(consortia, sites) if "all the other sites" in claim)

    assert verdict([0.10, 0.02, -0.03, 0.04, 0.08, 0.01])  # b and c, where a and b with everyone lose
    assert not verdict([-0.10, -0.02, 0.03, -0.04, -0.08, -0.01])  # a to everyone, b to no one


def test_the_judge_tells_a_wrong_site_level_from_a_wrong_ranking_of_partners() -> None:
    # each site's partners in the right order, but site b predicted to gain 0.2 less than it does
    shifted, _ = judge(_judged_table([0.10, 0.02, -0.03, -0.16, -0.12, -0.19]))
    assert shifted.loc[0, "spearman_within_sites"] == pytest.approx(1)
    assert shifted.loc[0, "spearman_pairs"] < 0.5
    assert shifted.loc[0, "spearman_pairs_site_means_known"] == pytest.approx(1)


def test_a_gain_is_the_partners_mean_over_its_seeds_minus_scratchs_over_more_seeds() -> None:
    scratch = pd.DataFrame({"site": "a", "partners": "", "seed": [0, 1, 2, 3, 9], "auroc": [0.5, 0.7, 0.6, 0.8, 0.0]})
    pretrained = pd.DataFrame({"site": "a", "partners": "b", "seed": [0, 1, 9], "auroc": [0.70, 0.80, 0.0]})
    gains = measured_gains(pd.concat([scratch, pretrained]), seeds=(0, 1), scratch_seeds=(0, 1, 2, 3))
    assert gains[["site", "partners"]].values.tolist() == [["a", "b"]]  # seed 9 is neither kind's
    assert gains.loc[0, "gain"] == pytest.approx(0.75 - 0.65)
    assert gains.loc[0, "gain_first_half"] == pytest.approx(0.70 - 0.60)  # seed 0 against scratch seeds 0 and 1
    assert gains.loc[0, "gain_second_half"] == pytest.approx(0.80 - 0.70)


def _consortia_gaining(gains: list[float]) -> pd.DataFrame:
    """One consortium per gain, every candidate of every site measured at about that gain, the signals noise."""
    rng = np.random.default_rng(0)
    frames = []
    for index, gain in enumerate(gains):
        rows = pd.DataFrame(rng.uniform(0, 1, size=(6, len(SIGNALS))), columns=list(SIGNALS))
        rows["site"], rows["partners"], rows["size"] = ["a", "a", "b", "b", "c", "c"], ["x", "y"] * 3, 1
        measured = gain + rng.normal(0, 0.001, 6)
        frames.append(
            rows.assign(consortium=f"c{index}", gain=measured, gain_first_half=measured, gain_second_half=measured)
        )
    return pd.concat(frames, ignore_index=True)


def test_the_margin_is_the_one_that_would_have_kept_training_sites_from_losing() -> None:
    # held out, a losing consortium is predicted to gain a little (the others mostly gain): following
    # that advice loses, so a margin above the small predicted gain is chosen
    assert tune(_consortia_gaining([0.05, 0.05, -0.08, -0.08]), (1000.0,), (0.0, 0.01)).margin == 0.01
    assert tune(_consortia_gaining([0.05, 0.05, 0.05]), (1000.0,), (0.0, 0.01)).margin == 0.0


@pytest.fixture(scope="module")
def experiment(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny experiment; to halve the test's training, consortium 2 is a copy of consortium 1's
    measurement (the evaluation then only reads it, as when resuming a finished consortium)."""
    out = tmp_path_factory.mktemp("advisor") / "run"
    assert run_advisor_experiment(out, TINY, only=(1,)) is None  # measured only: no report yet
    assert not (out / "results.md").exists()
    shutil.copytree(out / "consortium-1", out / "consortium-2")
    run_advisor_experiment(out, TINY)
    return out


def test_the_experiment_measures_every_candidate_and_judges_each_consortium_held_out(experiment: Path) -> None:
    predictions = pd.read_csv(experiment / "predictions.csv", keep_default_na=False)
    for consortium in ("consortium-1", "consortium-2"):
        results = pd.read_csv(experiment / consortium / "results.csv", keep_default_na=False, na_values={"auroc": [""]})
        # 3 sites x (scratch, 2 single partners, the pair of both)
        assert len(results) == 3 * 4 and results["auroc"].dropna().between(0, 1).all()
        measured = measured_gains(results, TINY.seeds, TINY.scratch_seeds).dropna(subset=["gain"])  # none: one class
        judged = predictions[predictions["consortium"] == consortium]
        assert len(judged) == len(measured) > 0 and judged["predicted_gain"].notna().all()
        assert sorted(p.name for p in (experiment / consortium / "summaries").iterdir()) == [
            "site-1.json",
            "site-2.json",
            "site-3.json",
        ]
    site, population = (read_meds(experiment / "consortium-1" / kind / "site-1") for kind in ("sites", "populations"))

    def from_scratch(seed: int, scored_on: MedsDataset | None) -> dict:
        settings = FinetuneSettings(seed=seed, epochs=TINY.finetune_epochs)
        model_config = ClaimTransformerConfig(vocab_size=3, n_groups=1, time_encoding=TINY.time_encoding)
        return finetune_and_score(
            site,
            TINY.task,
            train_size=TINY.cohort_size,
            seed=seed,
            settings=settings,
            model_config=model_config,
            scored_on=scored_on,
        ).record

    scratch = from_scratch(0, population)
    assert scratch["held_out_size"] == len(population.labels[TINY.task])  # scored on all of it
    measured = results[(results["site"] == "site-1") & (results["partners"] == "") & (results["seed"] == 0)]
    assert measured["auroc"].item() == pytest.approx(scratch["auroc"])
    alone = from_scratch(100, None)  # the site's own estimate: scored on its own held-out split
    assert own_aurocs(experiment / "consortium-1", TINY.own_seeds)["site-1"] == [pytest.approx(alone["auroc"])]
    # the summaries carry it as the site releases it: to 0.01, and only from >= k held-out positives and negatives
    summary_of = {
        n: SiteSummary.from_json((experiment / "consortium-1" / "summaries" / f"{n}.json").read_text())
        for n in ("site-1", "site-2")
    }
    assert min(held_out_label_counts(site, TINY.task)) >= TINY.k_anonymity
    assert summary_of["site-1"].own_auroc == {TINY.task: round(alone["auroc"], 2)}
    site_2 = read_meds(experiment / "consortium-1" / "sites" / "site-2")
    assert held_out_label_counts(site_2, TINY.task)[0] < TINY.k_anonymity and summary_of["site-2"].own_auroc == {}
    assert len(pd.read_csv(experiment / "consortium-1" / "own.csv")) == 3 * len(TINY.own_seeds)
    report = (experiment / "results.md").read_text()
    assert "Spearman of predicted and measured pair gains" in report and "consortium-2" in report
    assert {"advisor_matrices.png", "advisor_scatter.png", "predictor.json"} <= {p.name for p in experiment.iterdir()}
    fitted = TransferPredictor.from_json((experiment / "predictor.json").read_text())
    assert fitted.own_auroc == TINY.own_auroc_recipe  # sites will be asked to measure it as they were here


def test_a_rerun_resumes_without_training_again(experiment: Path) -> None:
    results = experiment / "consortium-1" / "results.csv"
    before = results.read_bytes()
    (experiment / "results.md").unlink()
    run_advisor_experiment(experiment, TINY)
    assert results.read_bytes() == before and (experiment / "results.md").exists()


def test_more_seeds_extend_a_finished_run_and_a_run_judges_only_its_own_seeds(experiment: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(experiment, run)
    results = run / "consortium-1" / "results.csv"
    rows = pd.read_csv(results, keep_default_na=False)
    before = measure_all(run, TINY)
    rows.assign(seed=7, auroc=0.0).to_csv(results, mode="a", header=False, index=False)  # another seed's rows
    gains = measure_all(run, TINY)  # nothing left to train for seed 0
    pd.testing.assert_frame_equal(gains, before)
    assert len(pd.read_csv(results)) == 2 * len(rows)
    own, own_before = run / "consortium-1" / "own.csv", own_aurocs(run / "consortium-1", TINY.own_seeds)
    pd.read_csv(own, keep_default_na=False).assign(seed=7, auroc=0.0).to_csv(own, mode="a", header=False, index=False)
    assert own_aurocs(run / "consortium-1", TINY.own_seeds) == own_before
    with pytest.raises(DataValidationError):  # what is measured may not change
        measure_all(run, dataclasses.replace(TINY, cohort_size=40))


def test_claimpt_advise_recommends_partners_from_summaries(
    experiment: Path, fed_sites: list[Path], tmp_path: Path
) -> None:
    args = ["advise", *[a for p in fed_sites for a in ("--data", str(p))], "--predictor"]
    args += [str(experiment / "predictor.json"), "--k-anonymity", "5"]
    result = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "a")])
    assert result.exit_code == 0, result.output
    advice = json.loads((tmp_path / "a" / "advice.json").read_text())
    assert set(advice["recommended"]) == {p.name for p in fed_sites}
    assert len(advice["candidates"]) == 3 * 3 and (tmp_path / "a" / "advice.png").exists()
    summaries = (tmp_path / "a" / "summaries").iterdir()
    released = {p.stem: SiteSummary.from_json(p.read_text()).own_auroc for p in summaries}
    assert released[fed_sites[0].name].keys() == {TINY.task}  # 5 held-out positives: released at k=5
    assert released[fed_sites[1].name] == released[fed_sites[2].name] == {}  # 1 each: kept
    result = CliRunner().invoke(cli, [*args, "--no-own-auroc", "--out", str(tmp_path / "b")])
    assert result.exit_code == 0 and not any(
        SiteSummary.from_json(p.read_text()).own_auroc for p in (tmp_path / "b" / "summaries").iterdir()
    )
    duplicate = CliRunner().invoke(cli, ["advise", "--data", str(fed_sites[0]), "--data", str(fed_sites[0])])
    assert duplicate.exit_code == 2


def test_the_advisory_round_writes_the_overview_under_pseudonyms_and_trains_nothing(
    experiment: Path, fed_sites: list[Path], tmp_path: Path
) -> None:
    settings = FederatedRunConfig(
        advise_only=True,
        advisor_predictor=str(experiment / "predictor.json"),  # asks each site for its own AUROC, quickly
        run_dir=str(tmp_path / "run"),
        min_available_clients=3,
        k_anonymity=5,
        data_paths=",".join(str(p) for p in fed_sites),
    )
    policy = tmp_path / "policy.toml"
    policy.write_text("k_anonymity = 5\nshare_task_counts = true\nshare_own_auroc = true\n")
    nodes = [{"partition-id": i, "policy": str(policy)} for i in range(3)]
    outcome = run_federation(InProcessGrid(make_client_app(settings.to_run_config()), nodes), settings)
    assert len(outcome["overview"]) == 3
    overview = json.loads((tmp_path / "run" / "overview.json").read_text())
    names = [row["site"] for row in overview["sites"]]
    assert len(names) == 3 and all(name.startswith("site-") for name in names)
    assert not {p.name for p in fed_sites} & set(names)  # pseudonyms, not the sites' names
    assert overview["experimental"] and "EXPERIMENTAL" in (tmp_path / "run" / "overview.md").read_text()
    assert all(-1 < row["predicted_gain_joining_all"] < 1 and row["patients"] > 0 for row in overview["sites"])
    assert not (tmp_path / "run" / "checkpoints").exists() and not (tmp_path / "run" / "rounds.csv").exists()
    summaries = [SiteSummary.from_json(p.read_text()) for p in (tmp_path / "run" / "summaries").iterdir()]
    releasing = [p for p in fed_sites if min(held_out_label_counts(read_meds(p), TINY.task)) >= 5]
    assert len(releasing) == 1 and [set(s.own_auroc) for s in summaries].count({TINY.task}) == len(releasing)


def test_the_shipped_predictor_reads() -> None:
    shipped = load_predictor()
    assert shipped.features == SIGNALS and shipped.task == "asthma" and shipped.fitted_on


def test_the_overview_shows_each_site_beside_all_the_others_and_its_predicted_gain_of_joining_them() -> None:
    def summary(patients: int, codes: dict[str, int], bands: dict[str, int], own: float | None) -> SiteSummary:
        return SiteSummary(patients, codes, bands, 11, {"asthma": (200, 20)}, {"asthma": own} if own else {})

    summaries = {
        "a": summary(500, {"A": 100, "B": 50}, {"20-40": 300, "65+": 100}, 0.61),
        "b": summary(800, {"A": 300, "C": 50}, {"0-2": 30, "40-65": 300}, None),
        "c": summary(300, {"B": 30, "C": 50}, {"20-40": 30}, None),
    }
    predictor = load_predictor()
    table = consortium_overview(summaries, predictor).table.set_index("site")
    assert table.loc["a", "age 20-65"] == pytest.approx(0.75) and table.loc["a", "age 65+"] == pytest.approx(0.25)
    assert table.loc["c", "code_coverage"] == 1.0 and table.loc["a", "own_auroc"] == 0.61
    assert math.isnan(table.loc["b", "own_auroc"]) and table.loc["b", "task_rate"] == pytest.approx(0.1)
    for site in summaries:  # the predictor's gain for the set of every other site, as the lab's advice computes it
        others = tuple(s for s in sorted(summaries) if s != site)
        candidates = signal_table(summaries, [(site, p) for p in partner_sets(site, sorted(summaries), 1)], "asthma")
        expected = predictor.predict(candidates)[list(candidates["partners"]).index("+".join(others))]
        assert table.loc[site, "predicted_gain_joining_all"] == pytest.approx(expected)
    with pytest.raises(ValueError, match="two sites"):
        consortium_overview({"a": summaries["a"]}, predictor)


def test_a_site_whose_summary_does_not_read_is_left_out_of_the_overview(
    experiment: Path, fed_sites: list[Path], tmp_path: Path
) -> None:
    def garbles_its_summary(msg: Message, context: Context, call_next) -> Message:
        reply = call_next(msg, context)
        if msg.metadata.message_type == "query.summary" and context.node_config["partition-id"] == 0:
            below_k = {"patients": 5, "k": 11, "code_counts": {"ICD10CM/E10.9": 1}, "age_band_counts": {}}
            reply.content["summary"]["summary"] = json.dumps({"format": "claimpt-site-summary/1", **below_k})
        return reply

    settings = FederatedRunConfig(
        advise_only=True,
        advisor_predictor=str(experiment / "predictor.json"),
        run_dir=str(tmp_path / "run"),
        min_available_clients=2,
        data_paths=",".join(str(p) for p in fed_sites),
    )
    app = make_client_app(settings.to_run_config(), mods=[garbles_its_summary])
    outcome = run_federation(InProcessGrid(app, [{"partition-id": i} for i in range(3)]), settings)
    assert len(outcome["overview"]) == 2  # the other two sites are in it; the run did not stop


def test_each_consortium_is_predicted_by_a_fit_that_never_saw_it() -> None:
    rng = np.random.default_rng(1)
    frames = []
    for consortium, sign, sites in (("a", 1.0, 15), ("b", -1.0, 8)):
        rows = _candidates(rng, sites, consortium)
        frames.append(rows.assign(gain=sign * rows["code_coverage"]))
    predicted = leave_one_consortium_out(pd.concat(frames, ignore_index=True), (0.1, 10.0))
    held_out_a = predicted[predicted["consortium"] == "a"]
    # fitted on b only, where the rule is reversed (a fit that saw a's 15 sites would follow a's rule)
    within = [spearmanr(g["predicted_gain"], g["gain"]).statistic for _, g in held_out_a.groupby("site")]
    assert np.mean(within) < -0.9
