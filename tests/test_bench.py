"""The feeding of the original Claim-PT model in `claimpt bench --original`: the same patients as
this project's figures, in the original's layout (its model itself is not in this project)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from simulations.bench.model import PAPER_GROUPS, paper_shaped_arrays
from simulations.bench.original_child import multi_hot, original_layout


def test_the_original_sees_the_same_visits_left_aligned() -> None:
    arrays = paper_shaped_arrays(50, seed=3)
    layout = original_layout(arrays)
    for patient in range(50):
        real = arrays["visit_type"][patient] > 0
        n = int(real.sum())
        np.testing.assert_array_equal(layout["code_feature"][patient, :n], arrays["codes"][patient][real])
        np.testing.assert_array_equal(layout["visit_groups"][patient, :n], arrays["visit_groups"][patient][real])
        assert (layout["code_feature"][patient, n:] == 0).all() and (layout["date_feature"][patient, n:] == 0).all()
        assert (layout["util_feature"][patient, :n] > 0).all() and (layout["util_feature"][patient, n:] == 0).all()
    assert layout["date_feature"].max() <= 365 and layout["util_feature"].max() <= 3
    ages, sexes = layout["demo_feature"][:, 0], layout["demo_feature"][:, 1]
    assert ages.min() >= 1 and sexes.min() > ages.max()  # one vocabulary, no token shared


def test_multi_hot_targets_mark_exactly_the_target_groups() -> None:
    groups = paper_shaped_arrays(20, seed=4)["visit_groups"]
    dense = multi_hot(groups, PAPER_GROUPS)
    assert dense.shape == (*groups.shape[:-1], PAPER_GROUPS)
    for index in np.ndindex(groups.shape[:-1]):
        expected = np.zeros(PAPER_GROUPS, np.float32)
        expected[groups[index][groups[index] >= 0]] = 1
        np.testing.assert_array_equal(dense[index], expected)


def test_the_bench_runs_on_the_smallest_sites_it_accepts(tmp_path) -> None:
    """10 patients a site (the CLI's minimum) leave some sites without a positive patient: the
    data signal is reported as not measurable instead of failing the bench."""
    from typer.testing import CliRunner

    from simulations.cli.app import app

    result = CliRunner().invoke(
        app, ["bench", "--out", str(tmp_path), "--patients", "10", "--repeats", "1", "--no-model"]
    )
    assert result.exit_code == 0, result.output
    figures = json.loads((tmp_path / "bench.json").read_text(), parse_constant=lambda name: pytest.fail(name))[
        "figures"
    ]
    assert set(figures["asthma_logreg_auroc"]) == {"site-1", "site-2", "site-3"}
    assert (tmp_path / "bench.md").read_text().startswith("# claimpt bench")


def test_the_original_without_the_model_figures_is_refused(tmp_path) -> None:
    from typer.testing import CliRunner

    from simulations.cli.app import app

    result = CliRunner().invoke(
        app, ["bench", "--out", str(tmp_path / "out"), "--no-model", "--original", str(tmp_path)]
    )
    assert result.exit_code == 2 and "--model" in result.output
    assert not (tmp_path / "out").exists()


def test_deployment_overhead_is_the_round_outside_the_slowest_sites_local_work(tmp_path) -> None:
    from simulations.bench.deployment import _mode_figures, _steady_rounds

    (tmp_path / "rounds.csv").write_text(
        "round,local_seconds,exchange_seconds,round_seconds\n1,59,90,100\n2,16,19,20\n3,16,31,32\n4,18,22,24\n"
        "5,20,39,40\n"
    )
    rows = _steady_rounds(tmp_path)
    assert [row["round"] for row in rows] == [2, 3, 4]  # round 1 reads the data, the last evaluates alone
    figures = _mode_figures(rows)
    assert figures["round_seconds"] == 24 and figures["local_seconds"] == 16
    assert figures["overhead_fraction"] == pytest.approx(0.25)  # median of 0.2, 0.5, 0.25
    assert figures["server_seconds"] == 1  # the ServerApp's own turn: median of 1, 1, 2


def test_each_precision_is_a_row_beside_the_original_and_a_column_of_the_step_profile() -> None:
    from simulations.bench.run import _precision_tables

    def rate(value: float) -> dict:
        return {"median": value, "min": value, "max": value, "unit": "patients/s"}

    profile = {"CP head + loss": 20.0, "whole step": 45.0}
    data = {
        "original_pretrain_patients_per_s": rate(500),
        "original_predict_patients_per_s": rate(2000),
        "original_parameters": 5_770_515,
        "precisions": {
            name: {
                "pretrain_patients_per_s": rate(train),
                "predict_patients_per_s": rate(8000),
                "pretrain_vs_original": train / 500,
                "pretrain_vs_original_fastest": train / 600,
                "predict_vs_original": 4.0,
                "predict_vs_original_fastest": 3.5,
                "step_profile_ms": profile,
            }
            for name, train in (("float32", 1500), ("bfloat16", 2000))
        },
    }
    lines = _precision_tables(data)
    table = [line for line in lines if line.startswith("| ")]
    header, float32, bfloat16 = table[0], table[1], table[2]
    assert header.count("|") == float32.count("|") == bfloat16.count("|") == 6
    assert "3.00x / **2.50x**" in float32 and "4.00x / **3.33x**" in bfloat16 and "4.00x / **3.50x**" in float32
    assert any(line.startswith("| CP head + loss | 20.0 | 20.0 |") for line in lines)


def test_the_gpu_check_refuses_to_run_without_a_gpu(tmp_path) -> None:
    """A CPU figure must never pass for a GPU one: where TensorFlow sees no GPU, nothing runs."""
    from simulations.bench.gpu_check import NO_GPU_EXIT, main, visible_gpus

    if visible_gpus():
        pytest.skip("this machine has a GPU: `make check-gpu` is the check to run here")
    assert main(["--out", str(tmp_path / "gpu")]) == NO_GPU_EXIT
    assert not (tmp_path / "gpu").exists()
