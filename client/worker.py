"""The site worker: one long-lived process per site that answers the ClientApp's messages.

`claimpt site join` becomes this process. It listens on a Unix socket in the site's state
directory, starts `flower-supernode` as its child (whose node config names the socket), imports
TensorFlow and reads the site's data once, and then answers every message the per-message
ClientApp process (client.relay) passes on: with client.app, in this process, so the site's data,
its tensorised samples and the compiled model stay loaded from one round to the next.

The worker answers under its own node config (data, policy, state directory), whatever node
config a relayed context carries; the socket is 0600 inside the 0700 state directory and the
worker also checks the connecting process's user id. It stops when the SuperNode exits (and exits
with its code), or on SIGTERM / SIGINT, which it passes on to the SuperNode.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import socketserver
import struct
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from google.protobuf.message import DecodeError

from client.node_config import DATA_PATH_KEY
from client.relay import PROTOCOL, SiteWorkerUnavailable, decode, encode, receive_frame, send_frames

log = logging.getLogger(__name__)
SOCKET_NAME = "worker.sock"
MAX_SOCKET_PATH = 100  # AF_UNIX paths are limited to 107 bytes on Linux, 103 on macOS


def socket_path_for(state_dir: Path) -> Path:
    path = state_dir / SOCKET_NAME
    if len(str(path).encode()) > MAX_SOCKET_PATH:
        raise ValueError(
            f"the site worker's socket {path} is longer than {MAX_SOCKET_PATH} bytes: choose a shorter --state"
        )
    return path


def _peer_uid(connection: socket.socket) -> int | None:
    if not hasattr(socket, "SO_PEERCRED"):
        return None
    _, uid, _ = struct.unpack("3i", connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    return uid


class _Handler(socketserver.BaseRequestHandler):
    server: SiteWorkerServer

    def handle(self) -> None:
        connection: socket.socket = self.request
        uid = _peer_uid(connection)
        if uid is not None and uid != os.getuid():
            log.warning("site worker: refused a connection from user id %d", uid)
            return
        try:
            if receive_frame(connection) != PROTOCOL:
                send_frames(connection, b"refused", b"the ClientApp and the site worker speak different protocols")
                return
            message, context = decode(receive_frame(connection), receive_frame(connection))
        except (SiteWorkerUnavailable, DecodeError, ValueError, OSError) as exc:
            log.warning("site worker: a malformed request (%s)", type(exc).__name__)
            return
        context.node_config = dict(self.server.node_config)  # the site's own, whatever was relayed
        started = time.perf_counter()
        reply = self.server.app(message, context)  # client.app's mods turn any error into a safe reply
        send_frames(connection, b"ok", *encode(reply, context))
        log.info(
            "site worker: answered %s of run %d in %.1f s%s",
            message.metadata.message_type,
            context.run_id,
            time.perf_counter() - started,
            " (error reply)" if reply.has_error() else "",
        )


class SiteWorkerServer(socketserver.UnixStreamServer):
    """One request at a time: the model and TensorFlow's state are shared by every message."""

    def __init__(self, path: Path, node_config: dict[str, Any]) -> None:
        self.node_config = node_config
        self.app = None
        _claim(path)
        previous = os.umask(0o177)
        try:
            super().__init__(str(path), _Handler)
        finally:
            os.umask(previous)
        path.chmod(0o600)
        self.path = path

    def load(self) -> None:
        """Import TensorFlow and the ClientApp, and read the site's data, before the first message."""
        from client.app import make_client_app
        from client.local import load_site

        self.app = make_client_app()
        load_site(str(self.node_config[DATA_PATH_KEY]))

    def server_close(self) -> None:
        super().server_close()
        self.path.unlink(missing_ok=True)


def _claim(path: Path) -> None:
    """Remove a socket left by a worker that died; refuse if a live worker answers on it."""
    if not path.exists():
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink()
            return
    raise FileExistsError(f"another site worker is running on {path.parent}: stop it first, or choose another --state")


def run_site(
    path: Path | None,
    node_config: dict[str, Any],
    supernode: list[str],
    superexec: Callable[[int], list[str]],
    env: dict[str, str],
    log_file: Path,
) -> int:
    """Run the SuperNode from `supernode` and the SuperExec `superexec(its pid)` gives, their
    output relayed to the site log (client.site_log), and, with a socket `path`, serve the site
    worker on it meanwhile; the SuperNode's exit code."""
    from client.site_log import relay_output

    server = SiteWorkerServer(path, node_config) if path is not None else None
    piped = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True, "errors": "replace"}
    child = subprocess.Popen(supernode, env=env, **piped)
    executor = subprocess.Popen(superexec(child.pid), env=env, **piped)
    relays = [relay_output(child.stdout, "supernode", log_file), relay_output(executor.stdout, "superexec", log_file)]

    def stop(signum: int, _frame: object) -> None:
        log.info("site: signal %d, stopping the SuperNode", signum)
        child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    serving = threading.Thread(target=server.serve_forever, name="site-worker", daemon=True) if server else None
    try:
        if server is not None and serving is not None:
            server.load()
            serving.start()
            log.info("site worker ready on %s", path)
        return child.wait()
    finally:
        for process in (child, executor):
            if process.poll() is None:
                process.terminate()
                process.wait()
        if serving is not None and serving.is_alive():
            server.shutdown()
        if server is not None:
            server.server_close()
        for relay in relays:
            relay.join(timeout=5)
