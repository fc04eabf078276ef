"""`claimpt site ...` (and `claimpt finetune`): what a site's data/IT team runs behind its own
firewall (DESIGN 4 and 8). Nothing here sends data anywhere; `site join` only starts the
SuperNode, whose ClientApp returns weights, scalar metrics and k-anonymised code counts."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Annotated

import typer

from shared_model.cli_options import (DModelOpt, DropoutOpt, FfnOpt, HeadsOpt, LayersOpt, PreLnOpt, TimeOpt,
                                      bad_input_exits_2, model_options)

log = logging.getLogger(__name__)
site_app = typer.Typer(help="Prepare a site's data, join the federation, fine-tune on a verified checkpoint.",
                       no_args_is_help=True)


@site_app.command("prepare")
@bad_input_exits_2
def prepare(
    raw: Annotated[Path, typer.Option(help="The site's raw MEDS directory (convert a claims CSV first with `claimpt convert`).")],
    out: Annotated[Path, typer.Option(help="New directory for the validated, pseudonymised MEDS data the SuperNode reads.")],
    key_file: Annotated[Path | None, typer.Option(help="The site's secret pseudonymisation key; created (0600) on first use. Keep it on site and backed up: another key gives other pseudonyms. Default: <out>.pseudonym-key next to --out.")] = None,
    force: Annotated[bool, typer.Option(help="Replace an existing --out directory.")] = False,
) -> None:
    """Validate the raw extract, replace every subject id by HMAC-SHA256(site key, id), write --out."""
    from client.prepare import prepare_site

    key = key_file or out.with_name(out.name + ".pseudonym-key")
    prepared = prepare_site(raw, out, key, overwrite=force)
    typer.echo(f"wrote {prepared.out}: {prepared.subjects} patients, {prepared.events} events, labels: "
               f"{', '.join(prepared.labels) or 'none'} (pseudonymisation key: {key})")


@site_app.command("join")
@bad_input_exits_2
def join(
    superlink: Annotated[str, typer.Option(help="The consortium SuperLink as HOST:PORT (outbound HTTPS from this site).")],
    data: Annotated[Path, typer.Option(help="The directory written by `claimpt site prepare`.")],
    ca: Annotated[Path | None, typer.Option(help="The consortium CA certificate (ca.crt) that signed the SuperLink's certificate.")] = None,
    key: Annotated[Path | None, typer.Option(help="This site's SuperNode private key (supernodes/<site> from `claimpt certs`, mode 0600).")] = None,
    trusted_entities: Annotated[Path | None, typer.Option(help="The consortium's trusted-entities.yaml (from `claimpt certs`): run only app bundles signed by its app-signing key (required unless --insecure).")] = None,
    site_id: Annotated[str, typer.Option(help="Name of this site in logs and metrics (default: the --data directory name).")] = "",
    policy: Annotated[Path | None, typer.Option(help="This site's privacy policy (TOML: k_anonymity, require_dp, max_run_epsilon, lifetime_epsilon, max_delta, min_noise_multiplier, require_secure_aggregation, max_evaluations_per_run). Nothing the server sends can lower it. Default: k 11, delta <= 1/n, no DP required.")] = None,
    state: Annotated[Path | None, typer.Option(help="This site's state directory (0700): the privacy ledger (lifetime epsilon, survives restarts and runs) and errors.log. Default: <data>.site-state next to --data.")] = None,
    runtime_port: Annotated[int, typer.Option(min=1, max=65535, help="Local port (127.0.0.1 only) between the SuperNode and its ClientApps.")] = 9094,
    max_retries: Annotated[int | None, typer.Option(help="Give up after this many failed connection attempts (default: retry forever).")] = None,
    insecure: Annotated[bool, typer.Option(help="No TLS and no authentication. Local tests only.")] = False,
) -> None:
    """Validate the site data, then run flower-supernode with TLS and node authentication.

    The SuperNode replaces this process: stop it with Ctrl-C, or SIGTERM to its process group."""
    from client.supernode import SuperNodeSettings, check_files, supernode_command
    from shared_model.data import read_meds
    from shared_model.flower_processes import flower_environment

    try:
        settings = SuperNodeSettings(superlink=superlink, data=data, key=key, ca=ca, site_id=site_id,
                                     runtime_port=runtime_port, insecure=insecure, max_retries=max_retries,
                                     policy=policy, state=state, trusted_entities=trusted_entities)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    check_files(settings)
    dataset = read_meds(data)
    if "pseudonymisation" not in dataset.metadata:
        log.warning("%s was not written by `claimpt site prepare`: its subject ids are not pseudonymised", data)
    if insecure:
        log.warning("joining WITHOUT TLS or authentication (--insecure): local tests only")
    log.info("site %s: %d patients; starting flower-supernode", settings.site_id or data.name, len(dataset.splits))
    command = supernode_command(settings)
    os.execvpe(command[0], command, flower_environment())


@bad_input_exits_2
def finetune(
    ctx: typer.Context,
    data: Annotated[Path, typer.Option(help="The site's MEDS directory.")],
    task: Annotated[str, typer.Option(help="asthma, self_harm (labels/<task>.parquet) or next_visit.")],
    out: Annotated[Path, typer.Option(help="Run directory: receives metrics.json (and the fine-tuned checkpoint).")],
    checkpoint: Annotated[Path | None, typer.Option(help="Pretrained checkpoint directory; omit to train from scratch.")] = None,
    server_public_key: Annotated[Path | None, typer.Option(help="The consortium's signing.pub: refuse a checkpoint whose manifest signature does not verify under it (required by `site finetune`).")] = None,
    model: Annotated[str, typer.Option(help="transformer, or logreg (bag-of-codes logistic regression).")] = "transformer",
    train_size: Annotated[int | None, typer.Option(help="Labelled training patients drawn from the train split (default: all).")] = None,
    epochs: Annotated[int, typer.Option(min=1, help="Maximum epochs of training all layers (early stopping on the tuning cohort).")] = 40,
    batch_size: Annotated[int, typer.Option(min=1, help="Patients per step.")] = 32,
    learning_rate: Annotated[float, typer.Option(help="Adam learning rate of the task head (Claim-PT: 1e-4).")] = 1e-4,
    layer_decay: Annotated[float, typer.Option(min=0.0, max=1.0, help="Learning-rate factor per layer below the head (1 = uniform).")] = 0.8,
    gradual_unfreeze: Annotated[bool, typer.Option(help="Unfreeze one more layer group per epoch, head first.")] = False,
    patience: Annotated[int, typer.Option(min=1, help="Early stopping patience in epochs.")] = 4,
    adaptation: Annotated[str, typer.Option(help="With --checkpoint: probe (head only on the frozen encoder), probe-then-finetune, or finetune (Claim-PT: all layers).")] = "probe",
    probe_epochs: Annotated[int, typer.Option(min=1, help="Adam epochs of the head-only phase for next_visit (binary tasks use logistic regression).")] = 40,
    probe_learning_rate: Annotated[float, typer.Option(help="Adam learning rate of the head-only phase.")] = 1e-3,
    seed: Annotated[int, typer.Option(help="Random seed (cohort draw, initialisation, batch order).")] = 0,
    min_round: Annotated[int, typer.Option(min=0, help="Refuse a checkpoint of an earlier federated round than this.")] = 0,
    state: Annotated[Path | None, typer.Option(help="`site finetune`: the site's state directory, where the newest round seen of each run is remembered and older ones are refused (default: <data>.site-state).")] = None,
    layers: LayersOpt = 1, heads: HeadsOpt = 2, d_model: DModelOpt = 100, ffn: FfnOpt = 100,
    dropout: DropoutOpt = 0.0, pre_ln: PreLnOpt = False, time_encoding: TimeOpt = "day_of_year",
) -> None:
    """Fine-tune a task on a small cohort at one site; write metrics on its held-out split.

    Model options apply only without --checkpoint (a checkpoint carries its own config).

    Every checkpoint file's sha256 is checked against its manifest; with --server-public-key the manifest's signature too, before any patient data is read."""
    from client.rollback import refuse_rollback
    from shared_model.checkpoint import CheckpointError, load_checkpoint
    from shared_model.config import ClaimTransformerConfig
    from shared_model.data import read_meds
    from shared_model.finetuning import run_finetune
    from shared_model.signing import load_verifier
    from shared_model.training import FinetuneSettings

    site_command = ctx.parent is not None and ctx.parent.info_name == "site"
    if site_command and (checkpoint is None or server_public_key is None):
        raise typer.BadParameter("site finetune needs --checkpoint and --server-public-key (the consortium's "
                                 "signing.pub); use `claimpt finetune` for unsigned research checkpoints")
    verify = load_verifier(server_public_key) if server_public_key is not None else None
    ckpt = load_checkpoint(checkpoint, verify_signature=verify) if checkpoint is not None else None
    if verify is not None:
        log.info("%s: hashes and signature verified under %s", checkpoint, server_public_key)
    if ckpt is not None and checkpoint is not None:
        site_state = (state or data.with_name(data.name + ".site-state")) if site_command else None
        if site_state is not None:
            refuse_rollback(ckpt.manifest, checkpoint, site_state, min_round)
        elif int(ckpt.manifest.get("round", 0)) < min_round:
            raise CheckpointError(f"{checkpoint}: round {ckpt.manifest.get('round', 0)} is older than --min-round {min_round}")
    dataset = read_meds(data)
    options = model_options(layers, heads, d_model, ffn, dropout, pre_ln, time_encoding)
    out.mkdir(parents=True, exist_ok=True)
    record = run_finetune(
        dataset, task, train_size=train_size, seed=seed, checkpoint=ckpt, model=model,
        settings=FinetuneSettings(adaptation, epochs, batch_size, learning_rate, layer_decay, gradual_unfreeze,
                                  patience, seed, probe_epochs, probe_learning_rate),
        model_config=ClaimTransformerConfig(vocab_size=3, n_groups=1, **options), out=out)
    record["data"], record["checkpoint"] = str(data), str(checkpoint) if checkpoint else None
    record["signature_verified"] = verify is not None
    (out / "metrics.json").write_text(json.dumps(record, indent=2) + "\n")
    typer.echo(json.dumps(record, indent=2))


site_app.command("finetune")(finetune)
