"""`claimpt server submit`: sign the app bundle, start the run on this server's SuperLink, follow
its log to the end and say what it did (server.outcome), with an exit code that says it too.

Flower marks a run `finished:completed` when its ServerApp returns; a run whose rounds trained
nothing is not a success to an operator, so the exit code comes from the run's own outcome file
as well as from Flower's status.
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from pathlib import Path

from flwr.common.config import parse_config_args

from server.app_signing import sign_app
from server.outcome import OUTCOME_FILE
from server.status import record_submission, run_status
from server.superlink import CONNECTION, SuperLinkSettings, control_environment
from shared_model.runtime.noise import ANSI, is_noise
from shared_model.runtime.processes import executable

log = logging.getLogger(__name__)
STARTED = re.compile(r"Successfully started run (\d+)")


def run_dir_of(run_config: str) -> Path:
    """The run-dir the overrides set: absolute, as the ServerApp runs in the SuperLink's directory
    and this command must find the run's outcome where the ServerApp wrote it."""
    value = parse_config_args([run_config]).get("run-dir") if run_config else None
    if not isinstance(value, str) or not value:
        raise ValueError("--run-config must set run-dir (where the server writes the run's checkpoints)")
    if not Path(value).is_absolute():
        raise ValueError(f"--run-config's run-dir must be an absolute path on the server, got {value!r}")
    return Path(value)


def submit_run(
    app: Path, settings: SuperLinkSettings, run_config: str, approvals: tuple[Path, ...], app_key: Path | None
) -> int:
    """Start the run and follow it; returns the exit code: 0 only when Flower completed the run
    and every round asked trained."""
    if not (settings.flwr_home / "config.toml").is_file():
        raise FileNotFoundError(
            f"{settings.flwr_home / 'config.toml'}: missing (start the SuperLink with "
            "`claimpt server start --state` first)"
        )
    run_dir = run_dir_of(run_config)
    fab = sign_app(app, app_key, settings.signatures, approvals=approvals)
    log.info("the app bundle %s carries %d signature(s)", fab[:16], (app_key is not None) + len(approvals))
    command = [executable("flwr"), "run", str(app.resolve()), CONNECTION, "--stream", "--run-config", run_config]
    process = subprocess.Popen(
        command, env=control_environment(settings), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    run_id = None
    assert process.stdout is not None
    for line in process.stdout:
        line = ANSI.sub("", line)
        if run_id is None and (started := STARTED.search(line)):
            run_id = int(started.group(1))
            record_submission(settings, run_id, run_dir)
        if line.strip() not in ("", "INFO :") and not is_noise(line):
            sys.stdout.write(line)
            sys.stdout.flush()
    process.wait()
    if run_id is None:
        print(f"error: the SuperLink started no run (flwr run exited with {process.returncode})", file=sys.stderr)
        return process.returncode or 1
    status = run_status(settings, run_id)
    print(f"\nrun {run_id}: {status or 'status unknown'} (claimpt server status --state {settings.state})")
    outcome_path = run_dir / OUTCOME_FILE
    if not outcome_path.is_file():
        print(f"error: the run wrote no {outcome_path} (see the log above)", file=sys.stderr)
        return 1
    outcome = json.loads(outcome_path.read_text())
    print(outcome["summary"])
    return 0 if status == "finished:completed" and outcome["complete"] else 1
