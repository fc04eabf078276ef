"""What a federated run did, for its operator: the rounds asked and trained, each site's rounds
used, dropped, failed and missed (with why, by name where the site is enrolled), and the
checkpoint with how to verify it. Written as RUN/outcome.json and logged at the run's end;
`claimpt server submit` prints it and exits non-zero when the run trained fewer rounds than asked.

A round in which no site's update was used keeps the previous model: it is a failed round, and a
run with one is incomplete, whatever Flower says of the run.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from shared_model.contract.passport import Incident, Passport

OUTCOME_FILE = "outcome.json"


class RunIncomplete(RuntimeError):
    """The run trained fewer rounds than asked (its checkpoints are written and say which)."""


@dataclass(frozen=True)
class SiteOutcome:
    name: str
    used: list[int]
    dropped: list[Incident]
    failed: list[Incident]
    missed: list[int]


@dataclass(frozen=True)
class RunOutcome:
    rounds_asked: int
    rounds_trained: list[int]
    sites: list[SiteOutcome]
    checkpoint: str
    signed: bool
    stopped: str = ""  # why the run ended before its last round ("": it did not)

    @property
    def complete(self) -> bool:
        return len(self.rounds_trained) == self.rounds_asked

    @property
    def failed_rounds(self) -> list[int]:
        return [r for r in range(1, self.rounds_asked + 1) if r not in self.rounds_trained]

    def headline(self) -> str:
        if self.complete:
            return f"the run trained all {self.rounds_asked} round(s)"
        failed = ", ".join(map(str, self.failed_rounds))
        return (
            f"the run trained {len(self.rounds_trained)} of {self.rounds_asked} round(s); not round(s) {failed}"
            + (f" ({self.stopped})" if self.stopped else ": no site's update was used (each site's reason below)")
            + "; the checkpoint's manifest lists the rounds trained"
        )

    def lines(self) -> list[str]:
        def reasons(entries: list[Incident]) -> str:
            return "; ".join(f"round {e.round}: {e.reason}" for e in entries)

        lines = [("run complete: " if self.complete else "RUN INCOMPLETE: ") + self.headline()]
        for site in self.sites:
            parts = [f"used in {_rounds(site.used)}"]
            parts += [f"dropped ({reasons(site.dropped)})"] if site.dropped else []
            parts += [f"failed or refused ({reasons(site.failed)})"] if site.failed else []
            parts += [f"missed {_rounds(site.missed)}"] if site.missed else []
            lines.append(f"  {site.name}: " + ", ".join(parts))
        lines.append(f"checkpoint: {self.checkpoint}" + ("" if self.signed else " (UNSIGNED)"))
        if self.signed:
            lines.append(f"verify it with: claimpt passport {self.checkpoint} --server-public-key signing.pub")
        return lines

    def to_json(self) -> dict[str, Any]:
        summary = "\n".join(self.lines())
        return {**asdict(self), "complete": self.complete, "failed_rounds": self.failed_rounds, "summary": summary}


def _rounds(rounds: list[int]) -> str:
    return ("rounds " + ", ".join(map(str, rounds))) if rounds else "no round"


def run_outcome(
    run_dir: Path,
    rounds_asked: int,
    rounds_trained: list[int],
    passport: Passport,
    *,
    signed: bool,
    stopped: str = "",
) -> RunOutcome:
    sites = [
        SiteOutcome(
            name=f"{site.name} ({pseudonym})" if site.name else pseudonym,
            used=list(site.rounds_joined),
            dropped=list(site.updates_dropped),
            failed=list(site.rounds_failed),
            missed=list(site.rounds_missed),
        )
        for pseudonym, site in sorted(passport.sites.items())
    ]
    checkpoint = str(Path(run_dir) / "checkpoint")
    return RunOutcome(rounds_asked, sorted(rounds_trained), sites, checkpoint, signed, stopped)
