"""Starting and stopping Flower's own executables (SuperLink, SuperNode, `flwr`).

Shared by the server and site command lines (which may not import each other): both must run
Flower from claimpt's environment and must be able to stop everything a Flower process spawned.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from shared_model.runtime.noise import ANSI

log = logging.getLogger(__name__)


def executable(name: str) -> str:
    """A Flower executable from this interpreter's environment (where claimpt is installed)."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


def flower_environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Flower spawns `flower-superexec` and `flwr-clientapp` by name: put this environment's
    `bin/` first on PATH so they run with the same packages as claimpt."""
    env = {**os.environ, **(extra or {})}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


ANSI_BYTES = re.compile(ANSI.pattern.encode())


def start_group(
    command: list[str], *, env: dict[str, str], log_file: Path | None = None, plain: bool = False
) -> subprocess.Popen:
    """Start `command` as the leader of a new process group, so that `stop_group` also reaches the
    `flower-superexec` and app processes it spawns (they outlive a plain SIGTERM to the parent).
    `plain`: its output reaches `log_file` through this process, colour codes removed (Flower
    colours its log lines whatever the output is)."""
    if plain and log_file is not None:
        process = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
        )
        threading.Thread(target=_copy_plain, args=(process.stdout, log_file), daemon=True).start()
        return process
    output = open(log_file, "ab") if log_file is not None else None
    try:
        return subprocess.Popen(
            command, env=env, stdout=output, stderr=subprocess.STDOUT if output else None, start_new_session=True
        )
    finally:
        if output is not None:
            output.close()


def _copy_plain(stream, log_file: Path) -> None:
    with open(log_file, "ab", buffering=0) as sink:
        for line in stream:
            sink.write(ANSI_BYTES.sub(b"", line))


def stop_group(process: subprocess.Popen | int, *, grace_seconds: float = 15.0) -> None:
    """SIGTERM the whole group (a Popen started by `start_group`, or a process group id), then
    SIGKILL whatever is left after `grace_seconds`; return once the group is gone."""
    pgid = process.pid if isinstance(process, subprocess.Popen) else process
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + grace_seconds
        while time.monotonic() < deadline and group_alive(pgid):
            if isinstance(process, subprocess.Popen):
                process.poll()  # reap our own child, or it stays a zombie member of the group
            time.sleep(0.2)
        if not group_alive(pgid):
            break
    if isinstance(process, subprocess.Popen):
        process.poll()


def group_alive(pgid: int) -> bool:
    """Whether any process of group `pgid` still exists (zombies count until reaped)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def port_in_use(host: str, port: int) -> bool:
    """Whether `host:port` cannot be bound now (something listens there, or holds it)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False


def require_free_ports(ports: dict[str, tuple[str, int]]) -> None:
    """Refuse to start anything when one of the ports (by the option that sets it) is taken."""
    for option, (host, port) in ports.items():
        if port_in_use(host, port):
            raise PortInUse(
                f"port {port} on {host} is already in use (another SuperNode or SuperLink on this host?): "
                f"choose another with {option}"
            )


class PortInUse(OSError):
    """A port this command must listen on is taken; the message names the port and its option."""


def wait_for_port(host: str, port: int, *, process: subprocess.Popen, timeout: float = 60.0) -> None:
    """Return once `host:port` accepts connections; raise if the process exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{Path(process.args[0]).name} exited with code {process.returncode} before listening")
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout:.0f} s")
