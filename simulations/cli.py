"""`claimpt`: one command line for data teams, researchers and site operators (DESIGN 1)."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ start-up chatter out of the CLI

from shared_model.cli_options import (  # noqa: E402
    DModelOpt, DropoutOpt, FfnOpt, HeadsOpt, LayersOpt, PreLnOpt, TimeOpt, model_options)
from shared_model.cli_options import bad_input_exits_2 as _bad_input_exits_2  # noqa: E402
from client.cli import finetune as site_finetune  # noqa: E402
from client.cli import site_app  # noqa: E402
from server.cli import server_app  # noqa: E402
from shared_model.data import read_meds, summarize  # noqa: E402

app = typer.Typer(
    name="claimpt",
    help="Federated pretraining and cross-institution transfer for claims/EHR visit transformers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show debug logging.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only show warnings and errors.")] = False,
) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S",
                        stream=sys.stderr, force=True)


def parse_sizes(patients: str, sites: int) -> list[int]:
    """`--patients 5000` (every site) or `--patients 20000,5000,2000` (one per site)."""
    try:
        sizes = [int(p) for p in patients.split(",")]
    except ValueError as exc:
        raise typer.BadParameter(f"expected integers separated by commas, got {patients!r}") from exc
    if len(sizes) == 1:
        sizes = sizes * sites
    if len(sizes) != sites:
        raise typer.BadParameter(f"{len(sizes)} sizes given for {sites} sites")
    if min(sizes) < 10:
        raise typer.BadParameter("each site needs at least 10 patients")
    return sizes


@app.command()
@_bad_input_exits_2
def synth(
    out: Annotated[Path, typer.Option(help="Directory to create; receives site-1 ... site-N.")],
    sites: Annotated[int, typer.Option(min=1, max=50, help="Number of institutions.")] = 3,
    patients: Annotated[str, typer.Option(help="Patients per site: one number for all sites, or one per site separated by commas (e.g. 20000,5000,2000).")] = "5000",
    seed: Annotated[int, typer.Option(help="Random seed; the same seed writes the same data.")] = 0,
    force: Annotated[bool, typer.Option(help="Replace existing site directories.")] = False,
) -> None:
    """Generate synthetic multi-institution pediatric claims, one MEDS directory per site."""
    from simulations.synth import synthesize

    sizes = parse_sizes(patients, sites)
    for path in synthesize(out, sizes, seed, overwrite=force):
        typer.echo(f"wrote {path}")


@app.command()
@_bad_input_exits_2
def validate(
    datasets: Annotated[list[Path], typer.Argument(help="MEDS dataset directories to check.")],
) -> None:
    """Validate MEDS directories and print a summary of each (exit 2 on the first bad input)."""
    for path in datasets:
        typer.echo(summarize(read_meds(path)).to_text())
        typer.echo("")


@app.command()
@_bad_input_exits_2
def convert(
    claims: Annotated[Path, typer.Option(help="claims.csv: patient_id, service_date, visit_type, code.")],
    patients: Annotated[Path, typer.Option(help="patients.csv: patient_id, birth_date, sex.")],
    out: Annotated[Path, typer.Option(help="MEDS directory to create.")],
    force: Annotated[bool, typer.Option(help="Replace an existing output directory.")] = False,
) -> None:
    """Convert Claim-PT style claims CSV files to MEDS (validated completely before writing)."""
    from shared_model.data.claims_csv import convert_claims

    path = convert_claims(claims, patients, out, overwrite=force)
    typer.echo(summarize(read_meds(path)).to_text())


# --------------------------------------------------------------------------- model options



pretrain_app = typer.Typer(help="Pretrain the shared model centrally (pooled) or federated.", no_args_is_help=True)
app.add_typer(pretrain_app, name="pretrain")


@pretrain_app.command("central")
@_bad_input_exits_2
def pretrain_central(
    data: Annotated[list[Path], typer.Option("--data", help="A site's MEDS directory; repeat for every site to pool.")],
    out: Annotated[Path, typer.Option(help="Run directory: receives checkpoint/, history.csv, metrics.json.")],
    epochs: Annotated[int, typer.Option(min=1, help="Maximum passes over the pooled training data.")] = 10,
    batch_size: Annotated[int, typer.Option(min=1, help="Patients per step (Claim-PT: 100).")] = 100,
    learning_rate: Annotated[float, typer.Option(help="RMSprop learning rate (Claim-PT: 1e-3).")] = 1e-3,
    patience: Annotated[int, typer.Option(min=1, help="Early stopping: epochs without tuning-loss improvement.")] = 2,
    min_count: Annotated[int, typer.Option(min=1, help="Keep codes seen in at least this many training patients.")] = 1,
    max_vocab: Annotated[int | None, typer.Option(help="Keep at most this many codes (most frequent first).")] = None,
    seed: Annotated[int, typer.Option(help="Random seed (initialisation and batch order).")] = 0,
    layers: LayersOpt = 1, heads: HeadsOpt = 2, d_model: DModelOpt = 100, ffn: FfnOpt = 100,
    dropout: DropoutOpt = 0.0, pre_ln: PreLnOpt = False, time_encoding: TimeOpt = "day_of_year",
) -> None:
    """Pretrain NVP + CP on the pooled sites; write RUN/checkpoint and NVP Recall@k."""
    from shared_model.training import PretrainSettings
    from simulations.central import run_central_pretraining

    metrics = run_central_pretraining(
        data, out, settings=PretrainSettings(epochs, batch_size, learning_rate, patience, seed),
        model_options=model_options(layers, heads, d_model, ffn, dropout, pre_ln, time_encoding),
        min_count=min_count, max_vocab=max_vocab)
    typer.echo(json.dumps({k: metrics[k] for k in ("nvp_held_out", "most_frequent_groups_baseline")}, indent=2))


@pretrain_app.command("federated")
@_bad_input_exits_2
def pretrain_federated(
    data: Annotated[list[Path], typer.Option("--data", help="A site's MEDS directory; repeat per site (one simulated SuperNode each).")],
    out: Annotated[Path, typer.Option(help="Run directory: checkpoints/round-NNN/, checkpoint/, rounds.csv.")],
    rounds: Annotated[int, typer.Option(min=1, help="Federated training rounds.")] = 5,
    strategy: Annotated[str, typer.Option(help="fedavg, fedprox, fedadam, fedavgm, fedmedian, fedtrimmedavg, krum or multikrum.")] = "fedavg",
    local_epochs: Annotated[int, typer.Option(min=1, help="Passes over each site's training data per round.")] = 1,
    client_optimizer: Annotated[str, typer.Option(help="reset: every site starts each round with a fresh RMSprop; keep: each site keeps its optimizer state across rounds (on the site).")] = "reset",
    signing_key: Annotated[Path | None, typer.Option(help="Ed25519 private key (signing.key from `claimpt certs`): sign every checkpoint manifest.")] = None,
    resume: Annotated[bool, typer.Option(help="Continue from the last complete round checkpoint in --out.")] = False,
    seed: Annotated[int, typer.Option(help="Random seed (initial model and every site's local training).")] = 0,
    batch_size: Annotated[int, typer.Option(min=1, help="Patients per local step.")] = 100,
    learning_rate: Annotated[float, typer.Option(help="Local RMSprop learning rate.")] = 1e-3,
    k_anonymity: Annotated[int, typer.Option(min=1, help="Sites report only codes seen in at least k patients.")] = 11,
    max_vocab: Annotated[int, typer.Option(min=0, help="Keep at most this many codes (0: all reported).")] = 0,
    min_clients: Annotated[int, typer.Option(min=1, help="Minimum sites per round (min-available-clients).")] = 2,
    proximal_mu: Annotated[float, typer.Option(help="FedProx proximal term weight.")] = 0.01,
    max_norm_ratio: Annotated[float, typer.Option(help="Drop updates above this multiple of the round's median update norm (0: off).")] = 5.0,
    max_update_norm: Annotated[float, typer.Option(help="Drop updates whose L2 norm exceeds this bound (0: off).")] = 0.0,
    adversary: Annotated[str, typer.Option(help="Simulate faulty sites (simulation only): SITE:KIND[=VALUE][@ROUND],... KIND: raise, nan, scale, signflip, noise.")] = "",
    dp_epsilon: Annotated[float, typer.Option(min=0, help="Record-level DP: every site trains with DP-SGD, noise calibrated to spend this epsilon over all rounds (0: off).")] = 0.0,
    dp_clip_norm: Annotated[float, typer.Option(min=0, help="DP-SGD: bound on each patient's gradient norm.")] = 0.1,
    dp_embedding_share: Annotated[float, typer.Option(min=0, max=0.99, help="DP-SGD: share of the squared clip norm reserved for the code embedding's gradient, the rest for the other layers (0: one bound over all parameters).")] = 0.5,
    dp_delta: Annotated[float, typer.Option(min=0, help="DP-SGD: delta (0: 1/n^1.1 with n the site's training patients).")] = 0.0,
    client_dp_noise: Annotated[float, typer.Option(min=0, help="Client-level DP: noise multiplier of Flower's server-side clipping wrapper (0: off).")] = 0.0,
    client_dp_clipping: Annotated[str, typer.Option(help="Client-level DP clipping: fixed or adaptive.")] = "fixed",
    client_dp_clip_norm: Annotated[float, typer.Option(min=0, help="Client-level DP: bound on a site's update norm (initial bound if adaptive).")] = 1.0,
    secure_aggregation: Annotated[bool, typer.Option(help="SecAgg+: the server learns only the sum of the sites' models (fedavg, sites weighted equally; no update validation).")] = False,
    layers: LayersOpt = 1, heads: HeadsOpt = 2, d_model: DModelOpt = 100, ffn: FfnOpt = 100,
    dropout: DropoutOpt = 0.0, pre_ln: PreLnOpt = False, time_encoding: TimeOpt = "day_of_year",
) -> None:
    """Federated pretraining in Flower's simulation engine, one SuperNode per site."""
    from shared_model.run_config import FederatedRunConfig
    from simulations.adversary import parse_adversaries
    from simulations.federated import run_federated_simulation

    try:
        parse_adversaries(adversary)
        settings = FederatedRunConfig(
            num_server_rounds=rounds, strategy=strategy, local_epochs=local_epochs, client_optimizer=client_optimizer,
            signing_key=str(signing_key or ""), batch_size=batch_size,
            learning_rate=learning_rate, seed=seed, k_anonymity=k_anonymity, max_vocab=max_vocab,
            min_available_clients=min_clients, proximal_mu=proximal_mu,
            max_update_norm=max_update_norm, run_dir=str(out), resume=resume,
            dp_epsilon=dp_epsilon, dp_clip_norm=dp_clip_norm, dp_embedding_share=dp_embedding_share,
            dp_delta=dp_delta, client_dp_noise=client_dp_noise,
            client_dp_clipping=client_dp_clipping, client_dp_clip_norm=client_dp_clip_norm,
            secure_aggregation=secure_aggregation, max_norm_ratio=0.0 if secure_aggregation else max_norm_ratio,
            d_model=d_model, n_layers=layers, n_heads=heads, ffn_dim=ffn, dropout=dropout, pre_layer_norm=pre_ln,
            time_encoding=time_encoding)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    table = run_federated_simulation(data, settings, adversary=adversary)
    typer.echo(table.to_string(index=False))


app.command("finetune")(site_finetune)
app.add_typer(site_app, name="site")
app.add_typer(server_app, name="server")


@app.command("summarize")
def summarize_results(
    metrics: Annotated[list[Path], typer.Argument(help="metrics.json files written by `claimpt finetune`.")],
) -> None:
    """Print fine-tuning results side by side (one row per metrics.json)."""
    import pandas as pd

    rows = []
    for path in metrics:
        record = json.loads(path.read_text())
        model = record["model"] if record["model"] == "logreg" else ("pretrained" if record["pretrained"] else "scratch")
        scores = {k: round(v, 3) for k, v in record.items() if k.startswith(("auroc", "auprc", "recall@"))}
        rows.append({"site": Path(record.get("data", "")).name, "task": record["task"], "model": model,
                     "n": record["train_size"], **scores})
    typer.echo(pd.DataFrame(rows).sort_values(["task", "site", "model"]).to_string(index=False))


@app.command("model-info")
def model_info(
    vocab_size: Annotated[int, typer.Option(min=3, help="Embedding rows: codes + padding + UNK (Claim-PT: 49,836).")],
    groups: Annotated[int, typer.Option(min=1, help="Target groups of the NVP/CP heads (Claim-PT: 3,357).")],
    layers: LayersOpt = 1, heads: HeadsOpt = 2, d_model: DModelOpt = 100, ffn: FfnOpt = 100,
    dropout: DropoutOpt = 0.0, pre_ln: PreLnOpt = False, time_encoding: TimeOpt = "day_of_year",
) -> None:
    """Print the layer table and parameter count of the model a config builds."""
    from shared_model.config import ClaimTransformerConfig
    from shared_model.model import parameter_table

    config = ClaimTransformerConfig(vocab_size=vocab_size, n_groups=groups,
                                    **model_options(layers, heads, d_model, ffn, dropout, pre_ln, time_encoding))
    rows = parameter_table(config)
    typer.echo(f"{'layer':<20}{'type':<20}{'parameters':>14}")
    for name, kind, count in rows:
        typer.echo(f"{name:<20}{kind:<20}{count:>14,}")
    typer.echo(f"{'total':<40}{sum(r[2] for r in rows):>14,}")


experiment_app = typer.Typer(help="Run experiments (resumable) and write results.csv, results.md.",
                             no_args_is_help=True)
app.add_typer(experiment_app, name="experiment")


ExperimentDataOpt = Annotated[list[Path] | None, typer.Option("--data", help="Site MEDS directories; default: synthesise them.")]
ExperimentSitesOpt = Annotated[int, typer.Option(min=2, help="Synthetic sites when --data is not given.")]
ExperimentPatientsOpt = Annotated[str, typer.Option(help="Patients per synthetic site (one value or one per site).")]


def _sites_or_synth(data: list[Path] | None, out: Path, sites: int, patients: str, seed: int) -> list[Path]:
    if data:
        return list(data)
    from simulations.synth import synthesize

    target = out / "sites"
    if all((target / f"site-{i + 1}" / "metadata" / "dataset.json").exists() for i in range(sites)):
        return [target / f"site-{i + 1}" for i in range(sites)]
    return synthesize(target, parse_sizes(patients, sites), seed, overwrite=True)


@experiment_app.command("claim-pt")
@_bad_input_exits_2
def experiment_claim_pt(
    out: Annotated[Path, typer.Option(help="Run directory (resumable): sites/, central/, results.csv, results.md.")],
    data: ExperimentDataOpt = None, sites: ExperimentSitesOpt = 3, patients: ExperimentPatientsOpt = "20000",
    task: Annotated[str, typer.Option(help="Binary task to fine-tune.")] = "asthma",
    train_size: Annotated[int, typer.Option(min=10, help="Labelled patients per fine-tuning cohort.")] = 300,
    seeds: Annotated[str, typer.Option(help="Fine-tuning seeds, separated by commas.")] = "0,1,2",
    epochs: Annotated[int, typer.Option(min=1, help="Maximum central pretraining epochs.")] = 10,
    seed: Annotated[int, typer.Option(help="Seed of the synthetic data and of pretraining.")] = 0,
) -> None:
    """Claim-PT's core claim: pretrained vs scratch vs logistic regression at every site."""
    from simulations.experiments.claim_pt import run_claim_pt_experiment

    site_dirs = _sites_or_synth(data, out, sites, patients, seed)
    report = run_claim_pt_experiment(out, site_dirs, task=task, train_size=train_size,
                                     seeds=tuple(int(s) for s in seeds.split(",")), epochs=epochs, pretrain_seed=seed)
    typer.echo(report.read_text())


@experiment_app.command("fed-vs-central")
@_bad_input_exits_2
def experiment_fed_vs_central(
    out: Annotated[Path, typer.Option(help="Run directory (resumable): sites/, central/, federated-*/, fed_vs_central.md.")],
    data: ExperimentDataOpt = None, sites: ExperimentSitesOpt = 3, patients: ExperimentPatientsOpt = "20000",
    rounds: Annotated[int, typer.Option(min=1, help="Federated rounds; central trains rounds x local-epochs epochs.")] = 10,
    local_epochs: Annotated[int, typer.Option(min=1, help="Local epochs per round.")] = 1,
    strategy: Annotated[str, typer.Option(help="Federated strategy.")] = "fedavg",
    parallel_clients: Annotated[int, typer.Option(min=1, help="ClientApps running at once in the simulation.")] = 1,
    seed: Annotated[int, typer.Option(help="Seed of the synthetic data and of both trainings.")] = 0,
) -> None:
    """Federated vs pooled pretraining with the same passes over the data (NVP Recall@k)."""
    from simulations.experiments.fed_vs_central import run_federated_vs_central

    site_dirs = _sites_or_synth(data, out, sites, patients, seed)
    run_federated_vs_central(out, site_dirs, rounds=rounds, local_epochs=local_epochs, seed=seed, strategy=strategy,
                             parallel_clients=parallel_clients)
    typer.echo((out / "fed_vs_central.md").read_text())


@experiment_app.command("transfer")
@_bad_input_exits_2
def experiment_transfer(
    data: Annotated[Path, typer.Option(help="Directory holding one MEDS directory per site (e.g. the --out of `claimpt synth`).")],
    out: Annotated[Path, typer.Option(help="Run directory (resumable): pretrained/, predictions/, results.csv, results.md, *.png, report.html.")],
    config: Annotated[Path | None, typer.Option(help="TOML file overriding grid keys: modes, tasks, cohort_sizes (0 = all), seeds, pretrain_epochs, finetune_epochs, pretrain_seed, strategy, k_anonymity, heatmap, heatmap_task, heatmap_size, bootstrap, parallel_clients.")] = None,
    quick: Annotated[bool, typer.Option(help="Start from the reduced demo grid (asthma; cohorts 100, 300; seeds 0, 1; 3 pretraining passes).")] = False,
) -> None:
    """Does pretraining at other institutions help a site, and does federated match pooled?

    Runs pretraining mode (scratch, logreg, local, central, federated, federated leave-one-site-out)
    x fine-tuning site x task x cohort size x seed, and writes tables, plots and report.html."""
    from simulations.experiments.transfer import load_config, run_transfer_experiment

    grid = load_config(config, quick=quick)
    report = run_transfer_experiment(data, out, grid)
    typer.echo((out / "results.md").read_text())
    typer.echo(f"report: {report}")


@experiment_app.command("privacy")
@_bad_input_exits_2
def experiment_privacy(
    data: Annotated[Path, typer.Option(help="Directory of site MEDS directories for the privacy-utility curve (e.g. 3 sites from `claimpt synth`).")],
    out: Annotated[Path, typer.Option(help="Run directory (resumable): pretrained/, results.csv, results.md, privacy_utility.png, robustness.png, report.html.")],
    robustness_data: Annotated[Path | None, typer.Option(help="Directory of site MEDS directories for the robustness table (e.g. 5 sites); default: --data.")] = None,
    epsilons: Annotated[str, typer.Option(help="Record-level epsilons of the curve, separated by commas; inf = no DP.")] = "1,2,4,8,inf",
    strategies: Annotated[str, typer.Option(help="Robustness rows: fedavg, fedavg+validation (norm-ratio filter on), fedmedian, fedtrimmedavg, krum, multikrum.")] = "fedavg,fedavg+validation,fedmedian,fedtrimmedavg,multikrum",
    adversaries: Annotated[str, typer.Option(help="Robustness columns: none, scale=F, signflip, noise=S, labelflip (the second site misbehaves every round).")] = "none,scale=10,signflip",
    rounds: Annotated[int, typer.Option(min=1, help="Federated rounds of the privacy curve's runs.")] = 4,
    repeats: Annotated[int, typer.Option(min=1, help="Federated runs per point of the curve, at seeds --seed, --seed + 1, ...: one run's downstream AUROC moves by ~0.03 with its seed.")] = 3,
    robustness_rounds: Annotated[int, typer.Option(min=1, help="Federated rounds of the robustness table's runs.")] = 8,
    clip_norm: Annotated[float, typer.Option(min=0, help="DP-SGD per-patient gradient bound.")] = 0.1,
    embedding_share: Annotated[float, typer.Option(min=0, max=0.99, help="DP-SGD: share of the squared clip norm reserved for the code embedding (0: one flat bound).")] = 0.5,
    dp_batch_size: Annotated[int, typer.Option(min=0, help="Expected batch of the private runs (0: 100, as the non-private run); the signal-to-noise ratio grows with it.")] = 0,
    learning_rate: Annotated[float, typer.Option(min=0, help="Learning rate of the curve's non-private runs (0: the framework's 1e-3); 2e-3 had the lowest held-out pretraining loss of 1e-3 to 8e-3 at 4 rounds.")] = 2e-3,
    dp_learning_rate: Annotated[float, typer.Option(min=0, help="Learning rate of the private runs (0: --learning-rate); clipped, noisy training converges slower: 8e-3 had the lowest held-out pretraining loss under DP.")] = 8e-3,
    dp_rounds: Annotated[int, typer.Option(min=0, help="Federated rounds of the private runs (0: --rounds, as the non-private run); the same epsilon is spread over them.")] = 0,
    task: Annotated[str, typer.Option(help="Downstream binary task.")] = "asthma",
    cohort_size: Annotated[int, typer.Option(min=10, help="Labelled patients per site for the downstream probe.")] = 300,
    seeds: Annotated[str, typer.Option(help="Downstream fine-tuning seeds, separated by commas.")] = "0,1,2",
    seed: Annotated[int, typer.Option(help="Seed of the robustness runs and the first of the curve's runs.")] = 0,
) -> None:
    """Privacy-utility curve (record-level DP-SGD at every site) and robustness table (aggregation
    strategy x misbehaving site), with plots and report.html."""
    from simulations.experiments.privacy import PrivacyExperimentConfig, run_privacy_experiment

    config = PrivacyExperimentConfig(
        epsilons=tuple(float(e) for e in epsilons.split(",")), strategies=tuple(strategies.split(",")),
        adversaries=tuple(adversaries.split(",")), rounds=rounds, repeats=repeats, robustness_rounds=robustness_rounds, clip_norm=clip_norm,
        embedding_share=embedding_share, dp_batch_size=dp_batch_size,
        learning_rate=learning_rate, dp_learning_rate=dp_learning_rate, dp_rounds=dp_rounds, task=task,
        cohort_size=cohort_size, seeds=tuple(int(s) for s in seeds.split(",")), seed=seed)
    report = run_privacy_experiment(data, out, config, robustness_data=robustness_data)
    typer.echo((out / "results.md").read_text())
    typer.echo(f"report: {report}")


@app.command()
@_bad_input_exits_2
def attention(
    checkpoint: Annotated[Path, typer.Option(help="A pretrained or fine-tuned (task) checkpoint directory.")],
    data: Annotated[Path, typer.Option(help="The site's MEDS directory (codes.parquet supplies code descriptions).")],
    out: Annotated[Path, typer.Option(help="New directory: attention.html, attention-<id>.png, codes-<id>.png, patients.csv.")],
    patient: Annotated[list[int] | None, typer.Option(help="A (pseudonymous) subject id to explain; repeatable. Default: a random sample.")] = None,
    sample: Annotated[int, typer.Option(min=1, help="Without --patient: how many patients to explain, drawn from --split.")] = 20,
    split: Annotated[str, typer.Option(help="Without --patient: train, tuning or held_out.")] = "held_out",
    render: Annotated[int, typer.Option(min=0, help="Patients that get PNGs and a section in attention.html (all go to patients.csv).")] = 20,
    group: Annotated[str, typer.Option(help="Pretrained checkpoints: explain this next-visit group's logit, e.g. ICD10CM/J45 (default: each patient's top group).")] = "",
    server_public_key: Annotated[Path | None, typer.Option(help="Refuse the checkpoint unless its manifest signature verifies under this key.")] = None,
    seed: Annotated[int, typer.Option(help="Random seed of the patient sample.")] = 0,
    force: Annotated[bool, typer.Option(help="Replace an existing --out directory.")] = False,
) -> None:
    """Attention playground: per-layer, per-head attention over visits and code attributions."""
    from shared_model.signing import load_verifier
    from simulations.playground import PlaygroundSettings, run_playground

    if split not in ("train", "tuning", "held_out"):
        raise typer.BadParameter(f"--split must be train, tuning or held_out, got {split!r}")
    settings = PlaygroundSettings(tuple(patient or ()), sample, split, render, seed, group)
    verify = load_verifier(server_public_key) if server_public_key else None
    typer.echo(f"wrote {run_playground(checkpoint, data, out, settings, verify, overwrite=force)}")


@app.command()
@_bad_input_exits_2
def embed(
    checkpoint: Annotated[Path, typer.Option(help="A pretrained or fine-tuned (task) checkpoint directory.")],
    data: Annotated[list[Path], typer.Option("--data", help="A site's MEDS directory; repeat to compare sites.")],
    out: Annotated[Path, typer.Option(help="New directory: embeddings.parquet (subject_id, site, split, label, e000...) and projection.png.")],
    label: Annotated[str | None, typer.Option(help="Colour the second panel by this task's label (e.g. asthma).")] = None,
    limit: Annotated[int, typer.Option(min=0, help="At most this many patients per site (0: all).")] = 0,
    server_public_key: Annotated[Path | None, typer.Option(help="Refuse the checkpoint unless its manifest signature verifies under this key.")] = None,
    seed: Annotated[int, typer.Option(help="Random seed of the --limit sample and the projection.")] = 0,
    force: Annotated[bool, typer.Option(help="Replace an existing --out directory.")] = False,
) -> None:
    """Export patient vectors and plot a 2-D projection (PCA, or UMAP if installed) by site and label."""
    from shared_model.signing import load_verifier
    from simulations.embeddings import EmbedSettings, run_embed

    verify = load_verifier(server_public_key) if server_public_key else None
    typer.echo(f"wrote {run_embed(checkpoint, data, out, EmbedSettings(label, limit, seed), verify_signature=verify, overwrite=force)}")


@app.command()
@_bad_input_exits_2
def certs(
    out: Annotated[Path, typer.Option(help="New directory for ca.crt/.key, superlink.crt/.key, supernodes/<site>[.pub], signing.key/.pub (all 0600).")],
    hosts: Annotated[str, typer.Option(help="SuperLink host names and IP addresses for the certificate, separated by commas (e.g. superlink.example.org,127.0.0.1).")],
    sites: Annotated[str, typer.Option(help="Site names, separated by commas: one SuperNode authentication key pair each.")] = "site-1,site-2",
    days: Annotated[int, typer.Option(min=1, max=825, help="Validity of the SuperLink certificate in days (the CA: 10 years).")] = 825,
    force: Annotated[bool, typer.Option(help="Replace an existing directory (its keys are lost).")] = False,
) -> None:
    """Create the CA, the SuperLink TLS certificate, SuperNode keys and the checkpoint signing key."""
    from server.certs import CertificateSettings, write_certificates

    def names(text: str) -> tuple[str, ...]:
        return tuple(part.strip() for part in text.split(",") if part.strip())

    try:
        settings = CertificateSettings(hosts=names(hosts), sites=names(sites), days=days)
        directory = write_certificates(out, settings, force=force)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        typer.echo(f"wrote {path}")


@app.command()
@_bad_input_exits_2
def bench(
    out: Annotated[Path, typer.Option(help="Directory for bench.json and bench.md.")],
    patients: Annotated[int, typer.Option(help="Patients per site for the data benchmarks.")] = 100_000,
    sites: Annotated[int, typer.Option(min=2, help="Number of synthetic sites.")] = 3,
    repeats: Annotated[int, typer.Option(min=1, help="Repeats per timing (median, min, max reported).")] = 3,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    scale: Annotated[int, typer.Option(min=0, help="Also synthesise this many patients, tensorise them into shards and pretrain one epoch streaming from them, reporting wall times and peak RSS (0: skip).")] = 0,
    model: Annotated[bool, typer.Option(help="Include the paper-sized model throughput figures.")] = True,
    federated: Annotated[int, typer.Option(min=0, help="Also time FedAvg rounds over 3 sites of this many patients (0: skip).")] = 0,
) -> None:
    """Measure throughput and data properties; write bench.json and bench.md."""
    from simulations.bench import run_bench

    report = run_bench(out, patients_per_site=patients, sites=sites, repeats=repeats, seed=seed,
                       scale_patients=scale, model=model, federated_patients=federated)
    typer.echo(report.read_text())


if __name__ == "__main__":  # pragma: no cover
    app()
