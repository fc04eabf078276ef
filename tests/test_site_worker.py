"""The site worker (client.worker) behind the deployed ClientApp (client.relay), over a real Unix
socket in this process: it answers as the in-process app does, keeps the node's state between
messages, and answers under the site's own node config whatever context a relay hands it."""

from __future__ import annotations

import socket
import stat
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from client.node_config import DATA_PATH_KEY, POLICY_KEY, SITE_ID_KEY, STATE_DIR_KEY, WORKER_KEY
from client.relay import PROTOCOL, send_frames
from client.relay import app as relay_app
from client.worker import SiteWorkerServer, socket_path_for
from tests.test_hostile_server import Server, probing_model_and_vocabulary, refused, write_policy


@pytest.fixture(scope="module")
def site(fed_sites: list[Path]) -> Path:
    return fed_sites[1]


@pytest.fixture(scope="module")
def model_and_vocabulary(site: Path):
    return probing_model_and_vocabulary(site)


@contextmanager
def running_worker(state: Path, node_config: dict, *, load: bool = True) -> Iterator[Path]:
    state.mkdir(mode=0o700, exist_ok=True)
    server = SiteWorkerServer(socket_path_for(state), {STATE_DIR_KEY: str(state), **node_config})
    if load:
        server.load()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.path
    finally:
        server.shutdown()
        server.server_close()


def through(worker: Path, site: Path, **node_config) -> Server:
    """The coordinator's side, reaching the site through the relay ClientApp and its worker."""
    return Server(site, {WORKER_KEY: str(worker), **node_config}, app=relay_app)


def test_the_worker_answers_as_the_in_process_app_and_keeps_the_node_state(
    site: Path, model_and_vocabulary, tmp_path: Path
) -> None:
    weights, config, vocabulary = model_and_vocabulary
    with running_worker(tmp_path / "state", {DATA_PATH_KEY: str(site), SITE_ID_KEY: site.name}) as worker:
        server = through(worker, site)
        relayed = server.train(weights, config, vocabulary)
        assert not relayed.has_error(), relayed.error.reason if relayed.has_error() else ""
        answers = [server.evaluate(weights, config, vocabulary) for _ in range(3)]
    in_process = Server(site).train(weights, config, vocabulary)
    for ours, theirs in zip(
        relayed.content["arrays"].to_numpy_ndarrays(), in_process.content["arrays"].to_numpy_ndarrays(), strict=True
    ):
        np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-7)
    assert relayed.content["metrics"]["num-examples"] == in_process.content["metrics"]["num-examples"]
    # one training round allows two evaluations: the count lives in the node state the relay carries
    assert [refused(a) for a in answers] == [False, False, True]


def test_the_worker_answers_under_its_own_policy_whatever_the_relayed_context_says(
    site: Path, model_and_vocabulary, tmp_path: Path
) -> None:
    weights, config, vocabulary = model_and_vocabulary
    policy = write_policy(tmp_path / "policy.toml", require_dp=True)
    own = {DATA_PATH_KEY: str(site), SITE_ID_KEY: site.name, POLICY_KEY: str(policy)}
    with running_worker(tmp_path / "state", own) as worker:
        reply = through(worker, site, **{DATA_PATH_KEY: str(site)}).train(weights, config, vocabulary)  # no policy
    assert refused(reply) and "record-level DP" in reply.error.reason


def test_the_socket_is_the_sites_alone_and_one_worker_per_state_directory(site: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    with running_worker(state, {DATA_PATH_KEY: str(site)}) as worker:
        assert stat.S_IMODE(worker.stat().st_mode) == 0o600
        assert stat.S_IMODE(state.stat().st_mode) == 0o700
        with pytest.raises(FileExistsError, match="another site worker"):
            SiteWorkerServer(worker, {DATA_PATH_KEY: str(site)})
    assert not worker.exists()
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(worker))  # what a killed worker leaves behind
    stale.close()
    with running_worker(state, {DATA_PATH_KEY: str(site)}):
        pass


def test_a_missing_worker_is_an_error_reply_without_the_sites_paths(
    site: Path, model_and_vocabulary, tmp_path: Path
) -> None:
    weights, config, vocabulary = model_and_vocabulary
    reply = through(tmp_path / "nowhere.sock", site).train(weights, config, vocabulary)
    assert reply.has_error() and "SiteWorkerUnavailable at the site" in reply.error.reason
    assert str(tmp_path) not in reply.error.reason


def test_a_socket_path_too_long_for_unix_is_refused_before_anything_starts(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="shorter --state"):
        socket_path_for(tmp_path / ("s" * 120))


def test_a_garbled_request_is_logged_by_kind_and_the_worker_keeps_serving(
    site: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def ask(*frames: bytes) -> bytes:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
            connection.connect(str(worker))
            send_frames(connection, *frames)
            connection.shutdown(socket.SHUT_WR)
            return connection.recv(1 << 16)

    with running_worker(tmp_path / "state", {DATA_PATH_KEY: str(site)}, load=False) as worker:
        with caplog.at_level("WARNING", logger="client.worker"):
            assert ask(PROTOCOL, b"\xff\xfe not a protobuf message", b"\xff\xfe") == b""  # no reply, no traceback
            assert ask(b"claimpt-relay/0") != b""  # still serving: the next caller is told the protocol differs
    assert "a malformed request (DecodeError)" in caplog.text
