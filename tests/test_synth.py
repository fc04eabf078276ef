"""The synthetic multi-site generator: valid MEDS, deterministic, realistic, heterogeneous, learnable."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from shared_model.data import read_meds
from simulations.bench.heterogeneity import js_divergence_matrix, label_prevalence
from simulations.bench.signal import logreg_signal
from simulations.cli.app import app
from simulations.synth import ConsortiumShift, generate_site, population_sample, synthesize, synthesize_populations
from simulations.synth.profiles import consortium_profiles


def _parquet_contents(root: Path) -> dict[str, pd.DataFrame]:
    return {str(p.relative_to(root)): pq.read_table(p).to_pandas() for p in sorted(root.glob("**/*.parquet"))}


def test_same_seed_same_bytes_other_seed_other_data(tmp_path: Path) -> None:
    a = synthesize(tmp_path / "a", [300, 200], seed=5)
    b = synthesize(tmp_path / "b", [300, 200], seed=5)
    c = synthesize(tmp_path / "c", [300, 200], seed=6)
    for pa_, pb in zip(a, b, strict=True):
        files_a = sorted(p.relative_to(pa_) for p in pa_.glob("**/*") if p.is_file())
        assert files_a == sorted(p.relative_to(pb) for p in pb.glob("**/*") if p.is_file())
        for rel in files_a:
            assert (pa_ / rel).read_bytes() == (pb / rel).read_bytes(), rel
    assert not _parquet_contents(a[0])["labels/asthma.parquet"].equals(_parquet_contents(c[0])["labels/asthma.parquet"])


def test_sites_are_valid_meds_with_requested_sizes_and_layout(small_sites: list[Path]) -> None:
    assert [p.name for p in small_sites] == ["site-1", "site-2", "site-3"]
    for path, size in zip(small_sites, [1500, 1000, 800], strict=True):
        ds = read_meds(path)  # full validation, including no event before birth
        assert ds.events["subject_id"].nunique() == size
        assert {"asthma", "self_harm"} <= set(ds.labels)
        assert (path / "metadata" / "dataset.json").is_file()
        assert set(ds.splits["split"]) == {"train", "tuning", "held_out"}
        assert sorted(p.parent.name for p in (path / "data").glob("*/*.parquet")) == ["held_out", "train", "tuning"]


def test_pediatric_ages_and_realistic_code_strings(small_sites: list[Path]) -> None:
    ds = read_meds(small_sites[0])
    ev = ds.events
    births = ev[ev["code"] == "MEDS_BIRTH"].set_index("subject_id")["time"]
    timed = ev[ev["time"].notna() & (ev["code"] != "MEDS_BIRTH")]
    age = (timed["time"] - timed["subject_id"].map(births)).dt.days / 365.25
    assert age.min() >= 0 and age.max() < 19
    codes = pd.Series(ev["code"].astype(str).unique())
    vocab = codes.str.split("/").str[0]
    assert {"ICD10CM", "CPT", "RXNORM", "NDC", "VISIT", "SEX"} <= set(vocab)
    icd = codes[vocab == "ICD10CM"].str[8:]
    assert icd.str.fullmatch(r"[A-Z][0-9][0-9A-Z](\.[0-9A-Z]{1,4})?").all()
    assert codes[vocab == "CPT"].str[4:].str.fullmatch(r"\d{5}").all()
    assert codes[vocab == "NDC"].str[4:].str.fullmatch(r"\d{5}-\d{4}-\d{2}").all()
    # well-child care, vaccines and the asthma prodrome/diagnosis are all present
    for code in ["ICD10CM/Z00.129", "CPT/90700", "ICD10CM/R06.2", "ICD10CM/J45.909", "RXNORM/745679"]:
        assert code in set(codes), code


def test_codes_metadata_has_descriptions_and_parents(small_sites: list[Path]) -> None:
    ds = read_meds(small_sites[0])
    codes = ds.codes.set_index("code")
    assert codes.loc["ICD10CM/J45.909", "parent_codes"] == ["ICD10CM/J45"]
    assert codes.loc["ICD10CM/J45", "description"] == "Asthma"
    assert codes.loc["RXNORM/745679", "parent_codes"] == ["RXNORM/435"]
    used = set(ds.events["code"].astype(str).unique())
    assert used <= set(codes.index)
    assert codes.loc[list(used - {"MEDS_BIRTH", "SEX/F", "SEX/M"}), "description"].notna().all()


def test_labels_are_incident_outcomes_after_the_prediction_time(small_sites: list[Path]) -> None:
    ds = read_meds(small_sites[0])
    labels = ds.labels["asthma"]
    ev = ds.events
    asthma_dx = ev[ev["code"].astype(str).str.startswith("ICD10CM/J45")].groupby("subject_id")["time"].min()
    first_dx = labels["subject_id"].map(asthma_dx)
    # nobody in the asthma cohort was diagnosed before the prediction time
    assert not (first_dx < labels["prediction_time"]).any()
    positives = labels[labels["boolean_value"]]
    seen = positives["subject_id"].map(asthma_dx)
    within = (seen > positives["prediction_time"]) & (seen <= positives["prediction_time"] + pd.Timedelta(days=366))
    assert within.mean() > 0.8  # diagnosis follows within a year (unless enrollment ended first)
    assert 0.03 < labels["boolean_value"].mean() < 0.25
    assert 0.003 < ds.labels["self_harm"]["boolean_value"].mean() < 0.1


@pytest.fixture(scope="module")
def signal_sites(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    paths = synthesize(tmp_path_factory.mktemp("signal"), [4000, 4000, 4000], seed=23)
    return {p.name: read_meds(p) for p in paths}


def test_asthma_is_learnable_but_not_trivial_at_every_site(signal_sites: dict) -> None:
    for name, ds in signal_sites.items():
        result = logreg_signal(ds, "asthma")
        assert 0.70 <= result.auroc <= 0.95, (name, result)


def test_sites_really_differ(signal_sites: dict) -> None:
    jsd = js_divergence_matrix(signal_sites)
    off_diagonal = jsd.to_numpy()[~np.eye(len(jsd), dtype=bool)]
    assert off_diagonal.min() > 0.05  # coding dialect and case mix separate every pair
    prevalence = label_prevalence(signal_sites)["asthma"]
    assert prevalence.max() / prevalence.min() > 1.3
    visits = {
        n: (ds.events["code"] == "VISIT/ER").sum() / (ds.events["code"].astype(str).str.startswith("VISIT/")).sum()
        for n, ds in signal_sites.items()
    }
    assert visits["site-1"] > 2 * visits["site-2"]  # the hospital network sees far more ED care


def test_cli_synth_different_sizes_then_validate(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(
        app, ["synth", "--out", str(tmp_path / "s"), "--sites", "2", "--patients", "120,60", "--seed", "1"]
    )
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["validate", str(tmp_path / "s" / "site-1"), str(tmp_path / "s" / "site-2")])
    assert result.exit_code == 0, result.output
    assert "subjects       120" in result.output and "subjects       60" in result.output
    again = runner.invoke(app, ["synth", "--out", str(tmp_path / "s"), "--sites", "2", "--patients", "120,60"])
    assert again.exit_code == 2 and "--force" in again.output


def test_cli_rejects_wrong_number_of_sizes(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["synth", "--out", str(tmp_path), "--sites", "3", "--patients", "10,20"])
    assert result.exit_code == 2


def test_a_consortiums_heterogeneity_is_controlled_by_its_shift(tmp_path: Path) -> None:
    """Shift 0: every site has the same profile; 1, 2: the mean pairwise divergence of the sites'
    code distributions grows with it (two seeds, not one)."""
    same = consortium_profiles([400] * 4, 0, ConsortiumShift(age_mix=0, care_setting=0, coding_dialect=0, prevalence=0))
    varying = ("name", "description", "n_patients")
    assert len({dataclasses.replace(p, **dict.fromkeys(varying, "")) for p in same}) == 1
    assert [p.n_patients for p in same] == [400] * 4
    assert len({p.n_patients for p in consortium_profiles([400] * 4, 0, ConsortiumShift(size=1))}) == 4
    for seed in (0, 1):
        divergence = []
        for factor in (0.0, 1.0, 2.0):
            shift = ConsortiumShift(age_mix=factor, care_setting=factor, coding_dialect=factor, prevalence=factor)
            sites = synthesize(tmp_path / f"{seed}-{factor}", [300] * 4, seed, shift=shift)
            matrix = js_divergence_matrix({p.name: read_meds(p) for p in sites}).to_numpy()
            divergence.append(float(matrix[np.triu_indices(4, 1)].mean()))
        assert divergence[2] > 1.5 * divergence[1] and divergence[1] > 4 * divergence[0], divergence


def test_a_population_sample_is_new_patients_of_the_same_site(tmp_path: Path) -> None:
    """Each site's sample has the site's profile and none of its patients: drawn with the site's
    size it still differs from the site, all of it held out, and it sits nearer in its codes to
    its own site than to any other site of a strongly shifted consortium."""
    shift = ConsortiumShift(size=0.5, age_mix=2.0, care_setting=2.0, coding_dialect=2.5, prevalence=2.0)
    sites = synthesize(tmp_path / "sites", [400] * 3, 4, shift=shift)
    populations = synthesize_populations(tmp_path / "populations", [400] * 3, 4, 500, shift=shift)
    site_data = {p.name: read_meds(p) for p in sites}
    population_data = {p.name: read_meds(p) for p in populations}
    for name, population in population_data.items():
        assert set(population.splits["split"]) == {"held_out"} and population.splits["subject_id"].nunique() == 500
        profile = json.loads((sites[int(name[-1]) - 1] / "metadata" / "dataset.json").read_text())["site_profile"]
        sampled = json.loads((tmp_path / "populations" / name / "metadata" / "dataset.json").read_text())
        assert sampled["site_profile"] == {**profile, "n_patients": 500}
    profile = consortium_profiles([400] * 3, 4, shift)[0]
    same_size = population_sample(profile, 4, 0, profile.n_patients).events.drop(columns="subject_id")
    own = generate_site(profile, 4, 0).events.drop(columns="subject_id")
    assert not same_size.equals(own)
    divergence = js_divergence_matrix({**site_data, **{f"sample-{n}": d for n, d in population_data.items()}})
    for name in site_data:
        row = divergence.loc[f"sample-{name}", list(site_data)]
        assert row.idxmin() == name, row
