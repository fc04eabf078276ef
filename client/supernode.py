"""`claimpt site join`: the `flower-supernode` command line for one site, and who takes its tasks
(docs/architecture.md §4).

The SuperNode only ever opens outbound HTTPS to the SuperLink; the ClientApp reads the site's data
from the node config's `data-path` and sends back weights, scalar metrics and k-anonymised code
counts only.

The SuperNode runs in Flower's process isolation: its runtime API on 127.0.0.1 hands a task only
to a caller that proves it holds a secret from the site's state directory (0600). The site worker
(client.worker) holds it, or, with --no-site-worker, Flower's SuperExec. (In Flower's default
subprocess isolation the SuperNode starts its own SuperExec and drops the secret: any local user
could take the ClientApp's task and answer for the site.)
"""

from __future__ import annotations

import json
import os
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path

from client.node_config import DATA_PATH_KEY, IDENTITY_KEY, POLICY_KEY, SITE_ID_KEY, STATE_DIR_KEY
from client.policy import load_policy
from client.worker import SiteWorker
from shared_model.data.paths import require_owner_only
from shared_model.runtime.processes import executable


@dataclass(frozen=True)
class SuperNodeSettings:
    superlink: str  # HOST:PORT of the SuperLink
    data: Path  # the prepared (pseudonymised) MEDS directory
    key: Path | None  # the SuperNode's private authentication key (OpenSSH); None only when insecure
    ca: Path | None  # the consortium CA certificate; None only when insecure
    site_id: str = ""
    runtime_port: int = 9094  # local port the SuperNode offers its ClientApps (bind 127.0.0.1)
    insecure: bool = False
    max_retries: int | None = None
    policy: Path | None = None  # the site's privacy policy file (client.policy); None: the default policy
    trusted_entities: Path | None = None  # app-signing keys whose bundles this site runs; None only when insecure
    state: Path | None = None  # the site's state directory (privacy ledger, errors.log); default <data>.site-state
    identity_key: Path | None = None  # the site's identity key (claimpt site keys): signs its privacy statements
    site_worker: bool = True  # take the tasks in one long-lived process (client.worker); False: Flower's default
    short_polls: bool = True  # run the SuperNode through client.supernode_launcher; False: Flower's script as shipped

    @property
    def state_dir(self) -> Path:
        return (self.state or self.data.with_name(self.data.name + ".site-state")).resolve()

    def __post_init__(self) -> None:
        host, _, port = self.superlink.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"--superlink must be HOST:PORT, got {self.superlink!r}")
        if not self.insecure and (self.key is None or self.ca is None or self.trusted_entities is None):
            raise ValueError("--ca, --key and --trusted-entities are required (or --insecure, for a local test only)")


def check_files(settings: SuperNodeSettings) -> None:
    """Fail before starting anything: missing files, a private key other users can read, a policy
    file that does not parse; then make the state directory (0700)."""
    for path in (settings.ca, settings.key, settings.policy, settings.trusted_entities, settings.identity_key):
        if path is not None and not path.is_file():
            raise FileNotFoundError(f"{path}: no such file")
    for private in (settings.key, settings.identity_key):
        if private is not None:
            require_owner_only(private, "a private key")
    if settings.policy is not None:
        load_policy(settings.policy)
    settings.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    settings.state_dir.chmod(0o700)


SECRET_FILE = "superexec.secret"  # in the state directory: the SuperNode's and the SuperExec's shared secret
# Flower's SuperExec asks the SuperNode for a new task once a second (FLWR_SUPEREXEC_TASK_POLL_INTERVAL,
# 0.01-60 s): every message waited half a second on average before its ClientApp started. A tenth of
# a second is ten small requests a second over 127.0.0.1.
SUPEREXEC_POLL = {"FLWR_SUPEREXEC_TASK_POLL_INTERVAL": "0.1"}


def superexec_secret(settings: SuperNodeSettings) -> Path:
    """The runtime API's secret (32 random bytes, 0600), made on first use."""
    path = settings.state_dir / SECRET_FILE
    if not path.exists():
        settings.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(descriptor, secrets.token_bytes(32))
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
    require_owner_only(path, "the SuperExec secret")
    return path


def superexec_command(settings: SuperNodeSettings, supernode_pid: int) -> list[str]:
    """Flower's SuperExec, which takes the SuperNode's tasks with --no-site-worker (it starts one
    ClientApp process per message)."""
    return [
        executable("flower-superexec"),
        "--runtime-api-address",
        f"127.0.0.1:{settings.runtime_port}",
        "--insecure",  # the runtime API is plain HTTP on 127.0.0.1; the secret authenticates the SuperExec
        "--superexec-auth-secret-file",
        str(superexec_secret(settings)),
        "--parent-pid",
        str(supernode_pid),
    ]


def node_config(settings: SuperNodeSettings) -> dict[str, str]:
    """What the ClientApp learns about the site, set by the site alone."""
    config = {
        DATA_PATH_KEY: str(settings.data.resolve()),
        SITE_ID_KEY: settings.site_id or settings.data.name,
        STATE_DIR_KEY: str(settings.state_dir),
    }
    if settings.policy is not None:
        config[POLICY_KEY] = str(settings.policy.resolve())
    if settings.identity_key is not None:
        config[IDENTITY_KEY] = str(settings.identity_key.resolve())
    return config


def worker_for(settings: SuperNodeSettings) -> SiteWorker | None:
    """The site worker that takes the SuperNode's tasks; None: Flower's SuperExec does."""
    if not settings.site_worker:
        return None
    return SiteWorker(
        runtime_address=f"127.0.0.1:{settings.runtime_port}",
        secret=superexec_secret(settings),
        node_config=node_config(settings),
        trusted_entities=settings.trusted_entities,
    )


def supernode_command(settings: SuperNodeSettings) -> list[str]:
    if settings.short_polls:
        program = [sys.executable, "-m", "client.supernode_launcher"]
    else:
        program = [executable("flower-supernode")]
    command = [
        *program,
        "--superlink",
        settings.superlink,
        "--node-config",
        " ".join(f"{key}={json.dumps(value)}" for key, value in node_config(settings).items()),
        "--host",
        "127.0.0.1",
        "--port",
        str(settings.runtime_port),
        "--isolation",
        "process",
        "--superexec-auth-secret-file",
        str(superexec_secret(settings)),
    ]
    if settings.insecure:
        command.append("--insecure")
    if settings.ca is not None:
        command += ["--root-certificates", str(settings.ca)]
    if settings.key is not None:
        command += ["--auth-supernode-private-key", str(settings.key)]
    if settings.trusted_entities is not None:
        command += ["--trusted-entities", str(settings.trusted_entities)]
    if settings.max_retries is not None:
        command += ["--max-retries", str(settings.max_retries)]
    return command
