"""The transfer experiment: grid, resumability, determinism, summaries and the report.

Federated pretraining runs over the in-process transport (the Ray engine has its own test)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pytest
from meds_evaluation.evaluate import evaluate_binary_classification
from sklearn.metrics import average_precision_score, roc_auc_score

from shared_model.data import DataValidationError
from shared_model.evaluation.metrics import bootstrap_weights, weighted_auroc, weighted_average_precision
from simulations.experiments.transfer import TransferConfig, load_config, run_transfer_experiment
from simulations.experiments.transfer.grid import enumerate_runs
from tests.inprocess_grid import run_inprocess_federation

# every mode but leave-one-site-out (its federated pretraining runs the same code as `federated`
# on fewer sites; which sites it uses is checked on the plan, without training)
GRID = TransferConfig(
    modes=tuple(m for m in TransferConfig().modes if m != "federated-loso"),
    tasks=("asthma",),
    cohort_sizes=(60,),
    seeds=(0,),
    pretrain_epochs=1,
    finetune_epochs=2,
    heatmap_size=60,
    bootstrap=100,
)


@pytest.fixture(scope="module")
def experiment(fed_sites: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("transfer") / "run"
    run_transfer_experiment(fed_sites[0].parent, out, GRID, federated_runner=run_inprocess_federation)
    return out


def test_results_cover_the_whole_grid(experiment: Path, fed_sites: list[Path]) -> None:
    results = pd.read_csv(experiment / "results.csv", keep_default_na=False)
    expected = {r.run_id for r in enumerate_runs(GRID, [p.name for p in fed_sites])}
    assert set(results["run_id"]) == expected and len(results) == len(expected)
    assert set(results["mode"]) == {
        "scratch",
        "logreg",
        "gbm",
        "local",
        "central",
        "federated",
        "other-site",
    }
    assert results["auroc"].between(0, 1).all()
    # every binary run's held-out predictions in the MEDS-DEV format, read by meds-evaluation
    for run in results[results["task"] != "next_visit"].itertuples():
        predictions = pl.read_parquet(experiment / "predictions" / f"{run.run_id}.parquet")
        scored = evaluate_binary_classification(predictions)["samples_equally_weighted"]
        assert scored["roc_auc_score"] == pytest.approx(float(run.auroc), abs=1e-6), run.run_id
    # each pretraining was built once and reused: 1 central + 1 federated + 3 local
    assert len(list((experiment / "pretrained").iterdir())) == 5


def test_leave_one_site_out_pretrains_on_every_other_site_only() -> None:
    sites = ["site-1", "site-2", "site-3"]
    loso = [r for r in enumerate_runs(TransferConfig(seeds=(0,)), sites) if r.mode == "federated-loso"]
    assert loso and all(r.pretraining == tuple(s for s in sites if s != r.site) for r in loso)
    assert not [r for r in enumerate_runs(TransferConfig(), sites[:2]) if r.mode == "federated-loso"]


def test_report_contains_every_plot_and_the_table(experiment: Path) -> None:
    plots = sorted(p.name for p in experiment.glob("*.png"))
    assert plots == [
        "federated_vs_central.png",
        "few_shot_asthma.png",
        "labelled_patients.png",
        "learning_curve_asthma.png",
        "reliability_asthma.png",
        "transfer_heatmap.png",
    ]
    report = (experiment / "report.html").read_text()
    embedded = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,', report)
    assert sorted(embedded) == sorted(p.removesuffix(".png") for p in plots)
    assert "<table" in report and "federated" in report
    # it opens with the plain-language paragraph and the figure a clinician reads
    body = report.split("</h1>", 1)[1]
    assert body.startswith("\n<p class='lead'>In plain words: at 3 hospitals")
    assert body.index('alt="labelled_patients"') < body.index("<h2>")
    markdown = (experiment / "results.md").read_text()
    for heading in ("best baseline and scratch", "calibration, Brier score", "AUROC by subgroup"):
        assert heading in report and heading in markdown
    results = pd.read_csv(experiment / "results.csv")
    for value in results.loc[results["mode"] == "federated", "auroc"]:
        # every cell of the results table appears (rounded) in both the report and results.md
        assert f"{value:.3f}" in report and f"{value:.3f}" in (experiment / "results.md").read_text()
    assert 'src="http' not in report  # self-contained


def test_a_killed_experiment_resumes_and_the_same_seed_gives_identical_results(
    experiment: Path, fed_sites: list[Path], tmp_path: Path
) -> None:
    copy = tmp_path / "resumed"
    shutil.copytree(experiment, copy)
    results = (copy / "results.csv").read_text().splitlines()
    (copy / "results.csv").write_text("\n".join(results[:-2]) + "\n")  # the last two runs never finished,
    for report in ("report.html", "results.md"):
        (copy / report).unlink()
    shutil.rmtree(next((copy / "pretrained").glob("central-site-2-*")))  # nor the pretraining the last one needs
    run_transfer_experiment(fed_sites[0].parent, copy, GRID, federated_runner=run_inprocess_federation)
    assert (copy / "results.csv").read_bytes() == (experiment / "results.csv").read_bytes()
    assert len((copy / "timings.csv").read_text().splitlines()) == len(results) + 2


def test_a_different_grid_in_the_same_directory_is_refused(experiment: Path, fed_sites: list[Path]) -> None:
    with pytest.raises(DataValidationError, match="seeds"):
        run_transfer_experiment(fed_sites[0].parent, experiment, TransferConfig(**{**GRID.to_dict(), "seeds": (0, 1)}))


def test_a_second_grid_reuses_the_first_grids_encoders(experiment: Path, fed_sites: list[Path], tmp_path: Path) -> None:
    def must_not_pretrain(*args: object, **kwargs: object) -> None:
        raise AssertionError("the encoder was rebuilt instead of reused")

    second = TransferConfig(**{**GRID.to_dict(), "modes": ("federated",), "cohort_sizes": (40,), "heatmap": False})
    before = sorted(p.name for p in (experiment / "pretrained").iterdir())
    run_transfer_experiment(
        fed_sites[0].parent,
        tmp_path / "second",
        second,
        pretrained=experiment / "pretrained",
        federated_runner=must_not_pretrain,
    )
    results = pd.read_csv(tmp_path / "second" / "results.csv")
    assert len(results) == len(fed_sites) and set(results["cohort_size"]) == {40}
    assert not (tmp_path / "second" / "pretrained").exists()
    assert sorted(p.name for p in (experiment / "pretrained").iterdir()) == before


@pytest.mark.parametrize(
    "grid_file", sorted((Path(__file__).parents[1] / "simulations/experiments/transfer/grids").glob("*.toml"))
)
def test_the_measured_grids_load(grid_file: Path) -> None:
    assert load_config(grid_file) != TransferConfig()  # each key is known and valid, or this raises


def test_config_file_overrides_and_rejects_unknown_keys(tmp_path: Path) -> None:
    good = tmp_path / "grid.toml"
    good.write_text('tasks = ["asthma", "next_visit"]\ncohort-sizes = [100, 0]\nseeds = [3]\n')
    config = load_config(good, quick=True)
    assert config.tasks == ("asthma", "next_visit") and config.cohort_sizes == (100, 0) and config.seeds == (3,)
    assert config.pretrain_epochs == TransferConfig.quick().pretrain_epochs
    for text, column in (("sedes = [1]\n", "sedes"), ("seeds = 3\n", "seeds"), ('modes = ["magic"]\n', None)):
        (tmp_path / "bad.toml").write_text(text)
        with pytest.raises(DataValidationError) as error:
            load_config(tmp_path / "bad.toml")
        assert "bad.toml" in str(error.value) and (column is None or error.value.column == column)


def test_weighted_metrics_match_scikit_learn() -> None:
    rng = np.random.default_rng(5)
    labels = rng.random(300) < 0.2
    scores = np.round(rng.random(300) + 0.4 * labels, 1)  # many ties
    weights = bootstrap_weights(300, 4, 9)
    assert np.allclose(weights.sum(axis=1), 300)
    for row, auroc, ap in zip(
        weights,
        weighted_auroc(labels, scores, weights),
        weighted_average_precision(labels, scores, weights),
        strict=True,
    ):
        assert auroc == pytest.approx(roc_auc_score(labels, scores, sample_weight=row))
        assert ap == pytest.approx(average_precision_score(labels, scores, sample_weight=row))


def test_pretraining_cache_key_follows_every_federated_setting() -> None:
    from simulations.experiments.transfer.pretraining import Pretraining

    prints = {"site-1": "a", "site-2": "b"}
    base = Pretraining("federated", ("site-1", "site-2"), 6, 0, "fedavg", 11)
    assert base.local_batch_size == 50  # as many sequential steps per pass as central's batch of 100
    assert Pretraining("federated", ("a", "b", "c"), 6, 0, "fedavg", 11).local_batch_size == 34
    keys = {
        base.key(prints),
        Pretraining("federated", ("site-1", "site-2"), 6, 0, "fedavg", 11, client_optimizer="keep").key(prints),
        Pretraining("federated", ("site-1", "site-2"), 6, 0, "fedavg", 11, federated_batch_size=100).key(prints),
        Pretraining("federated", ("site-1", "site-2"), 6, 1, "fedavg", 11).key(prints),
        Pretraining("federated", ("site-1", "site-2"), 6, 0, "fedavg", 11, time_encoding="days_before+age").key(prints),
    }
    assert len(keys) == 5
    # central pretraining ignores the federated settings: one cached checkpoint serves every grid
    central = {
        Pretraining("central", ("site-1", "site-2"), 6, 0, strategy, 11, federated_batch_size=size).key(prints)
        for strategy in ("fedavg", "fedprox")
        for size in (100, 34)
    }
    assert len(central) == 1


CHROMIUM = shutil.which("chromium")


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (make test installs Debian's)")
def test_report_renders_in_a_headless_browser(experiment: Path) -> None:
    """Opened as a reader would: no console error or warning, no failed request, every image
    decoded to a real picture."""
    from playwright.sync_api import sync_playwright

    problems: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"],
        )
        page = browser.new_page()
        page.on("console", lambda m: problems.append(f"{m.type}: {m.text}") if m.type in ("error", "warning") else None)
        page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
        page.on("requestfailed", lambda request: problems.append(f"failed request: {request.url[:80]}"))
        page.goto((experiment / "report.html").as_uri(), wait_until="load")
        images = page.evaluate("Array.from(document.images, i => [i.alt, i.complete && i.naturalWidth > 0])")
        lead = page.locator("p.lead").inner_text()
        browser.close()
    assert not problems
    assert sorted(alt for alt, _ in images) == sorted(p.stem for p in experiment.glob("*.png"))
    assert all(decoded for _, decoded in images), [alt for alt, decoded in images if not decoded]
    assert "AUROC" in lead


def test_a_check_passes_or_fails_only_on_a_decisive_interval() -> None:
    from simulations.experiments.common import UNDECIDED
    from simulations.experiments.transfer.report import judge_every, judge_within
    from simulations.experiments.transfer.summary import Difference

    def difference(lo: float, hi: float) -> Difference:
        draws = np.linspace(lo, hi, 1001)
        return Difference(float(draws.mean()), draws)

    clear, straddles, below = difference(0.03, 0.08), difference(0.0, 0.05), difference(-0.05, 0.01)
    assert judge_every([("a", clear)], 0.02)[0] is True
    assert judge_every([("a", clear), ("b", straddles)], 0.02) == (
        UNDECIDED,
        "not decided at this scale: +0.025 [+0.001, +0.049] at b straddles +0.02",
    )
    assert judge_every([("a", clear), ("b", straddles), ("c", below)], 0.02)[0] is False
    assert judge_within(difference(-0.005, 0.008), 0.01)[0] is True
    assert judge_within(difference(-0.02, 0.0), 0.01)[0] == UNDECIDED
    assert judge_within(difference(0.02, 0.04), 0.01)[0] is False


def test_the_precision_check_pairs_runs_from_pretrained_encoders_only(tmp_path: Path) -> None:
    """bfloat16 against float32 (simulations.experiments.precision): only fine-tunings from a
    pretrained encoder are paired (the baselines are float32 in both); a mean AUROC difference
    beyond 0.005 or a Recall@10 beyond 0.5% relative does not hold."""
    from simulations.experiments.precision import compare

    def write(precision: str, shift: float, recall: float) -> None:
        run = tmp_path / "pretrain-seed-0" / precision
        rows = [
            ("asthma_n300_site-1_central_s0", "central", "site-1+site-2", 0.80 + shift),
            ("asthma_n300_site-1_central_s1", "central", "site-1+site-2", 0.70 + shift),
            ("asthma_n300_site-1_logreg_none_s0", "logreg", None, 0.90 - 10 * shift),
        ]
        (run / "pretrained" / "central-site-1+site-2-0a1b2c").mkdir(parents=True, exist_ok=True)
        pd.DataFrame(rows, columns=["run_id", "mode", "pretraining_sites", "auroc"]).to_csv(run / "results.csv")
        central = run / "pretrained" / "central-site-1+site-2-0a1b2c"
        (central / "metrics.json").write_text(json.dumps({"nvp_held_out": {"recall@10": recall}}))
        pd.DataFrame({"loss": [0.5, 0.4]}).to_csv(central / "history.csv")

    write("float32", 0.0, 0.600)
    write("bfloat16", 0.001, 0.601)
    report = compare(tmp_path, (0,))
    assert report["auroc_pairs"] == 2 and report["auroc_mean_difference"] == pytest.approx(0.001)
    assert report["recall_holds"] and report["pretrainings"][0]["pretraining"] == "central-site-1+site-2 (seed 0)"
    write("bfloat16", 0.02, 0.590)
    report = compare(tmp_path, (0,))
    assert not report["auroc_holds"] and not report["recall_holds"]
    assert "does not hold" in (tmp_path / "precision.md").read_text()


@pytest.mark.parametrize("seeds", ["0,-1", "1,1"])
def test_the_precision_check_refuses_negative_or_repeated_pretraining_seeds(
    seeds: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A repeated seed would count its pairs twice in the interval; a negative one fails only in
    the middle of the run. Both are refused before any work."""
    from typer.testing import CliRunner

    import simulations.experiments.precision as precision
    from simulations.cli.app import app

    def must_not_run(*args, **kwargs):
        raise AssertionError("the grid ran")

    monkeypatch.setattr(precision, "run_precision_check", must_not_run)
    result = CliRunner().invoke(
        app,
        ["experiment", "precision", "--data", str(tmp_path), "--out", str(tmp_path / "out"), "--pretrain-seeds", seeds],
    )
    assert result.exit_code == 2 and "pretrain-seeds" in result.output
    assert not (tmp_path / "out").exists()
