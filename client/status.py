"""`claimpt site status`: what a site's state directory says, for its operator and its security
officer, without Flower's home directory or a running SuperNode: whether the site worker is up,
the privacy ledger (rounds, the lifetime epsilon spent), what it trained and evaluated per run,
and its last refusals and errors."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from client.activity import ACTIVITY_FILE, ActivityLog
from client.ledger import LEDGER_FILE, FileLedger, FileLines
from client.site_log import LOG_FILE
from client.worker import worker_running

ERRORS_FILE = "errors.log"


def _tail(path: Path, lines: int) -> list[str]:
    return path.read_text(errors="replace").splitlines()[-lines:] if path.exists() else []


def site_status(state_dir: Path, *, lines: int = 5) -> str:
    """The status report (plain text)."""
    if not state_dir.is_dir():
        raise FileNotFoundError(f"{state_dir}: no such site state directory (claimpt site join --state)")
    report = [f"site state: {state_dir}", f"site worker: {'running' if worker_running(state_dir) else 'not running'}"]
    ledger = FileLedger(state_dir / LEDGER_FILE)
    entries = ledger.entries()
    if entries:
        delta = max(e.delta for e in entries)
        report.append(
            f"privacy ledger: {len(entries)} private round(s) in {len({e.run for e in entries})} run(s), "
            f"lifetime epsilon {ledger.epsilon(delta):.3f} at delta {delta:.2g}"
        )
    else:
        report.append("privacy ledger: no private round")
    activity = ActivityLog(FileLines(state_dir / ACTIVITY_FILE, "activity log")).entries()
    by_run = Counter((a.run, a.consortium_run, a.kind) for a in activity)
    runs = sorted({(a.run, a.consortium_run) for a in activity})
    report.append(f"messages answered: {len(activity)} in {len(runs)} Flower run(s)")
    for run, consortium in runs[-lines:]:
        rounds = sorted(a.round for a in activity if a.run == run and a.kind == "trained")
        report.append(
            f"  Flower run {run} (consortium run {consortium or '?'}): trained rounds "
            f"{', '.join(map(str, rounds)) or 'none'}; {by_run[(run, consortium, 'evaluated')]} evaluation(s)"
        )
    refusals = [line for line in _tail(state_dir / ERRORS_FILE, 1000) if " refused " in line or "reference" in line]
    report.append(f"last refusals and errors ({ERRORS_FILE}):")
    report += [f"  {line}" for line in refusals[-lines:]] or ["  none"]
    report.append(f"last log lines ({LOG_FILE}):")
    report += [f"  {line}" for line in _tail(state_dir / LOG_FILE, lines)] or ["  none"]
    return "\n".join(report)
