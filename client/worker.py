"""The site worker: `claimpt site join`'s own long-lived process.

It starts `flower-supernode` as its child, imports TensorFlow and reads the site's data once, and
then takes the SuperNode's tasks itself (client.executor), answering each with client.app in this
process: the site's data, its tensorised samples and the compiled model stay loaded from one round
to the next, and no process starts per message. With `--no-site-worker` it starts Flower's
SuperExec beside the SuperNode instead, which starts a fresh `flwr-clientapp` for every message.

One site process per state directory: it holds a lock on STATE/site.lock while it runs (the
privacy ledger and the node's state must not be shared by two SuperNodes). It stops when the
SuperNode exits (and exits with its code), or on SIGTERM / SIGINT, which it passes on to the
SuperNode.
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from client.executor import SiteExecutor
from client.node_config import DATA_PATH_KEY

log = logging.getLogger(__name__)
LOCK_FILE = "site.lock"


def claim_state(state_dir: Path) -> int:
    """Lock the state directory for this process (the lock goes with the process, however it
    ends); refuse if another site process holds it."""
    descriptor = os.open(Path(state_dir) / LOCK_FILE, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        raise FileExistsError(
            f"another site worker is running on {state_dir}: stop it first, or choose another --state"
        ) from None
    return descriptor


def worker_running(state_dir: Path) -> bool:
    """Whether a site process holds the state directory's lock."""
    path = Path(state_dir) / LOCK_FILE
    if not path.exists():
        return False
    descriptor = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(descriptor)
    return False


@dataclass(frozen=True)
class SiteWorker:
    """What the worker needs to take the SuperNode's tasks."""

    runtime_address: str  # the SuperNode's runtime API, 127.0.0.1:PORT
    secret: Path  # the SuperNode's SuperExec secret (client.supernode.superexec_secret)
    node_config: dict[str, Any]  # the site's own: the worker answers under it, whatever a task carries
    trusted_entities: Path | None  # the keys whose bundles the site runs; None only when insecure

    def executor(self) -> SiteExecutor:
        """Import TensorFlow and the ClientApp, and read the site's data, before the first message."""
        from client.app import make_client_app
        from client.local import load_site
        from shared_model.contract.app_bundle import read_trusted_entities

        trusted = None if self.trusted_entities is None else read_trusted_entities(self.trusted_entities)
        app = make_client_app()
        load_site(str(self.node_config[DATA_PATH_KEY]))
        return SiteExecutor(self.runtime_address, self.secret.read_bytes(), app, self.node_config, trusted)


def run_site(
    state_dir: Path,
    supernode: list[str],
    worker: SiteWorker | None,
    superexec: Callable[[int], list[str]],
    env: dict[str, str],
    log_file: Path,
) -> int:
    """Run the SuperNode from `supernode`, its output relayed to the site log (client.site_log),
    and take its tasks with `worker` (or, without one, with the SuperExec `superexec(its pid)`
    gives); the SuperNode's exit code."""
    from client.site_log import relay_output

    lock = claim_state(state_dir)
    piped = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True, "errors": "replace"}
    child = subprocess.Popen(supernode, env=env, **piped)
    processes = [child]
    relays = [relay_output(child.stdout, "supernode", log_file)]
    if worker is None:
        processes.append(subprocess.Popen(superexec(child.pid), env=env, **piped))
        relays.append(relay_output(processes[-1].stdout, "superexec", log_file))

    def stop_supernode(signum: int, _frame: object) -> None:
        log.info("site: signal %d, stopping the SuperNode", signum)
        child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop_supernode)
    signal.signal(signal.SIGINT, stop_supernode)
    stop = threading.Event()
    serving: threading.Thread | None = None
    try:
        if worker is not None:
            executor = worker.executor()
            serving = threading.Thread(target=executor.serve, args=(stop,), name="site-executor", daemon=True)
            serving.start()
            log.info("site worker ready: taking the SuperNode's tasks at %s", worker.runtime_address)
        return child.wait()
    finally:
        stop.set()
        for process in processes:
            if process.poll() is None:
                process.terminate()
                process.wait()
        if serving is not None:
            serving.join(timeout=5)
        for relay in relays:
            relay.join(timeout=5)
        os.close(lock)
