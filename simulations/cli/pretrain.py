"""`claimpt pretrain central | federated`: pretrain the shared model pooled, or in Flower's
simulation engine with one SuperNode per site. Every setting is an option generated from its
config dataclass (PretrainSettings, ClaimTransformerConfig, FederatedRunConfig)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from shared_model.contract.run_config import FederatedRunConfig
from shared_model.data.meds import MedsLayout
from shared_model.model.config import ARCHITECTURE, ClaimTransformerConfig, architecture_options
from shared_model.runtime.options import bad_input_exits_2, options_from
from shared_model.settings import PretrainSettings, VocabularySettings

app = typer.Typer(help="Pretrain the shared model centrally (pooled) or federated.", no_args_is_help=True)


@app.command("central")
@bad_input_exits_2
@options_from(PretrainSettings, into="settings")
@options_from(VocabularySettings, into="vocabulary")
@options_from(ClaimTransformerConfig, fields=ARCHITECTURE, into="architecture")
def central(
    data: Annotated[list[Path], typer.Option("--data", help="A site's MEDS directory; repeat for every site to pool.")],
    out: Annotated[Path, typer.Option(help="Run directory: receives checkpoint/, history.csv, metrics.json.")],
    stream: Annotated[
        bool,
        typer.Option(
            help="Tensorise each site file by file into memory-mapped shards (RUN/shards/) and train from them: "
            "for cohorts larger than memory."
        ),
    ] = False,
    settings: dict[str, Any] | None = None,
    vocabulary: dict[str, Any] | None = None,
    architecture: dict[str, Any] | None = None,
) -> None:
    """Pretrain NVP + CP on the pooled sites; write RUN/checkpoint and NVP Recall@k."""
    from shared_model.training.central import run_central_pretraining

    try:
        pretraining = PretrainSettings(**settings)
        vocabulary_settings = VocabularySettings(**vocabulary)
        model_options = architecture_options(architecture)
        ClaimTransformerConfig(vocab_size=3, n_groups=1, **model_options)  # checked before the data is read
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    metrics = run_central_pretraining(
        data,
        out,
        settings=pretraining,
        model_options=model_options,
        vocabulary_settings=vocabulary_settings,
        stream=stream,
    )
    typer.echo(json.dumps({k: metrics[k] for k in ("nvp_held_out", "most_frequent_groups_baseline")}, indent=2))


@app.command("federated")
@bad_input_exits_2
@options_from(FederatedRunConfig, exclude=("run_dir", "data_paths"), into="run_config")
def federated(
    data: Annotated[
        list[Path],
        typer.Option("--data", help="A site's MEDS directory; repeat per site (one simulated SuperNode each)."),
    ],
    out: Annotated[
        Path, typer.Option(help="Run directory (run-dir): checkpoints/round-NNN/, checkpoint/, rounds.csv.")
    ],
    adversary: Annotated[
        str,
        typer.Option(
            help="Simulate faulty sites (simulation only): "
            "SITE:KIND[=VALUE][@ROUND],... KIND: raise, nan, scale, signflip, "
            "noise."
        ),
    ] = "",
    ray_address: Annotated[
        str,
        typer.Option(
            help="Run the ClientApps on an existing Ray cluster: 'auto' or HOST:PORT of `ray start --head` "
            "(other machines join with `ray start --address`). Default: a Ray instance on this machine."
        ),
    ] = "",
    run_config: dict[str, Any] | None = None,
) -> None:
    """Federated pretraining in Flower's simulation engine, one SuperNode per site. The options are
    the run-config keys (pyproject.toml, tool.flwr.app.config), with the same names and defaults."""
    from server.outcome import RunIncomplete
    from simulations.federation.adversary import parse_adversaries
    from simulations.federation.simulation import run_federated_simulation

    try:
        parse_adversaries(adversary)
        settings = FederatedRunConfig(**run_config, run_dir=str(out))
        if len(data) < settings.min_available_clients:
            raise ValueError(
                f"{len(data)} --data site(s) given, --min-available-clients is {settings.min_available_clients}"
            )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    for path in data:
        MedsLayout.of(path)  # a missing directory is refused before anything is written
    try:
        table = run_federated_simulation(data, settings, adversary=adversary, ray_address=ray_address)
    except RunIncomplete as exc:  # its checkpoints are written and say which rounds trained
        typer.echo((out / "rounds.csv").read_text() if (out / "rounds.csv").exists() else "", err=True)
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(table.to_string(index=False))
