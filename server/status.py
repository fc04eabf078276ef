"""`claimpt server status`: the consortium at a glance from the server's state directory, without
Flower's home directory: every enrolled site by name (online or not), every run submitted with
`claimpt server submit` (Flower's status, the rounds done, the last round's report) and the
outcome of those that ended."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from server.outcome import OUTCOME_FILE
from server.registry import load_registry
from server.superlink import SuperLinkSettings, flwr_json

RUNS_FILE = "runs.jsonl"  # in the server's state directory: one line per submitted run


def _flwr_json(settings: SuperLinkSettings, *args: str) -> dict[str, Any]:
    reply, _ = flwr_json(settings, *args)
    return reply or {}


def run_status(settings: SuperLinkSettings, run_id: int) -> str:
    """Flower's status of the run (finished:completed, finished:failed, ...; "" if unknown)."""
    runs = _flwr_json(settings, "ls", "--run-id", str(run_id)).get("runs", [])
    return next((str(r.get("status", "")) for r in runs if str(r.get("run-id")) == str(run_id)), "")


def record_submission(settings: SuperLinkSettings, run_id: int, run_dir: Path) -> None:
    with open(settings.state / RUNS_FILE, "a") as handle:
        handle.write(json.dumps({"run": run_id, "run_dir": str(run_dir.resolve())}) + "\n")


def submissions(settings: SuperLinkSettings) -> list[dict[str, Any]]:
    path = settings.state / RUNS_FILE
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def _last_round(run_dir: Path) -> str:
    path = run_dir / "rounds.csv"
    if not path.exists():
        return "no round yet"
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        return "no round yet"
    row = rows[-1]
    return (
        f"round {row['round']}: {row['clients']} update(s) used, {row['failed']} failed, {row['dropped']} dropped, "
        f"eval loss {float(row['eval_loss']):.4f}"
    )


def server_status(settings: SuperLinkSettings, *, last: int = 5) -> str:
    if not (settings.flwr_home / "config.toml").is_file():
        raise FileNotFoundError(f"{settings.state}: not a state directory of `claimpt server start`")
    nodes = {
        str(n.get("node-id")): n.get("status", "?") for n in _flwr_json(settings, "supernode", "list").get("nodes", [])
    }
    report = [f"server state: {settings.state}", "sites:"]
    registry = load_registry(settings.registry)
    for name, site in sorted(registry.sites.items()):
        status = nodes.get(str(site.node_id), "not connected yet") if site.node_id else "no SuperNode key registered"
        identity = "identity key enrolled" if site.identity else "no identity key enrolled"
        report.append(f"  {name}: node {site.node_id or '-'}, {status}; {identity}")
    if not registry.sites:
        report.append("  none enrolled")
    flower = {str(r.get("run-id")): r for r in _flwr_json(settings, "ls").get("runs", [])}
    report.append("runs (claimpt server submit):")
    for entry in submissions(settings)[-last:]:
        run, run_dir = str(entry["run"]), Path(entry["run_dir"])
        status = flower.get(run, {}).get("status", "unknown")
        report.append(f"  run {run}: {status}, {run_dir}")
        report.append(f"    {_last_round(run_dir)}")
        outcome = run_dir / OUTCOME_FILE
        if outcome.exists():
            report += [f"    {line}" for line in json.loads(outcome.read_text())["summary"].splitlines()]
    if not submissions(settings):
        report.append("  none submitted")
    return "\n".join(report)
