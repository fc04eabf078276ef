"""`claimpt site ...` (and `claimpt finetune`): what a site's data/IT team runs behind its own
firewall (docs/deployment.md). Nothing here sends data anywhere; `site join` only starts the
SuperNode, whose ClientApp returns weights, scalar metrics and k-anonymised code counts."""

from __future__ import annotations

import json
import logging
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from shared_model.model.config import ARCHITECTURE, ClaimTransformerConfig, architecture_options
from shared_model.runtime.options import bad_input_exits_2, options_from
from shared_model.settings import MODELS, FinetuneSettings

log = logging.getLogger(__name__)
site_app = typer.Typer(
    help="Prepare a site's data, join the federation, fine-tune on a verified checkpoint.", no_args_is_help=True
)


@site_app.command("prepare")
@bad_input_exits_2
def prepare(
    raw: Annotated[
        Path, typer.Option(help="The site's raw MEDS directory (convert a claims CSV first with `claimpt convert`).")
    ],
    out: Annotated[
        Path, typer.Option(help="New directory for the validated, pseudonymised MEDS data the SuperNode reads.")
    ],
    key_file: Annotated[
        Path | None,
        typer.Option(
            help=(
                "The site's secret pseudonymisation key; created (0600) on first use. Keep it on site and backed up: "
                "another key gives other pseudonyms. Default: <out>.pseudonym-key next to --out."
            )
        ),
    ] = None,
    force: Annotated[bool, typer.Option(help="Replace an existing --out directory.")] = False,
) -> None:
    """Validate the raw extract, replace every subject id by HMAC-SHA256(site key, id), write --out."""
    from client.prepare import prepare_site

    key = key_file or out.with_name(out.name + ".pseudonym-key")
    prepared = prepare_site(raw, out, key, overwrite=force)
    typer.echo(
        f"wrote {prepared.out}: {prepared.subjects} patients, {prepared.events} events, labels: "
        f"{', '.join(prepared.labels) or 'none'} (pseudonymisation key: {key})"
    )


@site_app.command("keys")
@bad_input_exits_2
def keys(
    site_id: Annotated[str, typer.Option(help="This site's name, as the coordinator enrols it.")],
    out: Annotated[
        Path,
        typer.Option(
            help="Directory for app-approval.key, trusted-entities.yaml, identity.pub, node.key and node.key.pub."
        ),
    ],
    rotate: Annotated[
        bool, typer.Option(help="Replace an existing key: every bundle approved with the old one stops running.")
    ] = False,
) -> None:
    """Make this site's keys: its identity (app-approval) key, whose trusted-entities.yaml makes
    the SuperNode run only the bundles this site approved (`site approve`) and which signs its
    privacy statements, and its SuperNode's authentication key. Only the .pub files leave the site."""
    from client.approval import make_site_keys

    made = make_site_keys(out, site_id, rotate=rotate)
    typer.echo(
        f"wrote {made.key} and {made.node_key} (keep them on site), {made.trusted_entities} (for `claimpt site "
        f"join`), {made.public} and {made.node_key}.pub (for the coordinator: `claimpt server enrol` and "
        "`claimpt server start --site-key`)"
    )
    if rotate:
        typer.echo("restart `claimpt site join` with the new trusted-entities.yaml: earlier approvals no longer run")


@site_app.command("approve")
@bad_input_exits_2
def approve(
    app: Annotated[Path, typer.Option(help="The app directory this site reviewed (the release the coordinator runs).")],
    key: Annotated[Path, typer.Option(help="This site's app-approval.key (`claimpt site keys`).")],
    site_id: Annotated[str, typer.Option(help="This site's name (as given to `site keys`).")],
    out: Annotated[Path, typer.Option(help="Directory for the approval file to send to the coordinator.")] = Path(
        "approvals"
    ),
) -> None:
    """Approve the reviewed app: sign its bundle's hash with this site's key. The coordinator
    attaches the approval to its run (`claimpt server submit --approval`); changed code has
    another hash and needs a new approval."""
    from client.approval import approve as approve_bundle

    path = approve_bundle(app, key, site_id, out)
    typer.echo(f"wrote {path}: send it to the coordinator")


@site_app.command("join")
@bad_input_exits_2
def join(
    superlink: Annotated[
        str, typer.Option(help="The consortium SuperLink as HOST:PORT (outbound HTTPS from this site).")
    ],
    data: Annotated[Path, typer.Option(help="The directory written by `claimpt site prepare`.")],
    ca: Annotated[
        Path | None,
        typer.Option(help="The consortium CA certificate (ca.crt) that signed the SuperLink's certificate."),
    ] = None,
    key: Annotated[
        Path | None,
        typer.Option(help="This site's SuperNode private key (supernodes/<site> from `claimpt certs`, mode 0600)."),
    ] = None,
    trusted_entities: Annotated[
        Path | None,
        typer.Option(
            help=(
                "The keys whose app bundles this SuperNode runs: this site's own (`claimpt site keys`: only what "
                "it approved) or the consortium's (`claimpt certs`) (required unless --insecure)."
            )
        ),
    ] = None,
    site_id: Annotated[
        str,
        typer.Option(
            help="This site's name, as the coordinator enrolled it (`claimpt certs --sites`): a reply "
            "under another name than the one its SuperNode key is enrolled under is dropped."
        ),
    ] = ...,
    policy: Annotated[
        Path | None,
        typer.Option(
            help=(
                "This site's privacy policy, a TOML file (`claimpt site policy --example` prints every key "
                "with its default and meaning). Nothing the server sends can lower it. Default: every key "
                "at its default (k 11, delta <= 1/n, no DP required)."
            )
        ),
    ] = None,
    state: Annotated[
        Path | None,
        typer.Option(
            help=(
                "This site's state directory (0700): the privacy ledger (lifetime epsilon, survives restarts and "
                "runs) and errors.log. Default: <data>.site-state next to --data."
            )
        ),
    ] = None,
    identity_key: Annotated[
        Path | None,
        typer.Option(
            help="This site's app-approval.key (`claimpt site keys`, 0600): signs its privacy statements, which "
            "the coordinator checks against the identity.pub it enrolled."
        ),
    ] = None,
    runtime_port: Annotated[
        int,
        typer.Option(
            min=1,
            max=65535,
            help="Local port (127.0.0.1 only) of the SuperNode's runtime API, where the site worker takes its "
            "tasks; each site on one host needs its own.",
        ),
    ] = 9094,
    max_retries: Annotated[
        int | None, typer.Option(help="Give up after this many failed connection attempts (default: retry forever).")
    ] = None,
    site_worker: Annotated[
        bool,
        typer.Option(
            help=(
                "Take the SuperNode's tasks in this process, which keeps TensorFlow, the site's data and the "
                "compiled model loaded between rounds. --no-site-worker: Flower's SuperExec and a fresh process per "
                "message (each then imports TensorFlow and reads the data again)."
            )
        ),
    ] = True,
    stock_supernode: Annotated[
        bool,
        typer.Option(
            help="Run Flower's flower-supernode as shipped, which sleeps 3 s after every poll that finds no message "
            "(default: the same SuperNode with short polls, client/supernode_launcher.py, pinned to Flower 1.42.0)."
        ),
    ] = False,
    insecure: Annotated[bool, typer.Option(help="No TLS and no authentication. Local tests only.")] = False,
) -> None:
    """Validate the site data, then run flower-supernode with TLS and node authentication.

    This process becomes the site worker and the SuperNode its child (or, with --no-site-worker,
    the SuperNode replaces it): stop it with Ctrl-C, or SIGTERM."""
    from client.site_log import open_site_log
    from client.supernode import (
        SUPEREXEC_POLL,
        SuperNodeSettings,
        check_files,
        superexec_command,
        supernode_command,
        worker_for,
    )
    from client.worker import run_site
    from shared_model.data import read_meds
    from shared_model.runtime.processes import PortInUse, flower_environment, require_free_ports

    try:
        settings = SuperNodeSettings(
            superlink=superlink,
            data=data,
            key=key,
            ca=ca,
            site_id=site_id,
            runtime_port=runtime_port,
            insecure=insecure,
            max_retries=max_retries,
            policy=policy,
            state=state,
            trusted_entities=trusted_entities,
            identity_key=identity_key,
            site_worker=site_worker,
            short_polls=not stock_supernode,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    try:
        require_free_ports({"--runtime-port": ("127.0.0.1", runtime_port)})
    except PortInUse as exc:
        raise typer.BadParameter(str(exc)) from exc
    dataset = read_meds(data)
    check_files(settings)
    site_log = open_site_log(settings.state_dir)
    log.info("site %s: logging to %s as well", site_id, site_log)
    if "pseudonymisation" not in dataset.metadata:
        log.warning("%s was not written by `claimpt site prepare`: its subject ids are not pseudonymised", data)
    if insecure:
        log.warning("joining WITHOUT TLS or authentication (--insecure): local tests only")
    log.info("site %s: %d patients; starting flower-supernode", site_id, len(dataset.splits))
    raise typer.Exit(
        run_site(
            settings.state_dir,
            supernode_command(settings),
            worker_for(settings),
            lambda pid: superexec_command(settings, pid),
            # one Flower home per site on a host; the SuperExec's task poll at 0.1 s
            flower_environment({"FLWR_HOME": str(settings.state_dir / "flwr-home"), **SUPEREXEC_POLL}),
            site_log,
        )
    )


@site_app.command("status")
@bad_input_exits_2
def status(
    state: Annotated[Path, typer.Option(help="The site's state directory (`claimpt site join --state`).")],
    lines: Annotated[int, typer.Option(min=1, max=1000, help="How many runs, refusals and log lines to show.")] = 5,
) -> None:
    """The site worker, the privacy ledger, the messages answered per run, and the last refusals."""
    from client.status import site_status

    typer.echo(site_status(state, lines=lines))


@site_app.command("policy")
@bad_input_exits_2
def policy(
    example: Annotated[
        bool, typer.Option("--example", help="Print a policy file: every key at its default, with its meaning.")
    ] = False,
    table: Annotated[
        bool, typer.Option("--table", help="Print the keys as a Markdown table (docs/deployment.md holds it).")
    ] = False,
    check: Annotated[
        Path | None,
        typer.Option(help="Read this policy file and print what it sets, every key (exit 2 if it is refused)."),
    ] = None,
) -> None:
    """The site's privacy policy (`claimpt site join --policy`): its keys, or a file checked."""
    from client.policy import SitePolicy, load_policy
    from shared_model.settings import settings_table, settings_toml

    if example + table + (check is not None) != 1:
        raise typer.BadParameter("give one of --example, --table, --check FILE")
    if table:
        typer.echo(settings_table(SitePolicy, kebab=False), nl=False)
    else:
        typer.echo(settings_toml(load_policy(check) if check else SitePolicy(), kebab=False), nl=False)


CheckpointOpt = Annotated[Path, typer.Option(help="The consortium's pretrained checkpoint directory.")]
DataOpt = Annotated[Path, typer.Option(help="The site's MEDS directory.")]
TaskOpt = Annotated[str, typer.Option(help="asthma, self_harm (labels/<task>.parquet) or next_visit.")]
OutOpt = Annotated[Path, typer.Option(help="Run directory: receives metrics.json (and the fine-tuned checkpoint).")]
TrainSizeOpt = Annotated[
    int | None, typer.Option(help="Labelled training patients drawn from the train split (default: all).")
]
TestFromOpt = Annotated[
    datetime | None,
    typer.Option(
        formats=["%Y-%m-%d"],
        help="Out-of-time validation: train and tune on prediction times before this date, "
        "evaluate on held-out prediction times from it on.",
    ),
]
MinRoundOpt = Annotated[int, typer.Option(min=0, help="Refuse a checkpoint of an earlier federated round than this.")]


@site_app.command("finetune")
@bad_input_exits_2
@options_from(FinetuneSettings, into="settings")
def site_finetune(
    checkpoint: CheckpointOpt,
    server_public_key: Annotated[
        Path,
        typer.Option(help="The consortium's signing.pub: the checkpoint's manifest signature must verify under it."),
    ],
    data: DataOpt,
    task: TaskOpt,
    out: OutOpt,
    train_size: TrainSizeOpt = None,
    test_from: TestFromOpt = None,
    min_round: MinRoundOpt = 0,
    state: Annotated[
        Path | None,
        typer.Option(
            help="The site's state directory, where the newest round seen of "
            "each run is remembered and older ones are refused (default: "
            "<data>.site-state)."
        ),
    ] = None,
    allow_untrained: Annotated[
        bool, typer.Option(help="Accept a checkpoint of a run in which no round trained (its random start).")
    ] = False,
    settings: dict[str, Any] | None = None,
) -> None:
    """Fine-tune a task at this site on the consortium's signed checkpoint.

    Before any patient data is read: every file's sha256 against the manifest, the manifest's
    signature, that some round of its run trained, and that the checkpoint is not older than one
    of the same run used before."""
    from client.rollback import refuse_rollback, refuse_untrained
    from shared_model.contract.checkpoint import load_checkpoint
    from shared_model.contract.signing import load_verifier

    finetuning = _settings(settings)  # bad options stop here, before the site's state is touched
    loaded = load_checkpoint(checkpoint, verify_signature=load_verifier(server_public_key))
    log.info("%s: hashes and signature verified under %s", checkpoint, server_public_key)
    if not allow_untrained:
        refuse_untrained(loaded.manifest, checkpoint)
    refuse_rollback(loaded.manifest, checkpoint, state or data.with_name(data.name + ".site-state"), min_round)
    _finetune(
        data,
        task,
        out,
        loaded,
        checkpoint,
        finetuning,
        train_size=train_size,
        test_from=test_from,
        signature_verified=True,
    )


@bad_input_exits_2
@options_from(FinetuneSettings, into="settings")
@options_from(ClaimTransformerConfig, fields=ARCHITECTURE, into="architecture")
def finetune(
    data: DataOpt,
    task: TaskOpt,
    out: OutOpt,
    checkpoint: Annotated[
        Path | None, typer.Option(help="Pretrained checkpoint directory; omit to train from scratch.")
    ] = None,
    server_public_key: Annotated[
        Path | None, typer.Option(help="Refuse a checkpoint whose manifest signature does not verify under this key.")
    ] = None,
    model: Annotated[
        str,
        typer.Option(
            help="transformer, logreg (logistic regression on code counts) or gbm (LightGBM on code counts "
            "over 30 days, 365 days and all history, plus age)."
        ),
    ] = "transformer",
    train_size: TrainSizeOpt = None,
    test_from: TestFromOpt = None,
    min_round: MinRoundOpt = 0,
    settings: dict[str, Any] | None = None,
    architecture: dict[str, Any] | None = None,
) -> None:
    """Fine-tune a task on a small cohort (research: any checkpoint, or none); write metrics on
    the held-out split. The architecture options apply only without --checkpoint (a checkpoint
    carries its own config)."""
    from shared_model.contract.checkpoint import CheckpointError, load_checkpoint
    from shared_model.contract.signing import load_verifier

    finetuning = _settings(settings)
    loaded = None
    if checkpoint is not None:
        verify = load_verifier(server_public_key) if server_public_key is not None else None
        loaded = load_checkpoint(checkpoint, verify_signature=verify)
        if int(loaded.manifest.get("round", 0)) < min_round:
            raise CheckpointError(
                f"{checkpoint}: round {loaded.manifest.get('round', 0)} is older than --min-round {min_round}"
            )
    try:
        if model not in MODELS:
            raise ValueError(f"--model must be one of {', '.join(MODELS)}, got {model!r}")
        model_config = ClaimTransformerConfig(vocab_size=3, n_groups=1, **architecture_options(architecture))
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    _finetune(
        data,
        task,
        out,
        loaded,
        checkpoint,
        finetuning,
        train_size=train_size,
        test_from=test_from,
        model=model,
        model_config=model_config,
        signature_verified=server_public_key is not None,
    )


def _settings(values: dict[str, Any]) -> FinetuneSettings:
    try:
        return FinetuneSettings(**values)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc


def _finetune(
    data: Path,
    task: str,
    out: Path,
    loaded,
    checkpoint: Path | None,
    finetuning: FinetuneSettings,
    *,
    train_size: int | None,
    signature_verified: bool,
    test_from: datetime | None = None,
    model: str = "transformer",
    model_config: ClaimTransformerConfig | None = None,
) -> None:
    """What both fine-tuning commands do once the checkpoint is checked: fine-tune, write metrics.json."""
    from shared_model.data import DataValidationError, read_meds
    from shared_model.tensors.tasks import NEXT_VISIT
    from shared_model.training.finetuning import run_finetune

    dataset = read_meds(data)
    if task != NEXT_VISIT and task not in dataset.labels:
        raise DataValidationError(data, f"labels for task {task!r} (labels/{task}.parquet) or next_visit",
                                  found=", ".join(sorted(dataset.labels)) or "no labels")  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    record = run_finetune(
        dataset,
        task,
        train_size=train_size,
        seed=finetuning.seed,
        checkpoint=loaded,
        model=model,
        settings=finetuning,
        model_config=model_config,
        out=out,
        test_from=test_from.date() if test_from else None,
    )
    record["data"], record["checkpoint"] = str(data), str(checkpoint) if checkpoint else None
    record["signature_verified"] = signature_verified
    (out / "metrics.json").write_text(json.dumps(record, indent=2) + "\n")
    typer.echo(json.dumps(record, indent=2))
