"""`claimpt site join`: the `flower-supernode` command line for one site (DESIGN 4).

The SuperNode only ever opens outbound HTTPS to the SuperLink; the ClientApp it spawns reads the
site's data from the node config's `data-path` and sends back weights, scalar metrics and
k-anonymised code counts only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from shared_model.data.paths import require_owner_only
from shared_model.flower_processes import executable


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
    max_epsilon: float = 0.0  # this site's own record-level DP budget; > 0: it trains only with DP-SGD

    def __post_init__(self) -> None:
        host, _, port = self.superlink.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"--superlink must be HOST:PORT, got {self.superlink!r}")
        if not self.insecure and (self.key is None or self.ca is None):
            raise ValueError("--ca and --key are required (or --insecure, for a local test only)")


def check_files(settings: SuperNodeSettings) -> None:
    """Fail before starting anything: missing files, or a private key other users can read."""
    for path in (settings.ca, settings.key):
        if path is not None and not path.is_file():
            raise FileNotFoundError(f"{path}: no such file")
    if settings.key is not None:
        require_owner_only(settings.key, "a private key")


def supernode_command(settings: SuperNodeSettings) -> list[str]:
    site_id = settings.site_id or settings.data.name
    node_config = f"data-path={json.dumps(str(settings.data.resolve()))} site-id={json.dumps(site_id)}"
    if settings.max_epsilon > 0:
        node_config += f" max-epsilon={settings.max_epsilon!r}"
    command = [executable("flower-supernode"), "--superlink", settings.superlink, "--node-config", node_config,
               "--host", "127.0.0.1", "--port", str(settings.runtime_port)]
    if settings.insecure:
        command.append("--insecure")
    if settings.ca is not None:
        command += ["--root-certificates", str(settings.ca)]
    if settings.key is not None:
        command += ["--auth-supernode-private-key", str(settings.key)]
    if settings.max_retries is not None:
        command += ["--max-retries", str(settings.max_retries)]
    return command
