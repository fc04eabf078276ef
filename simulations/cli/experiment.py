"""`claimpt experiment ...`: the studies, each resumable in its --out directory, each writing
results.csv, results.md and (for transfer and privacy) plots and report.html."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from shared_model.contract.run_config import STRATEGIES
from shared_model.data.meds import MedsLayout
from shared_model.runtime.options import bad_input_exits_2, options_from
from shared_model.settings import VocabularySettings
from simulations.cli.data import parse_sizes

app = typer.Typer(help="Run experiments (resumable) and write results.csv, results.md.", no_args_is_help=True)

DataOpt = Annotated[list[Path] | None, typer.Option("--data", help="Site MEDS directories; default: synthesise them.")]
SitesOpt = Annotated[int, typer.Option(min=2, help="Synthetic sites when --data is not given.")]
PatientsOpt = Annotated[str, typer.Option(help="Patients per synthetic site (one value or one per site).")]
SitesDirOpt = Annotated[
    Path, typer.Option(help="Directory holding one MEDS directory per site (e.g. the --out of `claimpt synth`).")
]


def _sites_or_synth(data: list[Path] | None, out: Path, sites: int, patients: str, seed: int) -> list[Path]:
    if data:
        for path in data:
            MedsLayout.of(path)  # a missing directory is refused before anything is written
        return list(data)
    from simulations.synth import synthesize

    target = out / "sites"
    if all((target / f"site-{i + 1}" / "metadata" / "dataset.json").exists() for i in range(sites)):
        return [target / f"site-{i + 1}" for i in range(sites)]
    return synthesize(target, parse_sizes(patients, sites), seed, overwrite=True)


def _numbers(text: str, kind: type) -> tuple:
    try:
        return tuple(kind(part) for part in text.split(","))
    except ValueError as exc:
        raise typer.BadParameter(f"expected {kind.__name__}s separated by commas, got {text!r}") from exc


@app.command("claim-pt")
@bad_input_exits_2
@options_from(VocabularySettings, into="vocabulary")
def claim_pt(
    out: Annotated[Path, typer.Option(help="Run directory (resumable): sites/, central/, results.csv, results.md.")],
    data: DataOpt = None,
    sites: SitesOpt = 3,
    patients: PatientsOpt = "20000",
    task: Annotated[str, typer.Option(help="Binary task to fine-tune.")] = "asthma",
    train_size: Annotated[int, typer.Option(min=10, help="Labelled patients per fine-tuning cohort.")] = 300,
    seeds: Annotated[str, typer.Option(help="Fine-tuning seeds, separated by commas.")] = "0,1,2",
    epochs: Annotated[int, typer.Option(min=1, help="Maximum central pretraining epochs.")] = 10,
    seed: Annotated[int, typer.Option(help="Seed of the synthetic data and of pretraining.")] = 0,
    vocabulary: dict | None = None,
) -> None:
    """Claim-PT's core claim: pretrained vs scratch vs logistic regression at every site."""
    from simulations.experiments.claim_pt import run_claim_pt_experiment

    seed_list = _numbers(seeds, int)
    try:
        vocabulary_settings = VocabularySettings(**vocabulary)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    site_dirs = _sites_or_synth(data, out, sites, patients, seed)
    report = run_claim_pt_experiment(
        out,
        site_dirs,
        task=task,
        train_size=train_size,
        seeds=seed_list,
        epochs=epochs,
        pretrain_seed=seed,
        vocabulary=vocabulary_settings,
    )
    typer.echo(report.read_text())


@app.command("fed-vs-central")
@bad_input_exits_2
def fed_vs_central(
    out: Annotated[
        Path, typer.Option(help="Run directory (resumable): sites/, central/, federated-*/, fed_vs_central.md.")
    ],
    data: DataOpt = None,
    sites: SitesOpt = 3,
    patients: PatientsOpt = "20000",
    rounds: Annotated[
        int, typer.Option(min=1, help="Federated rounds; central trains rounds x local-epochs epochs.")
    ] = 10,
    local_epochs: Annotated[int, typer.Option(min=1, help="Local epochs per round.")] = 1,
    strategy: Annotated[str, typer.Option(help="Federated strategy.")] = "fedavg",
    parallel_clients: Annotated[int, typer.Option(min=1, help="ClientApps running at once in the simulation.")] = 1,
    seed: Annotated[int, typer.Option(help="Seed of the synthetic data and of both trainings.")] = 0,
) -> None:
    """Federated vs pooled pretraining with the same passes over the data (NVP Recall@k)."""
    from simulations.experiments.fed_vs_central import run_federated_vs_central

    if strategy not in STRATEGIES:
        raise typer.BadParameter(f"--strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    site_dirs = _sites_or_synth(data, out, sites, patients, seed)
    run_federated_vs_central(
        out,
        site_dirs,
        rounds=rounds,
        local_epochs=local_epochs,
        seed=seed,
        strategy=strategy,
        parallel_clients=parallel_clients,
    )
    typer.echo((out / "fed_vs_central.md").read_text())


@app.command("transfer")
@bad_input_exits_2
def transfer(
    data: SitesDirOpt,
    out: Annotated[
        Path,
        typer.Option(
            help="Run directory (resumable): pretrained/, predictions/, results.csv, results.md, *.png, report.html."
        ),
    ],
    config: Annotated[
        Path | None,
        typer.Option(
            help="TOML file overriding keys of the grid (TransferConfig: modes, tasks, cohort_sizes, seeds, ...)."
        ),
    ] = None,
    quick: Annotated[bool, typer.Option(help="Start from the reduced demo grid.")] = False,
    pretrained: Annotated[
        Path | None,
        typer.Option(help="Directory of pretrained encoders to build into and reuse (default OUT/pretrained)."),
    ] = None,
    precision: Annotated[
        str | None,
        typer.Option(
            help="float32 or bfloat16 for every pretraining of the grid (overrides the TOML's "
            "`precision`; default float32: a study's numbers should not depend on the machine)."
        ),
    ] = None,
) -> None:
    """Does pretraining at other institutions help a site, and does federated match pooled?

    Runs pretraining mode x fine-tuning site x task x cohort size x seed, and writes tables,
    plots and report.html."""
    from dataclasses import replace

    from simulations.experiments.transfer import load_config, run_transfer_experiment

    grid = load_config(config, quick=quick)
    try:
        grid = grid if precision is None else replace(grid, precision=precision)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--precision") from exc
    report = run_transfer_experiment(data, out, grid, pretrained=pretrained)
    typer.echo(report.console())
    typer.echo(f"\nall tables: {out / 'results.md'}\nreport: {out / 'report.html'}")


@app.command("precision")
@bad_input_exits_2
def precision(
    data: SitesDirOpt,
    out: Annotated[
        Path,
        typer.Option(
            help="Run directory (resumable): pretrain-seed-S/float32/ and .../bfloat16/ transfer runs, "
            "precision.json, precision.md."
        ),
    ],
    config: Annotated[
        Path | None, typer.Option(help="TOML file overriding keys of the grid (default: the quick grid).")
    ] = None,
    pretrain_seeds: Annotated[
        str, typer.Option(help="Pretraining seeds, comma-separated: the unit of the AUROC interval.")
    ] = "0,1,2",
) -> None:
    """Does bfloat16 keep the model's quality? One transfer grid pretrained in float32 and in
    bfloat16 at the same seeds, compared pair by pair (AUROC, NVP Recall@10, loss)."""
    from simulations.experiments.precision import run_precision_check
    from simulations.experiments.transfer import load_config

    seeds = _numbers(pretrain_seeds, int)
    if min(seeds) < 0 or len(set(seeds)) < len(seeds):
        raise typer.BadParameter(f"distinct seeds >= 0, got {pretrain_seeds!r}", param_hint="--pretrain-seeds")
    run_precision_check(data, out, load_config(config, quick=config is None), seeds)
    typer.echo((out / "precision.md").read_text())


@app.command("privacy")
@bad_input_exits_2
def privacy(
    data: Annotated[Path, typer.Option(help="Directory of site MEDS directories for the privacy-utility curve.")],
    out: Annotated[
        Path,
        typer.Option(
            help="Run directory (resumable): pretrained/, results.csv, results.md, "
            "privacy_utility.png, robustness.png, report.html."
        ),
    ],
    robustness_data: Annotated[
        Path | None,
        typer.Option(help="Site MEDS directories for the robustness table (e.g. 5 sites); default: --data."),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            help="TOML file overriding keys of PrivacyExperimentConfig "
            "(epsilons, strategies, adversaries, rounds, repeats, ...)."
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the robustness runs and the first of the curve's runs.")] = 0,
) -> None:
    """Privacy-utility curve (record-level DP-SGD at every site) and robustness table (aggregation
    strategy x misbehaving site), with plots and report.html."""
    from simulations.experiments.privacy import load_config, run_privacy_experiment

    report = run_privacy_experiment(data, out, load_config(config, seed=seed), robustness_data=robustness_data)
    typer.echo((out / "results.md").read_text())
    typer.echo(f"report: {report}")


@app.command("advisor")
@bad_input_exits_2
def advisor(
    out: Annotated[
        Path,
        typer.Option(
            help="Run directory (resumable): consortium-*/, predictions.csv, predictor.json, results.md, *.png."
        ),
    ],
    config: Annotated[
        Path | None,
        typer.Option(help="TOML file overriding keys of AdvisorConfig (consortia, sites, patients, max_shift, ...)."),
    ] = None,
    quick: Annotated[bool, typer.Option(help="Start from the small test-sized configuration.")] = False,
    only: Annotated[
        str,
        typer.Option(help="Measure only these consortia (numbers from 1, separated by commas), without the report."),
    ] = "",
) -> None:
    """Does the transfer advisor predict who helps whom? Simulated consortia, their measured gain
    matrices, and the predictor judged on consortia it was not fitted on."""
    from simulations.experiments.advisor import load_advisor_config, run_advisor_experiment

    settings = load_advisor_config(config, quick=quick)
    consortia = _numbers(only, int) if only else None
    if consortia and not all(1 <= c <= settings.consortia for c in consortia):
        raise typer.BadParameter(f"--only: consortia are numbered 1 to {settings.consortia}")
    report = run_advisor_experiment(out, settings, consortia)
    if report is not None:
        typer.echo(report.read_text())
