"""The privacy passport: per site, what it gave in a federated run (docs/architecture.md §8).

Every federated checkpoint's signed manifest carries one under the key `passport`. The server
builds it (server.passport) from what it saw (which round used which site's update, which it
dropped and why, which replies failed) and from what each site stated about itself
(client.statement: k, policy, the record-level DP its own ledger spent). Sites appear only by
pseudonym: `site-` and 8 hex digits derived from the site's id, which the site can recompute.

This module is the format both sides share: the statement's record name, the pseudonym, reading
a verified passport from a checkpoint and writing it as a page for an ethics board's file.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from shared_model.checkpoint import CheckpointError, load_checkpoint

FORMAT = 1
MANIFEST_KEY = "passport"


class PassportError(CheckpointError):
    """The checkpoint has no passport, or not one this version reads."""


def site_key(site_id: str) -> int:
    """A stable number for a site id: the site's key in replies, its seed offset and its pseudonym."""
    return int(hashlib.sha256(site_id.encode()).hexdigest()[:8], 16) % (2**31 - 1)


def pseudonym(key: int) -> str:
    return f"site-{key:08x}"


def read_passport(checkpoint_dir: str | Path, verify_signature) -> dict[str, Any]:
    """The passport of a checkpoint whose signature and every file's sha256 verify
    (shared_model.checkpoint.CheckpointError otherwise)."""
    manifest = load_checkpoint(checkpoint_dir, verify_signature=verify_signature).manifest
    passport = manifest.get(MANIFEST_KEY)
    if not isinstance(passport, dict):
        raise PassportError(f"{checkpoint_dir}: the checkpoint carries no privacy passport (not a federated run?)")
    if passport.get("format") != FORMAT:
        raise PassportError(
            f"{checkpoint_dir}: passport format {passport.get('format')!r}, this version reads {FORMAT}"
        )
    if passport.get("through_round") != manifest.get("round") or passport.get("run_id") != manifest.get("run_id"):
        raise PassportError(f"{checkpoint_dir}: the passport covers another run or round than the checkpoint")
    return passport


def _dp_line(by_run: dict[str, dict[str, Any]]) -> str:
    spent = {run: dp for run, dp in by_run.items() if dp["rounds"]}
    if not spent:
        return "off"
    return "on: " + "; ".join(
        f"Flower run {run}: epsilon {dp['epsilon']:.3g} at delta {dp['delta']:.3g} over {dp['rounds']} round(s), "
        f"noise multiplier {dp['noise_multiplier']:.3g}, {dp['accountant'].upper()} accountant"
        for run, dp in sorted(spent.items())
    )


MARKDOWN = re.compile(r"([\\`*_{}\[\]()#|<>~])")


def escaped(value: Any) -> str:
    """Text a site or the server chose, safe inside a Markdown line: every Markdown character
    backslash-escaped, line breaks and other control characters as spaces (a statement once put a
    heading and a link into the page)."""
    text = "".join(c if c.isprintable() else " " for c in str(value))
    return MARKDOWN.sub(r"\\\1", text)


def _rounds(rounds: list[int]) -> str:
    return ", ".join(map(str, rounds)) if rounds else "none"


def render_page(passport: dict[str, Any], *, checkpoint: str = "", key_fingerprint: str = "") -> str:
    """The passport as a Markdown page, one section per site."""
    run = passport
    requested = run["record_level_dp_requested"]
    client_dp = run["client_level_dp"]
    lines = [
        "# Privacy passport",
        "",
        f"Checkpoint: `{checkpoint}`" if checkpoint else "",
        f"Signature: verified with the server key `{key_fingerprint}`" if key_fingerprint else "",
        "",
        f"- Run `{run['run_id']}` (Flower run(s) {', '.join(map(str, run['flower_runs']))}), rounds 1 to "
        f"{run['through_round']}, "
        f"strategy {run['strategy']}",
        f"- Secure aggregation (SecAgg+): {'on' if run['secure_aggregation'] else 'off'}",
        f"- k-anonymity asked by the server: {run['k_anonymity_requested']}",
        "- Record-level DP asked by the server: "
        + (
            f"epsilon {requested['epsilon']:.3g} per run, clip norm {requested['clip_norm']:.3g}, "
            f"{requested['accountant'].upper()} accountant"
            if requested["epsilon"] > 0
            else "none (a site may apply its own)"
        ),
        "- Client-level DP (server side): "
        + (
            f"noise multiplier {client_dp['noise_multiplier']:.3g}, {client_dp['clipping']} clipping at "
            f"{client_dp['clip_norm']:.3g}, epsilon {client_dp['epsilon']:.3g} at delta {client_dp['delta']:.3g}"
            if client_dp["noise_multiplier"] > 0
            else "off"
        ),
        "",
    ]
    for name, site in sorted(run["sites"].items()):
        policy = site.get("policy") or {}
        lines += [
            f"## {escaped(name)}" + (f": {escaped(site['name'])}" if site.get("name") else ""),
            "",
            f"- Updates used in rounds: {_rounds(site['rounds_joined'])}",
            f"- Rounds missed (no reply): {_rounds(site.get('rounds_missed', []))}",
            "- Updates dropped by the server: "
            + ("; ".join(f"round {d['round']}: {escaped(d['reason'])}" for d in site["updates_dropped"]) or "none"),
            "- Rounds failed or refused: "
            + ("; ".join(f"round {d['round']}: {escaped(d['reason'])}" for d in site["rounds_failed"]) or "none"),
            "- Replies that did not read: "
            + (
                "; ".join(
                    f"{d['stage']} of round {d['round']}: {escaped(d['reason'])}"
                    for d in site.get("replies_dropped", [])
                )
                or "none"
            ),
            f"- k-anonymity applied: {escaped(site['k_anonymity'] or 'not stated')}",
            "- Statement: "
            + (
                "signed by the site's enrolled key"
                if site.get("statement_verified")
                else "not verified (no identity key of this site was enrolled)"
                if site["k_anonymity"] is not None
                else "none"
            ),
            f"- Record-level DP (the site's own ledger): {_dp_line(site['record_level_dp'])}",
            f"- Site policy (sha256 {escaped(site['policy_sha256'] or 'not stated')}): "
            + (
                ", ".join(f"{escaped(k)} = {escaped(json.dumps(v))}" for k, v in sorted(policy.items())) or "not stated"
            ),
            "",
        ]
    return "\n".join(line for line in lines if line is not None) + "\n"
