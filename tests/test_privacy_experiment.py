"""`claimpt experiment privacy` end to end on tiny sites (in-process federation)."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from shared_model.contract.run_config import FederatedRunConfig
from simulations.experiments.common import find_sites
from simulations.experiments.privacy.plan import PrivacyExperimentConfig, plan_runs
from simulations.experiments.privacy.plots import privacy_utility_plot
from simulations.experiments.privacy.runner import held_out_recall, keyed, run_privacy_experiment
from simulations.experiments.privacy.summary import checks, curve_summary
from tests.inprocess_grid import run_inprocess_federation

CONFIG = PrivacyExperimentConfig(
    epsilons=(4.0, math.inf),
    strategies=("fedmedian",),
    adversaries=("none", "scale=10"),
    rounds=1,
    repeats=1,
    robustness_rounds=1,
    cohort_size=60,
    seeds=(0,),
    k_anonymity=5,
)


def test_privacy_experiment_writes_the_curve_the_table_and_the_report(fed_sites: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "privacy"
    report = run_privacy_experiment(fed_sites[0].parent, out, CONFIG, federated_runner=run_inprocess_federation)
    results = pd.read_csv(out / "results.csv")
    curve = results[results["part"] == "privacy"].set_index("epsilon")
    assert curve.loc[4.0, "site_epsilon"] == pytest.approx(4.0, rel=0.01) and curve.loc[math.inf, "site_epsilon"] == 0
    robust = results[results["part"] == "robustness"]
    assert sorted(zip(robust["strategy"], robust["adversary"], strict=True)) == [
        ("fedmedian", "none"),
        ("fedmedian", "scale=10"),
    ]
    assert results["auroc"].between(0, 1).all() and results["nvp_recall@10"].between(0, 1).all()
    predictions = sorted(out.glob("pretrained/*/predictions/*.parquet"))  # MEDS-DEV format, per site and seed
    assert len(predictions) == len(results) * len(fed_sites) * len(CONFIG.seeds)
    assert (
        robust["honest_recall@10"].between(0, 1).all()
        and results.loc[results["part"] == "privacy", "honest_recall@10"].isna().all()
    )
    # the held-out recall computed here over every site is close to the federated evaluation's number (the
    # sites evaluate with only the codes each has seen in >= k patients; the experimenter with all of them)
    sites = find_sites(fed_sites[0].parent)
    clean = robust[robust["adversary"] == "none"].iloc[0]
    clean_dir = next((out / "pretrained").glob(f"{clean['run']}-*"))  # <name>-<content digest>
    assert held_out_recall(clean_dir / "checkpoint", sites) == pytest.approx(clean["nvp_recall@10"], abs=0.02)
    assert (robust["dropped_updates"] == 0).all()  # the bare rules run without the validation filter
    html = report.read_text()
    assert html.count("data:image/png;base64") == 2 and "Privacy-utility curve" in html
    assert (out / "privacy_utility.png").stat().st_size > 10_000 and (out / "robustness.png").exists()
    text = (out / "results.md").read_text()
    assert "epsilon = 8" not in text and "fedmedian with one site sending scale=10" in text
    # resuming reuses every finished federated run and its scores: nothing is trained again
    stamps = {p: p.stat().st_mtime_ns for p in (out / "pretrained").glob("*/checkpoint/manifest.json")}
    run_privacy_experiment(fed_sites[0].parent, out, CONFIG, federated_runner=run_inprocess_federation)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert pd.read_csv(out / "results.csv").equals(results)
    # a DP setting does not concern the runs without DP: those are reused as they are
    run_privacy_experiment(
        fed_sites[0].parent,
        out,
        replace(CONFIG, epsilons=(math.inf,), clip_norm=0.5),
        federated_runner=run_inprocess_federation,
    )
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert len(list((out / "pretrained").iterdir())) == len(stamps)  # and made no new run


def test_a_run_is_keyed_by_its_data_and_every_setting_that_shapes_it(tmp_path: Path) -> None:
    """Content-keyed run directories: other settings or other data make another run beside the
    first (never a mix); a switched-off mechanism's parameters change nothing."""
    private, plain = [run for run in plan_runs(CONFIG, ["a", "b"], ["a", "b"], tmp_path) if run.part == "privacy"]
    assert private.epsilon == 4.0 and math.isinf(plain.epsilon)

    def directory(run, clip_norm: float = CONFIG.clip_norm, data: str = "data") -> str:
        settings = replace(run.settings, dp_clip_norm=clip_norm)
        return Path(keyed(replace(run, settings=settings), [data]).settings.run_dir).name

    assert directory(private).startswith(private.name + "-")
    assert directory(private, clip_norm=0.5) != directory(private)
    assert directory(private, data="other") != directory(private)
    assert directory(plain, clip_norm=0.5) == directory(plain)  # no DP: the clip norm does not shape it


def test_private_runs_take_their_own_rounds_batch_and_learning_rate(tmp_path: Path) -> None:
    config = replace(CONFIG, rounds=4, dp_rounds=16, dp_batch_size=400, learning_rate=5e-4, dp_learning_rate=3e-3)
    planned = plan_runs(config, ["a", "b"], ["a", "b"], tmp_path)
    runs = {run.epsilon: run.settings for run in planned if run.part == "privacy"}
    private, plain = runs[4.0], runs[math.inf]
    assert (private.num_server_rounds, private.batch_size, private.learning_rate) == (16, 400, 3e-3)
    assert (plain.num_server_rounds, plain.batch_size, plain.learning_rate, plain.dp_epsilon) == (4, 100, 5e-4, 0.0)
    framework = FederatedRunConfig().learning_rate  # the robustness table trains as the framework does
    assert {run.settings.learning_rate for run in planned if run.part == "robustness"} == {framework}
    defaults = plan_runs(replace(config, dp_rounds=0, learning_rate=0, dp_learning_rate=0), ["a"], ["a"], tmp_path)
    assert defaults[0].settings.num_server_rounds == 4
    assert {run.settings.learning_rate for run in defaults} == {framework}


def test_every_point_of_the_curve_is_repeated_at_its_own_seeds(tmp_path: Path) -> None:
    config = replace(CONFIG, repeats=3, seed=5)
    curve = [run for run in plan_runs(config, ["a"], ["a"], tmp_path) if run.part == "privacy"]
    assert sorted((run.epsilon, run.settings.seed) for run in curve) == [
        (e, s) for e in (4.0, math.inf) for s in (5, 6, 7)
    ]
    assert len({run.settings.run_dir for run in curve}) == 6
    robust = [run for run in plan_runs(config, ["a"], ["a"], tmp_path) if run.part == "robustness"]
    assert {run.settings.seed for run in robust} == {5}


def test_a_curve_without_private_runs_still_plots(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        [{"part": "privacy", "epsilon": math.inf, "auroc": 0.8, "auroc_sd": 0.01, "nvp_recall@10": 0.6}]
    )
    assert privacy_utility_plot(frame, tmp_path / "curve.png").stat().st_size > 1_000


def test_checks_judge_the_claims_from_the_numbers() -> None:
    frame = pd.DataFrame(
        [
            {"part": "privacy", "epsilon": 8.0, "auroc": 0.80, "strategy": "", "adversary": "", "nvp_recall@10": 0.5},
            {
                "part": "privacy",
                "epsilon": math.inf,
                "auroc": 0.84,
                "strategy": "",
                "adversary": "",
                "nvp_recall@10": 0.6,
            },
            {
                "part": "robustness",
                "epsilon": math.inf,
                "auroc": 0.8,
                "strategy": "fedavg",
                "adversary": "none",
                "nvp_recall@10": 0.60,
            },
            {
                "part": "robustness",
                "epsilon": math.inf,
                "auroc": 0.7,
                "strategy": "fedavg",
                "adversary": "signflip",
                "nvp_recall@10": 0.50,
            },
            {
                "part": "robustness",
                "epsilon": math.inf,
                "auroc": 0.8,
                "strategy": "fedmedian",
                "adversary": "none",
                "nvp_recall@10": 0.60,
            },
            {
                "part": "robustness",
                "epsilon": math.inf,
                "auroc": 0.8,
                "strategy": "fedmedian",
                "adversary": "signflip",
                "nvp_recall@10": 0.59,
            },
        ]
    )
    verdicts = {claim.split(":")[0]: ok for claim, ok, _ in checks(frame)}
    assert verdicts == {
        "epsilon = 8": False,
        "fedavg with one site sending signflip updates": True,
        "fedmedian with one site sending signflip updates": True,
    }
    # with the honest sites' recall present, the robustness claims are judged on it
    frame["honest_recall@10"] = frame["nvp_recall@10"].where(frame["part"] == "robustness")
    frame.loc[(frame["strategy"] == "fedmedian") & (frame["adversary"] == "signflip"), "honest_recall@10"] = 0.50
    verdicts = {claim.split(":")[0]: ok for claim, ok, _ in checks(frame)}
    assert not verdicts["fedmedian with one site sending signflip updates"]
    # private runs trained longer or faster than the non-private one say so next to the verdict
    frame["rounds"], frame["learning_rate"] = 8, 1e-3
    details = {claim.split(":")[0]: detail for claim, _, detail in checks(frame)}
    assert "private runs" not in details["epsilon = 8"]
    frame.loc[0, "rounds"], frame.loc[0, "learning_rate"] = 16, 4e-3
    details = {claim.split(":")[0]: detail for claim, _, detail in checks(frame)}
    assert details["epsilon = 8"].endswith(
        "private runs at 16 rounds against 8; private runs at 0.004 learning rate against 0.001"
    )


def test_the_curve_averages_repeated_runs_and_the_check_pairs_them_by_seed() -> None:
    rows = [
        {
            "part": "privacy",
            "strategy": "fedavg",
            "adversary": "none",
            "epsilon": epsilon,
            "seed": seed,
            "auroc": auroc,
            "auroc_sd": 0.04,
            "nvp_recall@10": 0.5 + seed / 100,
            "site_epsilon": epsilon if epsilon < 99 else 0.0,
        }
        for epsilon, aurocs in ((8.0, (0.70, 0.76, 0.73)), (math.inf, (0.72, 0.77, 0.78)))
        for seed, auroc in enumerate(aurocs)
    ]
    summary = curve_summary(pd.DataFrame(rows)).set_index("epsilon")
    assert summary.loc[8.0, "runs"] == 3 and summary.loc[8.0, "auroc"] == pytest.approx(0.73)
    assert summary.loc[8.0, "auroc_runs_sd"] == pytest.approx(0.03) and summary.loc[
        math.inf, "nvp_recall@10"
    ] == pytest.approx(0.51)
    ((claim, ok, detail),) = checks(pd.DataFrame(rows))
    # paired differences -0.02, -0.01, -0.05: mean -0.0267, standard error 0.0120
    assert ok and detail == "0.730 vs 0.757, difference -0.027 +- 0.012 (standard error over 3 pretraining seeds)"
    rows[0]["auroc"] = 0.66  # one seed worse: the mean gap (-0.040) is past 0.03
    assert not checks(pd.DataFrame(rows))[0][1]
