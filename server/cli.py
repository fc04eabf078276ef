"""`claimpt certs` and `claimpt server ...`: what the consortium's coordinator runs
(docs/architecture.md §4 and §8, docs/deployment.md)."""

from __future__ import annotations

import logging
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer

from shared_model.runtime.options import bad_input_exits_2

log = logging.getLogger(__name__)
server_app = typer.Typer(
    help="Run the consortium's SuperLink (TLS, SuperNode authentication, signed checkpoints).", no_args_is_help=True
)


@bad_input_exits_2
def certs(
    out: Annotated[
        Path,
        typer.Option(
            help="New directory for ca.crt/.key, superlink.crt/.key, supernodes/<site>[.pub], "
            "signing.key/.pub, app-signing.key, trusted-entities.yaml (all 0600)."
        ),
    ],
    hosts: Annotated[
        str,
        typer.Option(
            help="SuperLink host names and IP addresses for the certificate, separated by "
            "commas (e.g. superlink.example.org,127.0.0.1)."
        ),
    ],
    sites: Annotated[
        str,
        typer.Option(
            help="For a trial: site names, separated by commas, one SuperNode key pair each in supernodes/ "
            "(`server start` registers them by name). In production each site makes its own (`claimpt site keys`)."
        ),
    ] = "",
    days: Annotated[
        int, typer.Option(min=1, max=825, help="Validity of the SuperLink certificate in days (the CA: 10 years).")
    ] = 825,
    force: Annotated[bool, typer.Option(help="Replace an existing directory (its keys are lost).")] = False,
) -> None:
    """Create the CA, the SuperLink TLS certificate, SuperNode keys and the signing keys."""
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


@server_app.command("start")
@bad_input_exits_2
def start(
    certs: Annotated[
        Path | None,
        typer.Option(
            help="Directory written by `claimpt certs` (ca.crt, superlink.crt/.key, signing.key, supernodes/*.pub)."
        ),
    ] = None,
    state: Annotated[
        Path,
        typer.Option(
            help=(
                "Server state directory: superlink.db, superlink.log and flwr-home/ (the `flwr` connection named "
                "'claimpt')."
            )
        ),
    ] = Path("superlink-state"),
    host: Annotated[str, typer.Option(help="Address to listen on (0.0.0.0: every interface).")] = "0.0.0.0",
    port: Annotated[
        int,
        typer.Option(
            min=1,
            max=65535,
            help="The HTTPS port the sites' SuperNodes connect to (Fleet API only); open it to the sites.",
        ),
    ] = 9092,
    control_port: Annotated[
        int,
        typer.Option(
            min=1,
            max=65535,
            help="The Control and Runtime APIs, on 127.0.0.1 only (`claimpt server submit`, `flwr` on this host).",
        ),
    ] = 9093,
    site_key: Annotated[
        list[str] | None,
        typer.Option(
            help="A site's SuperNode public key to register, named by its file's stem (hospital-a.pub) or "
            "NAME=PATH (repeatable; default: every certs/supernodes/*.pub). The name is the site's in every "
            "report and passport.",
        ),
    ] = None,
    insecure: Annotated[
        bool, typer.Option(help="No TLS, no SuperNode authentication, unsigned checkpoints. Local tests only.")
    ] = False,
) -> None:
    """Start flower-superlink with TLS and SuperNode authentication and enrol the sites' keys.

    Every checkpoint the ServerApp writes is signed with certs/signing.key. Runs until Ctrl-C or SIGTERM."""
    from server.registry import EnrolmentError, site_key_files
    from server.superlink import SuperLinkSettings, enrol_nodes, start_superlink
    from shared_model.runtime.processes import PortInUse, stop_group

    try:
        settings = SuperLinkSettings(
            state=state, certs=certs, host=host, port=port, control_port=control_port, insecure=insecure
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    default = [str(p) for p in sorted((certs / "supernodes").glob("*.pub"))] if certs and not insecure else []
    try:
        keys = site_key_files(list(site_key or default))
    except EnrolmentError as exc:
        raise typer.BadParameter(str(exc)) from exc
    try:
        process = start_superlink(settings)
    except PortInUse as exc:
        raise typer.BadParameter(str(exc)) from exc

    # SIGTERM (systemd, docker stop) stops the SuperLink like Ctrl-C; the handler only interrupts
    # process.wait(), so the SuperLink is reaped and stopped below, outside the handler.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        for name, node_id in enrol_nodes(settings, keys).items():
            log.info("site %s: node %d", name, node_id)
        typer.echo(
            f"SuperLink ready on {settings.host}:{settings.port} (sites), control on {settings.address}. "
            "Submit a signed run from the app directory with:\n"
            f"  claimpt server submit --state {settings.state} --approval APPROVAL.json ... "
            "--run-config \"num-server-rounds=10 run-dir='/path/on/this/server'\""
        )
        sys.stdout.flush()
        process.wait()
    except EnrolmentError as exc:
        raise typer.BadParameter(str(exc)) from exc
    except KeyboardInterrupt:
        log.info("stopping the SuperLink (%s)", settings.state / "superlink.log")
    finally:
        stop_group(process)
    if process.returncode not in (0, -signal.SIGTERM, -signal.SIGKILL, None):
        raise typer.Exit(process.returncode)


@server_app.command("enrol")
@bad_input_exits_2
def enrol(
    site: Annotated[str, typer.Option(help="The site's name (as in `claimpt certs --sites`).")],
    public_key: Annotated[Path, typer.Option(help="The identity.pub the site sent (`claimpt site keys`).")],
    state: Annotated[Path, typer.Option(help="The state directory given to `claimpt server start`.")] = Path(
        "superlink-state"
    ),
) -> None:
    """Enrol a site's identity key (STATE/sites.json): its signed privacy statements are then
    checked, and the passport says they are the site's own."""
    from server.registry import REGISTRY_FILE, EnrolmentError, enrol_identity

    try:
        enrol_identity(state / REGISTRY_FILE, site, public_key)
    except EnrolmentError as exc:
        raise typer.BadParameter(str(exc)) from exc
    typer.echo(f"enrolled {site}'s identity key in {state / REGISTRY_FILE}")


@server_app.command("submit")
@bad_input_exits_2
def submit(
    app_key: Annotated[
        Path | None,
        typer.Option(
            help="The consortium's app-signing.key (from `claimpt certs`), for sites that trust the consortium's key."
        ),
    ] = None,
    approval: Annotated[
        list[Path] | None,
        typer.Option(
            help="A site's approval of this app (`claimpt site approve`), for sites that run only what they "
            "approved; repeat for each site."
        ),
    ] = None,
    run_config: Annotated[str, typer.Option(help="Run-config overrides, as for `flwr run --run-config`.")] = "",
    app: Annotated[Path, typer.Option(help="The app directory (this repository).")] = Path("."),
    state: Annotated[Path, typer.Option(help="The state directory given to `claimpt server start`.")] = Path(
        "superlink-state"
    ),
) -> None:
    """Attach the signatures of the app bundle (the consortium's and the sites' approvals), start a
    federated run on this server's SuperLink and follow it to its end. Ends with what the run did:
    rounds trained, each site's rounds used, dropped, failed or missed, and the checkpoint. Exit
    code 1 when the run failed or trained fewer rounds than asked."""
    from server.submit import submit_run
    from server.superlink import SuperLinkSettings

    settings = SuperLinkSettings(state=state, insecure=True)  # only the paths are used
    try:
        code = submit_run(app, settings, run_config, tuple(approval or ()), app_key)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    raise typer.Exit(code)


@server_app.command("status")
@bad_input_exits_2
def status(
    state: Annotated[Path, typer.Option(help="The state directory given to `claimpt server start`.")] = Path(
        "superlink-state"
    ),
    last: Annotated[int, typer.Option(min=1, max=1000, help="How many of the latest runs to show.")] = 5,
) -> None:
    """The enrolled sites by name (online or not), the runs submitted, their rounds and outcome."""
    from server.status import server_status
    from server.superlink import SuperLinkSettings

    typer.echo(server_status(SuperLinkSettings(state=state, insecure=True), last=last))
