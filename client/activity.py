"""The site's activity log: every training round it ran and every evaluation it answered, in
every run, kept in its state directory beside the privacy ledger (client.ledger).

An evaluation is a query of the site's held-out patients: a coordinator that sends many slightly
different models learns something about them from the losses. Flower's node state forgets
between runs and restarts, so each new run (or a restarted SuperNode) would buy a fresh
allowance; this log does not. The policy's `max_evaluations_per_run` is counted in it per Flower
run and its `lifetime_evaluations` over all of them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from flwr.app import Context

from client.ledger import Lines, lines_of
from client.replies import SiteRefusal

ACTIVITY_FILE = "activity.jsonl"  # in the site's state directory
KINDS = ("trained", "evaluated")


@dataclass(frozen=True)
class Activity:
    run: int  # the Flower run
    round: int
    kind: str
    consortium_run: str = ""  # the checkpoints' run id
    secure: bool = False  # trained under SecAgg+


class ActivityLog:
    def __init__(self, lines: Lines) -> None:
        self.lines = lines

    def entries(self) -> list[Activity]:
        try:
            entries = [Activity(**item) for item in self.lines.read()]
        except TypeError as exc:
            raise SiteRefusal("this site's activity log is unreadable; what depends on it is stopped") from exc
        if any(e.kind not in KINDS for e in entries):
            raise SiteRefusal("this site's activity log is unreadable; what depends on it is stopped")
        return entries

    def count(self, kind: str, run: int | None = None) -> int:
        return sum(e.kind == kind and (run is None or e.run == run) for e in self.entries())

    def record(self, activity: Activity) -> None:
        self.lines.append(asdict(activity))


def activity_of(context: Context) -> ActivityLog:
    return ActivityLog(lines_of(context, ACTIVITY_FILE, "activity log"))
