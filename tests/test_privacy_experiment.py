"""`claimpt experiment privacy` end to end on tiny sites (in-process federation)."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from simulations.experiments.privacy import PrivacyExperimentConfig, checks, run_privacy_experiment
from tests.inprocess_grid import run_inprocess_federation

CONFIG = PrivacyExperimentConfig(epsilons=(4.0, math.inf), strategies=("fedmedian",),
                                 adversaries=("none", "scale=10"), rounds=1, cohort_size=60, seeds=(0,),
                                 k_anonymity=5)


def test_privacy_experiment_writes_the_curve_the_table_and_the_report(fed_sites: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "privacy"
    report = run_privacy_experiment(fed_sites[0].parent, out, CONFIG, federated_runner=run_inprocess_federation)
    results = pd.read_csv(out / "results.csv")
    curve = results[results["part"] == "privacy"].set_index("epsilon")
    assert curve.loc[4.0, "site_epsilon"] == pytest.approx(4.0, rel=0.01) and curve.loc[math.inf, "site_epsilon"] == 0
    robust = results[results["part"] == "robustness"]
    assert sorted(zip(robust["strategy"], robust["adversary"])) == [("fedmedian", "none"), ("fedmedian", "scale=10")]
    assert results["auroc"].between(0, 1).all() and results["nvp_recall@10"].between(0, 1).all()
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


def test_checks_judge_the_claims_from_the_numbers() -> None:
    frame = pd.DataFrame([
        {"part": "privacy", "epsilon": 8.0, "auroc": 0.80, "strategy": "", "adversary": "", "nvp_recall@10": 0.5},
        {"part": "privacy", "epsilon": math.inf, "auroc": 0.84, "strategy": "", "adversary": "", "nvp_recall@10": 0.6},
        {"part": "robustness", "epsilon": math.inf, "auroc": 0.8, "strategy": "fedavg", "adversary": "none", "nvp_recall@10": 0.60},
        {"part": "robustness", "epsilon": math.inf, "auroc": 0.7, "strategy": "fedavg", "adversary": "signflip", "nvp_recall@10": 0.50},
        {"part": "robustness", "epsilon": math.inf, "auroc": 0.8, "strategy": "fedmedian", "adversary": "none", "nvp_recall@10": 0.60},
        {"part": "robustness", "epsilon": math.inf, "auroc": 0.8, "strategy": "fedmedian", "adversary": "signflip", "nvp_recall@10": 0.59},
    ])
    verdicts = {claim.split(":")[0]: ok for claim, ok, _ in checks(frame)}
    assert verdicts == {"epsilon = 8": False, "fedavg with one site sending signflip updates": True,
                        "fedmedian with one site sending signflip updates": True}
