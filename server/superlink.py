"""`claimpt server start`: the consortium's SuperLink with TLS and SuperNode authentication
(docs/architecture.md §4 and §8), the sites' public keys registered, and a signing key for every checkpoint.

Flower 1.42 serves its Fleet (SuperNodes), Control (`flwr` CLI) and Runtime (ServerApp) APIs from
one app. It runs here through `server.superlink_gate`: the port sites reach (`port`) answers the
Fleet API only; the Control and Runtime APIs answer on 127.0.0.1:`control_port`, on the server
host alone. Nothing connects from the server to a site.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from server.registry import REGISTRY_ENV, REGISTRY_FILE, EnrolledSite, EnrolmentError, load_registry, read_public_key
from shared_model.runtime.processes import (
    executable,
    flower_environment,
    require_free_ports,
    start_group,
    wait_for_port,
)

log = logging.getLogger(__name__)
CONNECTION = "claimpt"
SIGNING_KEY_ENV = "CLAIMPT_SIGNING_KEY"
CERT_FILES = ("ca.crt", "superlink.crt", "superlink.key", "signing.key")


@dataclass(frozen=True)
class SuperLinkSettings:
    """Where the SuperLink listens, its credentials (`claimpt certs` output) and its state."""

    state: Path  # receives superlink.db, superlink.log, superlink.pid, app-signatures/ and flwr-home/
    certs: Path | None = None
    host: str = "0.0.0.0"
    port: int = 9092  # the sites' port: Fleet API only
    control_port: int = 9093  # Control and Runtime APIs, on 127.0.0.1 only
    insecure: bool = False

    def __post_init__(self) -> None:
        if self.certs is None and not self.insecure:
            raise ValueError("--certs is required (or --insecure, for a local test only)")
        if self.port == self.control_port:
            raise ValueError("--port (the sites') and --control-port (local control plane) must differ")

    @property
    def flwr_home(self) -> Path:
        return self.state / "flwr-home"

    @property
    def address(self) -> str:
        """Where local `flwr` commands reach the Control API."""
        return f"127.0.0.1:{self.control_port}"

    @property
    def signatures(self) -> Path:
        return self.state / "app-signatures"

    @property
    def registry(self) -> Path:
        """The consortium's enrolment (server.registry): sites by name, their keys and node ids."""
        return self.state / REGISTRY_FILE


def check_certificates(certs: Path) -> None:
    missing = [name for name in CERT_FILES if not (certs / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{certs}: missing {', '.join(missing)} (create them with `claimpt certs`)")


def superlink_command(settings: SuperLinkSettings) -> list[str]:
    command = [
        sys.executable,
        "-m",
        "server.superlink_gate",
        "--public-host",
        settings.host,
        "--public-port",
        str(settings.port),
        "--signatures",
        str(settings.signatures.resolve()),
        "--",
        "--host",
        "127.0.0.1",
        "--port",
        str(settings.control_port),
        "--database",
        str(settings.state / "superlink.db"),
        # The app's dependencies are claimpt's own, installed here: never `uv sync` at run time.
        "--disable-runtime-dependency-installation",
    ]
    if settings.insecure:
        return [*command, "--insecure"]
    assert settings.certs is not None
    return [
        *command,
        "--ssl-ca-certfile",
        str(settings.certs / "ca.crt"),
        "--ssl-certfile",
        str(settings.certs / "superlink.crt"),
        "--ssl-keyfile",
        str(settings.certs / "superlink.key"),
        "--enable-supernode-auth",
    ]


def write_connection(settings: SuperLinkSettings) -> Path:
    """The Flower configuration `flwr run . claimpt` reads (with FLWR_HOME=<state>/flwr-home)."""
    settings.flwr_home.mkdir(parents=True, exist_ok=True)
    lines = [
        "[superlink]",
        f'default = "{CONNECTION}"',
        "",
        f"[superlink.{CONNECTION}]",
        f"address = {json.dumps(settings.address)}",
    ]
    if settings.insecure:
        lines.append("insecure = true")
    else:
        assert settings.certs is not None
        lines.append(f"root-certificates = {json.dumps(str((settings.certs / 'ca.crt').resolve()))}")
    path = settings.flwr_home / "config.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def control_environment(settings: SuperLinkSettings) -> dict[str, str]:
    """The environment of the `flwr` commands that reach this server's control plane."""
    return flower_environment({"FLWR_HOME": str(settings.flwr_home.resolve())})


def server_environment(settings: SuperLinkSettings) -> dict[str, str]:
    """The SuperLink's environment, and so every ServerApp's: the control plane's, the registry
    and the checkpoint signing key."""
    env = {**control_environment(settings), REGISTRY_ENV: str(settings.registry.resolve())}
    if settings.certs is not None and not settings.insecure:
        env[SIGNING_KEY_ENV] = str((settings.certs / "signing.key").resolve())
    return env


def start_superlink(settings: SuperLinkSettings, *, timeout: float = 60.0) -> subprocess.Popen:
    """Start the SuperLink in its own process group and wait until it listens."""
    if settings.certs is not None and not settings.insecure:
        check_certificates(settings.certs)  # before anything is written
    require_free_ports(
        {"--port": (settings.host, settings.port), "--control-port": ("127.0.0.1", settings.control_port)}
    )
    settings.state.mkdir(parents=True, exist_ok=True, mode=0o700)
    if settings.insecure:
        log.warning(
            "starting the SuperLink WITHOUT TLS or SuperNode authentication (--insecure): "
            "anyone who can reach port %d can join and read the model; use only for local tests",
            settings.port,
        )
    write_connection(settings)
    process = start_group(
        superlink_command(settings),
        env=server_environment(settings),
        log_file=settings.state / "superlink.log",
        plain=True,
    )
    # the process to stop (SIGTERM): `claimpt server start`, which stops the SuperLink's whole group
    (settings.state / "superlink.pid").write_text(f"{os.getpid()}\n")
    public = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    wait_for_port(public, settings.port, process=process, timeout=timeout)
    wait_for_port("127.0.0.1", settings.control_port, process=process, timeout=timeout)
    log.info("SuperLink listening on %s:%d (log: %s)", settings.host, settings.port, settings.state / "superlink.log")
    return process


def flwr_json(settings: SuperLinkSettings, *args: str) -> tuple[dict | None, str]:
    """`flwr ARGS claimpt --format json` on this server: its JSON reply (None if it gave none) and
    its whole output, for the error message."""
    result = subprocess.run(
        [executable("flwr"), *args, CONNECTION, "--format", "json"],
        env=control_environment(settings),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    try:
        return json.loads(result.stdout), result.stdout + result.stderr
    except json.JSONDecodeError:
        return None, result.stdout + result.stderr


def register_supernode(settings: SuperLinkSettings, public_key: Path) -> str:
    """Register a site's public key; returns its node id ("" if the key was registered before)."""
    reply, output = flwr_json(settings, "supernode", "register", str(public_key))
    if reply is None:
        raise RuntimeError(f"flwr supernode register {public_key}: {output}")
    if reply.get("success"):
        return str(reply["node-id"])
    if "already in use" in str(reply.get("error-message", "")):
        return ""
    raise RuntimeError(f"registering {public_key} failed: {reply.get('error-message')}")


def enrol_nodes(settings: SuperLinkSettings, keys: dict[str, Path]) -> dict[str, int]:
    """Register each site's SuperNode key with the SuperLink and record its name and node id in
    the registry; returns {site name: node id}. A key or name that belongs to another site is
    refused before anything is registered."""
    registry = load_registry(settings.registry)
    texts = {name: read_public_key(path) for name, path in keys.items()}
    checked = registry
    for name, text in texts.items():  # a key of another site, or one key under two names: refused here
        checked = checked.with_site(EnrolledSite(name, node_key=text))
    for name, path in keys.items():
        known = registry.sites.get(name)
        node_id = register_supernode(settings, path)
        if not node_id:  # registered before: its node id is the one this registry recorded
            if known is None or known.node_key != texts[name] or not known.node_id:
                raise EnrolmentError(
                    f"{path} is registered with the SuperLink but not enrolled as {name!r} in {settings.registry} "
                    "(register keys with claimpt server start only)"
                )
            node_id = str(known.node_id)
        current = known or EnrolledSite(name)
        registry = registry.with_site(EnrolledSite(name, texts[name], int(node_id), current.identity))
        registry.save(settings.registry)
    return {name: registry.sites[name].node_id for name in keys}
