"""The site worker's executor (client.executor) as a task reaches it from the SuperNode: it answers
as the in-process app does, keeps the node's state between messages, answers under the site's own
node config whatever context the task carries, and runs nothing of a bundle the site's trusted
keys did not sign. The runtime API calls around it run in tests/test_deployment.py (real
SuperNodes); here a task's inputs are handed to it directly."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Context, Message
from flwr.cli.build import build_fab_from_disk
from flwr.common.constant import ErrorCode
from flwr.supercore.fab import Fab
from flwr.supercore.primitives.asymmetric_ed25519 import create_message_to_sign

from client.app import make_client_app
from client.approval import make_site_keys
from client.executor import NOT_APPROVED, SiteExecutor
from client.node_config import DATA_PATH_KEY, POLICY_KEY, SITE_ID_KEY, STATE_DIR_KEY
from client.worker import claim_state, worker_running
from shared_model.contract.app_bundle import Approval, fab_hash, load_signing_key, read_trusted_entities, site_key_id
from shared_model.runtime.flower_pins import UnsupportedFlower
from tests.test_hostile_server import Server, probing_model_and_vocabulary, refused, write_policy

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def site(fed_sites: list[Path]) -> Path:
    return fed_sites[1]


@pytest.fixture(scope="module")
def model_and_vocabulary(site: Path):
    return probing_model_and_vocabulary(site)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory):
    """The site's trusted keys, and a bundle it approved."""
    root = tmp_path_factory.mktemp("bundles")
    app = root / "app"
    for name in ("client/app.py", "server/app.py", "server/overview/predictor.json", "shared_model/contract/wire.py"):
        (app / name).parent.mkdir(parents=True, exist_ok=True)
        (app / name).write_text("{}\n" if name.endswith(".json") else "app = None\n")
    shutil.copy(REPO / "pyproject.toml", app / "pyproject.toml")
    keys = make_site_keys(root / "keys", "site-1")
    approval = Approval.sign(app, load_signing_key(keys.key), site_key_id("site-1"))
    approved = Fab(fab_hash(app)[0], build_fab_from_disk(app), {approval.key_id: approval.verification})
    return read_trusted_entities(keys.trusted_entities), approved


class TaskApp:
    """The coordinator's messages, each handed to the executor as one task of `fab`."""

    def __init__(self, executor: SiteExecutor, fab: Fab) -> None:
        self.executor, self.fab = executor, fab

    def __call__(self, message: Message, context: Context) -> Message:
        return self.executor.answer(message, context, self.fab)


def executor_for(own: dict, trusted, app=None) -> SiteExecutor:
    return SiteExecutor("127.0.0.1:1", b"not used here", app or make_client_app(), own, trusted)


def test_the_executor_answers_as_the_in_process_app_and_keeps_the_node_state(
    site: Path, model_and_vocabulary, bundles, tmp_path: Path
) -> None:
    weights, config, vocabulary = model_and_vocabulary
    trusted, approved = bundles
    own = {DATA_PATH_KEY: str(site), SITE_ID_KEY: site.name, STATE_DIR_KEY: str(tmp_path / "state")}
    tasks = TaskApp(executor_for(own, trusted), approved)
    server = Server(site, own, app=tasks)
    taken = server.train(weights, config, vocabulary)
    assert not taken.has_error(), taken.error.reason if taken.has_error() else ""
    answers = [server.evaluate(weights, config, vocabulary) for _ in range(3)]
    in_process = Server(site).train(weights, config, vocabulary)
    for ours, theirs in zip(
        taken.content["arrays"].to_numpy_ndarrays(), in_process.content["arrays"].to_numpy_ndarrays(), strict=True
    ):
        np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-7)
    assert taken.content["metrics"]["num-examples"] == in_process.content["metrics"]["num-examples"]
    # one training round allows two evaluations: the count lives in the node state of the task's context
    assert [refused(a) for a in answers] == [False, False, True]


def test_the_executor_answers_under_its_own_policy_whatever_the_task_context_says(
    site: Path, model_and_vocabulary, bundles, tmp_path: Path
) -> None:
    weights, config, vocabulary = model_and_vocabulary
    trusted, approved = bundles
    policy = write_policy(tmp_path / "policy.toml", require_dp=True)
    own = {DATA_PATH_KEY: str(site), SITE_ID_KEY: site.name, POLICY_KEY: str(policy)}
    tasks = TaskApp(executor_for(own, trusted), approved)
    reply = Server(site, {DATA_PATH_KEY: str(site)}, app=tasks).train(weights, config, vocabulary)  # no policy
    assert refused(reply) and "record-level DP" in reply.error.reason


def test_a_bundle_the_sites_keys_did_not_sign_never_runs(
    site: Path, model_and_vocabulary, bundles, tmp_path: Path
) -> None:
    """Unsigned, signed by another key under the site's key id, or other content under the approved
    signature: an error reply that says only that, the ClientApp never called, the site's
    errors.log told which bundle."""
    weights, config, vocabulary = model_and_vocabulary
    trusted, approved = bundles
    stranger = make_site_keys(tmp_path / "stranger", "site-1")  # the same key id, another key
    state = tmp_path / "state"
    calls: list[str] = []

    def app(message: Message, context: Context) -> Message:
        calls.append(message.metadata.message_type)
        return make_client_app()(message, context)

    own = {DATA_PATH_KEY: str(site), STATE_DIR_KEY: str(state)}
    unsigned = Fab(approved.hash_str, approved.content, {})
    foreign = Fab(approved.hash_str, approved.content, {site_key_id("site-1"): _signature_over(approved, stranger.key)})
    tampered = Fab(approved.hash_str, approved.content + b"\0", dict(approved.verifications))
    for bundle in (unsigned, foreign, tampered):
        tasks = TaskApp(executor_for(own, trusted, app), bundle)
        reply = Server(site, own, app=tasks).train(weights, config, vocabulary)
        assert reply.has_error() and reply.error.code == ErrorCode.INVALID_FAB
        assert reply.error.reason == NOT_APPROVED
    assert calls == []
    assert (state / "errors.log").read_text().count(approved.hash_str) == 3
    tasks = TaskApp(executor_for(own, trusted, app), approved)
    assert not Server(site, own, app=tasks).train(weights, config, vocabulary).has_error()
    assert calls == ["train"]


def test_whatever_the_app_raises_leaves_without_the_sites_data(site: Path, model_and_vocabulary, bundles) -> None:
    weights, config, vocabulary = model_and_vocabulary
    trusted, approved = bundles

    def app(message: Message, context: Context) -> Message:
        raise ValueError(f"row 7 of {site}: subject 90210 born 1999-02-03")

    reply = Server(site, app=TaskApp(executor_for({}, trusted, app), approved)).train(weights, config, vocabulary)
    assert reply.has_error() and reply.error.reason.startswith("ValueError at the site")
    assert not any(leak in reply.error.reason for leak in (str(site), "90210", "1999"))


def _signature_over(fab: Fab, key: Path) -> str:
    """A signature in Approval's format, by `key`."""
    digest = hashlib.sha256(fab.content).digest()
    signature = load_signing_key(key).sign(create_message_to_sign(digest, 1_700_000_000))
    encoded = base64.urlsafe_b64encode(signature).decode().rstrip("=")
    return json.dumps({"signature": encoded, "signed_at": 1_700_000_000})


def test_one_site_process_per_state_directory(tmp_path: Path) -> None:
    assert not worker_running(tmp_path)
    lock = claim_state(tmp_path)
    try:
        assert worker_running(tmp_path)
        with pytest.raises(FileExistsError, match="another site worker"):
            claim_state(tmp_path)
    finally:
        os.close(lock)
    assert not worker_running(tmp_path)  # a process that ended, however, leaves no claim behind
    os.close(claim_state(tmp_path))


def test_the_executor_refuses_a_flower_it_was_not_written_for(monkeypatch: pytest.MonkeyPatch, bundles) -> None:
    """It speaks Flower 1.42.0's runtime API with Flower's own task functions: on another Flower
    the site is told to join with Flower's SuperExec instead."""
    import flwr.supercore.version

    monkeypatch.setattr(flwr.supercore.version, "package_version", "1.43.0")
    with pytest.raises(UnsupportedFlower, match=r"1\.42\.0, found 1\.43\.0.*--no-site-worker"):
        executor_for({}, bundles[0], app=lambda message, context: message)
