"""The privacy passport: per site, what it gave in a federated run (docs/architecture.md §4).

Every federated checkpoint's signed manifest carries one under the key `passport`. The server
builds it (server.passport) from what it saw (which round used which site's update, which it
dropped and why, which replies failed) and from what each site stated about itself
(client.statement: k, policy, the record-level DP its own ledger spent). Sites appear only by
pseudonym: `site-` and 8 hex digits derived from the site's id, which the site can recompute.

This module is the format both sides share: the passport as typed records (`Passport`, one
`SiteRecord` per site) with one JSON form, the pseudonym, reading a verified passport from a
checkpoint (strictly: a coordinator signs what it likes) and writing it as a page for an ethics
board's file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared_model.contract.checkpoint import CheckpointError, load_checkpoint

FORMAT = 1
MANIFEST_KEY = "passport"


class PassportError(CheckpointError):
    """The checkpoint has no passport, or not one this version reads."""


@dataclass(frozen=True)
class Incident:
    """A round in which a site's reply was not used: an update dropped, a round failed or refused,
    or a reply that did not read (`stage`: vocabulary or evaluation)."""

    round: int
    reason: str
    stage: str | None = None


@dataclass(frozen=True)
class SpentDP:
    """The record-level DP a site's own ledger spent in one Flower run, as the site stated it."""

    rounds: int
    epsilon: float
    delta: float
    noise_multiplier: float = 0.0
    accountant: str = "rdp"


@dataclass
class SiteRecord:
    """What one site gave: filled round by round by the server (server.passport), the statement's
    fields from what the site said of itself (`k_anonymity` None: it stated nothing)."""

    name: str | None = None  # the enrolled name, where the consortium binds nodes to sites
    k_anonymity: int | None = None
    policy: dict[str, Any] | None = None
    policy_sha256: str | None = None
    statement_verified: bool = False
    rounds_joined: list[int] = field(default_factory=list)
    rounds_missed: list[int] = field(default_factory=list)  # no reply, no error
    updates_dropped: list[Incident] = field(default_factory=list)
    rounds_failed: list[Incident] = field(default_factory=list)
    replies_dropped: list[Incident] = field(default_factory=list)
    record_level_dp: dict[str, SpentDP] = field(default_factory=dict)  # Flower run id -> spent in it

    def rounds_sent(self) -> set[int]:
        """The rounds whose update reached the server, used or dropped."""
        return set(self.rounds_joined) | {d.round for d in self.updates_dropped}


@dataclass(frozen=True)
class RequestedDP:
    """The record-level DP the run config asked of every site (a site may apply more)."""

    epsilon: float
    delta: float
    clip_norm: float
    accountant: str


@dataclass(frozen=True)
class ClientLevelDP:
    """The server-side DP of the aggregate (noise multiplier 0: off), and its epsilon so far."""

    noise_multiplier: float
    clipping: str
    clip_norm: float
    delta: float
    accountant: str
    epsilon: float


@dataclass(frozen=True)
class Passport:
    """A federated run's privacy passport through `through_round`. Its JSON form (`to_dict`) is
    what the signed manifest carries; `from_dict` reads one back, refusing any key, type or value
    this version does not know: a careless or hostile coordinator signs what it likes."""

    run_id: str
    flower_runs: list[int]
    through_round: int
    strategy: str
    secure_aggregation: bool
    k_anonymity_requested: int
    record_level_dp_requested: RequestedDP
    client_level_dp: ClientLevelDP
    sites: dict[str, SiteRecord]
    format: int = FORMAT

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> Passport:
        passport = _parsed(cls, data, "passport")
        if passport.format != FORMAT:
            raise PassportError(f"passport format {passport.format!r}, this version reads {FORMAT}")
        return passport


def _parsed(kind: Any, value: Any, where: str) -> Any:
    """`value` (from JSON) as `kind`: a record of this module, a list or table of them, or a
    plain value; strict (a bool is not a number, a number is finite and not negative) and naming
    the key."""
    origin, arguments = typing.get_origin(kind), typing.get_args(kind)
    if dataclasses.is_dataclass(kind):
        if not isinstance(value, dict):
            raise PassportError(f"{where}: expected a table, found {type(value).__name__}")
        fields = {f.name: f for f in dataclasses.fields(kind)}
        unknown = sorted(map(str, set(value) - set(fields)))
        if unknown:
            raise PassportError(f"{where}: unknown key(s) {', '.join(unknown)}")
        missing = [
            name
            for name, f in fields.items()
            if name not in value and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        ]
        if missing:
            raise PassportError(f"{where}: missing key(s) {', '.join(missing)}")
        hints = typing.get_type_hints(kind)
        return kind(**{name: _parsed(hints[name], v, f"{where}.{name}") for name, v in value.items()})
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in arguments:
            return None
        (kind,) = [a for a in arguments if a is not type(None)]
        return _parsed(kind, value, where)
    if origin is list:
        if not isinstance(value, list):
            raise PassportError(f"{where}: expected a list, found {type(value).__name__}")
        return [_parsed(arguments[0], v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise PassportError(f"{where}: expected a table, found {type(value).__name__}")
        return {k: _parsed(arguments[1], v, f"{where}.{k}") for k, v in value.items()}
    if kind is Any:
        return value
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    valid = isinstance(value, kind) and (kind is bool or not isinstance(value, bool))
    if not valid or (kind is float and not math.isfinite(value)):
        raise PassportError(f"{where}: expected {kind.__name__}, found {value!r:.40}")
    if kind in (int, float) and value < 0:  # rounds, run ids, k, epsilons, deltas, norms: none is negative
        raise PassportError(f"{where}: expected a number >= 0, found {value!r}")
    return value


def site_key(site_id: str) -> int:
    """A stable number for a site id: the site's key in replies, its seed offset and its pseudonym."""
    return int(hashlib.sha256(site_id.encode()).hexdigest()[:8], 16) % (2**31 - 1)


def pseudonym(key: int) -> str:
    return f"site-{key:08x}"


def read_passport(checkpoint_dir: str | Path, verify_signature) -> Passport:
    """The passport of a checkpoint whose signature and every file's sha256 verify
    (shared_model.contract.checkpoint.CheckpointError otherwise), read strictly (PassportError)."""
    manifest = load_checkpoint(checkpoint_dir, verify_signature=verify_signature).manifest
    if not isinstance(manifest.get(MANIFEST_KEY), dict):
        raise PassportError(f"{checkpoint_dir}: the checkpoint carries no privacy passport (not a federated run?)")
    try:
        passport = Passport.from_dict(manifest[MANIFEST_KEY])
    except PassportError as exc:
        raise PassportError(f"{checkpoint_dir}: {exc}") from exc
    if passport.through_round != manifest.get("round") or passport.run_id != manifest.get("run_id"):
        raise PassportError(f"{checkpoint_dir}: the passport covers another run or round than the checkpoint")
    return passport


def _dp_line(by_run: dict[str, SpentDP]) -> str:
    spent = {run: dp for run, dp in by_run.items() if dp.rounds}
    if not spent:
        return "off"
    return "on: " + "; ".join(
        f"Flower run {escaped(run)}: epsilon {dp.epsilon:.3g} at delta {dp.delta:.3g} over {dp.rounds} round(s), "
        f"noise multiplier {dp.noise_multiplier:.3g}, {escaped(dp.accountant.upper())} accountant"
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


def _incidents(incidents: list[Incident]) -> str:
    return (
        "; ".join(
            (f"{escaped(d.stage)} of round {d.round}" if d.stage else f"round {d.round}") + f": {escaped(d.reason)}"
            for d in incidents
        )
        or "none"
    )


def render_page(passport: Passport, *, checkpoint: str = "", key_fingerprint: str = "") -> str:
    """The passport as a Markdown page, one section per site."""
    run, requested, client_dp = passport, passport.record_level_dp_requested, passport.client_level_dp
    lines = [
        "# Privacy passport",
        "",
        f"Checkpoint: `{checkpoint}`" if checkpoint else "",
        f"Signature: verified with the server key `{key_fingerprint}`" if key_fingerprint else "",
        "",
        f"- Run `{escaped(run.run_id)}` (Flower run(s) {', '.join(map(str, run.flower_runs))}), rounds 1 to "
        f"{run.through_round}, strategy {escaped(run.strategy)}",
        f"- Secure aggregation (SecAgg+): {'on' if run.secure_aggregation else 'off'}",
        f"- k-anonymity asked by the server: {run.k_anonymity_requested}",
        "- Record-level DP asked by the server: "
        + (
            f"epsilon {requested.epsilon:.3g} per run, clip norm {requested.clip_norm:.3g}, "
            f"{escaped(requested.accountant.upper())} accountant"
            if requested.epsilon > 0
            else "none (a site may apply its own)"
        ),
        "- Client-level DP (server side): "
        + (
            f"noise multiplier {client_dp.noise_multiplier:.3g}, {escaped(client_dp.clipping)} clipping at "
            f"{client_dp.clip_norm:.3g}, epsilon {client_dp.epsilon:.3g} at delta {client_dp.delta:.3g}"
            if client_dp.noise_multiplier > 0
            else "off"
        ),
        "",
    ]
    for name, site in sorted(run.sites.items()):
        lines += [
            f"## {escaped(name)}" + (f": {escaped(site.name)}" if site.name else ""),
            "",
            f"- Updates used in rounds: {_rounds(site.rounds_joined)}",
            f"- Rounds missed (no reply): {_rounds(site.rounds_missed)}",
            f"- Updates dropped by the server: {_incidents(site.updates_dropped)}",
            f"- Rounds failed or refused: {_incidents(site.rounds_failed)}",
            f"- Replies that did not read: {_incidents(site.replies_dropped)}",
            f"- k-anonymity applied: {escaped(site.k_anonymity or 'not stated')}",
            "- Statement: "
            + (
                "signed by the site's enrolled key"
                if site.statement_verified
                else "not verified (no identity key of this site was enrolled)"
                if site.k_anonymity is not None
                else "none"
            ),
            f"- Record-level DP (the site's own ledger): {_dp_line(site.record_level_dp)}",
            f"- Site policy (sha256 {escaped(site.policy_sha256 or 'not stated')}): "
            + (
                ", ".join(f"{escaped(k)} = {escaped(json.dumps(v))}" for k, v in sorted((site.policy or {}).items()))
                or "not stated"
            ),
            "",
        ]
    return "\n".join(lines) + "\n"
