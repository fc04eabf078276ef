"""`claimpt passport`: verify a federated checkpoint's privacy passport and print it, and check a
site's own ledger against it (the site's and the ethics board's command, beside the site's check)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated

import typer

from shared_model.runtime.options import bad_input_exits_2

DISAGREES_EXIT = 1


@bad_input_exits_2
def passport(
    checkpoint: Annotated[Path, typer.Argument(help="A federated checkpoint directory (a round's or the final one).")],
    server_public_key: Annotated[
        Path, typer.Option(help="The consortium's signing.pub: the manifest's signature must verify under it.")
    ],
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the verified passport to this JSON file.")
    ] = None,
    site_state: Annotated[
        Path | None,
        typer.Option(help="A site's state directory (claimpt site join --state): check its privacy ledger agrees."),
    ] = None,
    site_id: Annotated[str, typer.Option(help="With --site-state: the site's id (claimpt site join --site-id).")] = "",
    site_policy: Annotated[
        Path | None,
        typer.Option(help="With --site-state: the site's policy file; its digest, k and SecAgg+ are compared too."),
    ] = None,
) -> None:
    """Verify the checkpoint (every file's sha256 and the manifest's signature) and print its
    privacy passport: per site, the rounds its update was used, dropped or failed, the k it
    applied, its record-level DP, its policy; the run's client-level DP and SecAgg+. With
    --site-state, also check the site's own ledger against it (exit 1 if they disagree)."""
    from client.activity import ACTIVITY_FILE, ActivityLog
    from client.ledger import LEDGER_FILE, FileLedger, FileLines
    from client.passport_check import disagreements
    from client.policy import load_policy
    from shared_model.contract.passport import read_passport, render_page
    from shared_model.contract.signing import load_verifier

    if site_state is not None and not site_id:
        raise typer.BadParameter("--site-state needs --site-id (the id the site joined with)")
    document = read_passport(checkpoint, load_verifier(server_public_key))
    fingerprint = hashlib.sha256(server_public_key.read_bytes()).hexdigest()[:16]
    typer.echo(render_page(document, checkpoint=str(checkpoint), key_fingerprint=fingerprint))
    if json_out is not None:
        json_out.write_text(json.dumps(document.to_dict(), indent=2, sort_keys=True) + "\n")
    if site_state is not None:
        if not site_state.is_dir():
            raise FileNotFoundError(f"{site_state}: not a site state directory")
        # no ledger file: the site never trained with record-level DP
        problems = disagreements(
            document,
            FileLedger(site_state / LEDGER_FILE),
            site_id,
            activity=ActivityLog(FileLines(site_state / ACTIVITY_FILE, "activity log")),
            policy=load_policy(site_policy) if site_policy is not None else None,
        )
        for problem in problems:
            typer.echo(f"disagrees: {problem}", err=True)
        if problems:
            raise typer.Exit(DISAGREES_EXIT)
        typer.echo(f"the site's state in {site_state} agrees with the passport")
