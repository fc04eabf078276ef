"""A real deployment on 127.0.0.1, for the deployment tests and the round-time benchmark.

`claimpt server start` (Flower's SuperLink with TLS, SuperNode authentication, the control plane
on 127.0.0.1) and one `claimpt site join` SuperNode per site, each with its own data, key and
Flower home. Every process starts in its own process group and every group is stopped when the
context ends, also after an error: nothing is left listening.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from client.approval import SiteKeys, approve, make_site_keys
from client.prepare import prepare_site
from server.certs import CertificateSettings, write_certificates
from server.superlink import SuperLinkSettings, control_environment
from shared_model.runtime.processes import executable, flower_environment, start_group, stop_group
from simulations.synth import synthesize

CLAIMPT = str(Path(sys.executable).parent / "claimpt")
REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(
    predicate: Callable[[], bool],
    what: str,
    timeout: float,
    process: subprocess.Popen | None = None,
    log: str = "",
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what}: process exited with {process.returncode}\n{log}")
        time.sleep(0.5)
    raise TimeoutError(f"{what}: not after {timeout:.0f} s")


@dataclass
class Launcher:
    """Starts processes in their own groups and remembers every group to stop."""

    logs: Path
    groups: list[subprocess.Popen] = field(default_factory=list)
    extra_pgids: list[int] = field(default_factory=list)

    def start(self, name: str, command: list[str], env: dict[str, str]) -> subprocess.Popen:
        process = start_group(command, env=env, log_file=self.logs / f"{name}.log")
        self.groups.append(process)
        return process

    def log(self, name: str) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop_all(self) -> None:
        for process in [*reversed(self.groups), *self.extra_pgids]:
            stop_group(process, grace_seconds=30)


@contextmanager
def launched(logs: Path) -> Iterator[Launcher]:
    launcher = Launcher(logs)
    try:
        yield launcher
    finally:
        launcher.stop_all()


@dataclass
class Deployment:
    """A running SuperLink and its certificates; `join` adds a site."""

    root: Path
    certs: Path
    state: Path
    port: int
    launcher: Launcher
    runtime_ports: dict[str, int] = field(default_factory=dict)  # each site's SuperNode runtime API

    @property
    def flwr_env(self) -> dict[str, str]:
        return control_environment(SuperLinkSettings(state=self.state, insecure=True))

    def nodes(self) -> list[dict]:
        result = subprocess.run(
            [executable("flwr"), "supernode", "list", "claimpt", "--format", "json"],
            env=self.flwr_env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        try:
            return json.loads(result.stdout).get("nodes", [])
        except json.JSONDecodeError:
            return []

    def site_keys(self, name: str, *, rotate: bool = False) -> SiteKeys:
        """The site's own app-approval key: its SuperNode runs only what it approved."""
        directory = self.root / "site-keys" / name
        if (directory / "app-approval.key").exists() and not rotate:
            return SiteKeys(directory / "app-approval.key", directory / "trusted-entities.yaml")
        return make_site_keys(directory, name, rotate=rotate)

    def approvals(self, app: Path = REPO) -> list[Path]:
        """Every joined site's approval of `app` (as each site would make after its review)."""
        return [
            approve(app, self.site_keys(name).key, name, self.root / "approvals")
            for name in sorted(p.name for p in (self.root / "site-keys").iterdir())
        ]

    def join(self, name: str, key: Path, data: Path, *, extra: tuple[str, ...] = ()) -> subprocess.Popen:
        home = self.root / "homes" / name
        home.mkdir(parents=True, exist_ok=True)
        self.runtime_ports[name] = free_port()
        command = [
            CLAIMPT,
            "site",
            "join",
            "--superlink",
            f"127.0.0.1:{self.port}",
            "--ca",
            str(self.certs / "ca.crt"),
            "--key",
            str(key),
            "--trusted-entities",
            str(self.site_keys(name).trusted_entities),
            "--data",
            str(data),
            "--site-id",
            name,
            "--runtime-port",
            str(self.runtime_ports[name]),
            *extra,
        ]
        return self.launcher.start(name, command, flower_environment({"FLWR_HOME": str(home)}))

    def wait_online(self, count: int, timeout: float = 90) -> None:
        wait_for(
            lambda: sum(n["status"] == "online" for n in self.nodes()) == count, f"{count} SuperNodes online", timeout
        )

    def submit(self, run_config: str, *, timeout: float = 600) -> subprocess.CompletedProcess:
        """`claimpt server submit` this repository with every site's approval and follow the run to its end."""
        return subprocess.run(
            [
                CLAIMPT,
                "server",
                "submit",
                "--app",
                str(REPO),
                "--state",
                str(self.state),
                *[a for path in self.approvals() for a in ("--approval", str(path))],
                "--run-config",
                run_config,
            ],
            cwd=REPO,
            env=flower_environment(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def prepared_sites(root: Path, sizes: list[int], seed: int) -> tuple[list[Path], dict[str, Path]]:
    """Synthesise one raw MEDS site per size under `root/raw` and prepare each under
    `root/prepared` with its own pseudonym key; returns the raw sites and {site name: prepared site}."""
    raw = synthesize(root / "raw", sizes, seed)
    prepared = {
        path.name: prepare_site(path, root / "prepared" / path.name, root / "keys" / f"{path.name}.key").out
        for path in raw
    }
    return raw, prepared


@contextmanager
def local_deployment(root: Path, sites: dict[str, Path], *, join_options: tuple[str, ...] = ()) -> Iterator[Deployment]:
    """Certificates for `sites` (and one unregistered key), a TLS SuperLink, and every site joined
    with `join_options`; yields once all sites are online, stops every process on exit."""
    certs = write_certificates(
        root / "certs", CertificateSettings(hosts=("localhost", "127.0.0.1"), sites=(*sites, "unregistered"))
    )
    (root / "logs").mkdir(parents=True, exist_ok=True)
    with launched(root / "logs") as launcher:
        port, state = free_port(), root / "state"
        server = launcher.start(
            "server",
            [
                CLAIMPT,
                "server",
                "start",
                "--certs",
                str(certs),
                "--state",
                str(state),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--control-port",
                str(free_port()),
                *[a for s in sites for a in ("--site-key", str(certs / "supernodes" / f"{s}.pub"))],
            ],
            flower_environment(),
        )
        wait_for(
            lambda: "SuperLink ready" in launcher.log("server"), "server start", 90, server, launcher.log("server")
        )
        launcher.extra_pgids.append(int((state / "superlink.pid").read_text()))
        deployment = Deployment(root, certs, state, port, launcher)
        for site, data in sites.items():
            deployment.join(site, certs / "supernodes" / site, data, extra=join_options)
        deployment.wait_online(len(sites))
        yield deployment
