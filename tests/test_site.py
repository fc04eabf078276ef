"""The site operator's commands: pseudonymisation (`site prepare`) and fine-tuning only on a
checkpoint whose hashes and server signature verify (`site finetune`)."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from typer.testing import CliRunner

from client.pseudonymise import load_or_create_key, pseudonyms
from shared_model.contract.checkpoint import save_checkpoint
from shared_model.data import read_meds
from shared_model.model.config import ClaimTransformerConfig
from shared_model.model.transformer import PretrainingModel
from shared_model.tensors.tasks import training_vocabulary
from simulations.cli.app import app

runner = CliRunner()


def raw_id_pattern(ids: np.ndarray) -> re.Pattern[bytes]:
    return re.compile(rb"(?<![0-9])(" + b"|".join(str(int(i)).encode() for i in ids) + rb")(?![0-9])")


DIGIT_RUN = re.compile(rb"[0-9]+")  # one pass per file; an alternation of every id is tried at every byte


def files_mentioning(root: Path, ids: np.ndarray) -> list[str]:
    """Every file under `root` holding a raw id: integer columns of parquet files, text elsewhere."""
    wanted, hits = set(int(i) for i in ids), []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        if path.suffix == ".parquet":
            table = pq.read_table(path)
            for name in table.column_names:
                column = table.column(name)
                if str(column.type) in ("int64", "int32") and wanted & set(column.to_numpy().tolist()):
                    hits.append(f"{path}:{name}")
        elif any(int(run) in wanted for run in DIGIT_RUN.findall(path.read_bytes())):
            hits.append(str(path))
    return hits


def test_pseudonyms_are_stable_under_one_key_and_differ_under_another(tmp_path: Path) -> None:
    ids = np.array([5, 17, 17, 100040131, 2**40], dtype=np.int64)
    key = load_or_create_key(tmp_path / "keys" / "site.key")
    assert stat.S_IMODE((tmp_path / "keys" / "site.key").stat().st_mode) == 0o600
    first, again = pseudonyms(ids, key), pseudonyms(ids, load_or_create_key(tmp_path / "keys" / "site.key"))
    np.testing.assert_array_equal(first, again)
    assert first[1] == first[2] and len(set(first.tolist())) == 4 and (first >= 0).all()
    assert not set(first.tolist()) & set(ids.tolist())
    other = pseudonyms(ids, load_or_create_key(tmp_path / "other.key"))
    assert not set(other.tolist()) & set(first.tolist())


def test_prepare_pseudonymises_everything_and_keeps_the_data(fed_sites: list[Path], tmp_path: Path) -> None:
    raw = read_meds(fed_sites[1])
    out, key = tmp_path / "prepared", tmp_path / "secrets" / "site-2.key"
    result = runner.invoke(
        app, ["-v", "site", "prepare", "--raw", str(fed_sites[1]), "--out", str(out), "--key-file", str(key)]
    )
    assert result.exit_code == 0, result.output
    assert "INFO prepared" in result.output  # the debug log is part of what is checked below
    prepared = read_meds(out)
    assert len(prepared.events) == len(raw.events) and len(prepared.splits) == len(raw.splits)
    assert prepared.splits["split"].value_counts().to_dict() == raw.splits["split"].value_counts().to_dict()
    for task, labels in raw.labels.items():
        assert prepared.labels[task]["boolean_value"].sum() == labels["boolean_value"].sum()
    # the same patient keeps the same events, split and labels under the new id
    mapping = dict(
        zip(
            raw.splits["subject_id"],
            pseudonyms(raw.splits["subject_id"].to_numpy(), load_or_create_key(key)),
            strict=True,
        )
    )
    sample = int(raw.splits["subject_id"].iloc[7])

    def history(events, subject):
        rows = events[events["subject_id"] == subject]
        return list(zip(rows["time"].astype("string").fillna("static"), rows["code"].astype(str), strict=True))

    assert history(prepared.events, mapping[sample]) == history(raw.events, sample) != []
    raw_ids = raw.splits["subject_id"].to_numpy()
    assert files_mentioning(out, raw_ids) == []
    assert not raw_id_pattern(raw_ids).search(result.output.encode())
    # the check itself finds raw ids where they are
    assert files_mentioning(fed_sites[1], raw_ids)


def test_prepare_refuses_a_key_other_users_can_read(fed_sites: list[Path], tmp_path: Path) -> None:
    key = tmp_path / "site.key"
    load_or_create_key(key)
    key.chmod(0o644)
    result = runner.invoke(
        app, ["site", "prepare", "--raw", str(fed_sites[2]), "--out", str(tmp_path / "out"), "--key-file", str(key)]
    )
    assert result.exit_code == 2 and "chmod 600" in result.output
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def signed_checkpoint(fed_sites: list[Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(checkpoint signed by the server key, the server's public key, another key's private key)."""
    root = tmp_path_factory.mktemp("signed")
    keys = {}
    for name in ("server", "other"):
        private = ed25519.Ed25519PrivateKey.generate()
        keys[name] = private
        (root / f"{name}.pub").write_bytes(
            private.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
    vocabulary = training_vocabulary([read_meds(p) for p in fed_sites])
    config = ClaimTransformerConfig(
        vocab_size=vocabulary.size, n_groups=vocabulary.n_groups, d_model=16, patient_dim=16, ffn_dim=16
    )
    save_checkpoint(
        root / "checkpoint",
        PretrainingModel(config),
        config,
        vocabulary,
        signer=keys["server"].sign,
        extra={"mode": "federated", "run_id": "run-s", "round": 1, "rounds_trained": [1]},  # the guards place it
    )
    return root / "checkpoint", root / "server.pub", root


def _copy(checkpoint: Path, target: Path) -> Path:
    import shutil

    return Path(shutil.copytree(checkpoint, target))


def _site_finetune(checkpoint: Path, public_key: Path, data: Path, out: Path):
    return runner.invoke(
        app,
        [
            "site",
            "finetune",
            "--checkpoint",
            str(checkpoint),
            "--server-public-key",
            str(public_key),
            "--data",
            str(data),
            "--task",
            "asthma",
            "--train-size",
            "100",
            "--no-guard",  # these tests are about the checkpoint's checks, not the choice of model
            "--out",
            str(out),
        ],
    )


def test_site_finetune_runs_on_a_verified_checkpoint(signed_checkpoint, fed_sites: list[Path], tmp_path: Path) -> None:
    checkpoint, public_key, _ = signed_checkpoint
    result = _site_finetune(checkpoint, public_key, fed_sites[0], tmp_path / "ft")
    assert result.exit_code == 0, result.output
    assert '"signature_verified": true' in (tmp_path / "ft" / "metrics.json").read_text()


@pytest.mark.parametrize("victim", ["weights.npz", "vocabulary.json", "config.json", "manifest.json"])
def test_site_finetune_refuses_a_flipped_byte(
    signed_checkpoint, fed_sites: list[Path], tmp_path: Path, victim: str
) -> None:
    checkpoint, public_key, _ = signed_checkpoint
    tampered = _copy(checkpoint, tmp_path / "tampered")
    data = bytearray((tampered / victim).read_bytes())
    data[len(data) // 2] ^= 0x01
    (tampered / victim).write_bytes(bytes(data))
    result = _site_finetune(tampered, public_key, fed_sites[0], tmp_path / "ft")
    assert result.exit_code == 2
    expected = "manifest.sig" if victim == "manifest.json" else victim
    assert expected in result.output and ("sha256" in result.output or "signature" in result.output)
    assert not (tmp_path / "ft").exists()


def test_site_finetune_refuses_a_checkpoint_signed_by_another_key(
    signed_checkpoint, fed_sites: list[Path], tmp_path: Path
) -> None:
    checkpoint, public_key, root = signed_checkpoint
    resigned = _copy(checkpoint, tmp_path / "resigned")
    other = ed25519.Ed25519PrivateKey.generate()
    (resigned / "manifest.sig").write_bytes(other.sign((resigned / "manifest.json").read_bytes()))
    result = _site_finetune(resigned, public_key, fed_sites[0], tmp_path / "ft")
    assert result.exit_code == 2 and "signature" in result.output and str(public_key) in result.output
    (resigned / "manifest.sig").unlink()
    result = _site_finetune(resigned, public_key, fed_sites[0], tmp_path / "ft")
    assert result.exit_code == 2 and "manifest.sig: missing" in result.output


def test_site_finetune_requires_the_server_key(signed_checkpoint, fed_sites: list[Path], tmp_path: Path) -> None:
    checkpoint, _, _ = signed_checkpoint
    result = runner.invoke(
        app,
        [
            "site",
            "finetune",
            "--checkpoint",
            str(checkpoint),
            "--data",
            str(fed_sites[0]),
            "--task",
            "asthma",
            "--out",
            str(tmp_path / "ft"),
        ],
    )
    assert result.exit_code == 2 and "--server-public-key" in result.output


@pytest.mark.parametrize("change", ["drop vocabulary.json", "path component", "symlink"])
def test_a_manifest_must_list_the_model_files_by_plain_names(signed_checkpoint, tmp_path: Path, change: str) -> None:
    import hashlib
    import json

    from shared_model.contract.checkpoint import CheckpointError, load_checkpoint

    checkpoint, _, _ = signed_checkpoint
    forged = _copy(checkpoint, tmp_path / "forged")
    manifest = json.loads((forged / "manifest.json").read_text())
    if change == "drop vocabulary.json":
        del manifest["files"]["vocabulary.json"]
        expected = "must list"
    elif change == "path component":
        outside = tmp_path / "outside.json"
        outside.write_text("{}")
        manifest["files"]["../outside.json"] = hashlib.sha256(outside.read_bytes()).hexdigest()
        expected = "not a plain name"
    else:
        (forged / "config.json").rename(tmp_path / "config.json")
        (forged / "config.json").symlink_to(tmp_path / "config.json")
        expected = "not a regular file"
    (forged / "manifest.json").write_text(json.dumps(manifest))
    load_checkpoint(checkpoint)  # the original loads
    with pytest.raises(CheckpointError, match=expected):
        load_checkpoint(forged)


def test_bad_options_stop_before_the_site_state_is_touched(fed_sites: list[Path], tmp_path: Path) -> None:
    """`site finetune --adaptation nonsense` exits 2 before the rollback guard records the
    checkpoint's run and round in the site's state."""
    private = ed25519.Ed25519PrivateKey.generate()
    (tmp_path / "server.pub").write_bytes(
        private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    vocabulary = training_vocabulary([read_meds(fed_sites[0])])
    config = ClaimTransformerConfig(
        vocab_size=vocabulary.size, n_groups=vocabulary.n_groups, d_model=16, patient_dim=16, ffn_dim=16
    )
    checkpoint = tmp_path / "checkpoint"
    save_checkpoint(checkpoint, PretrainingModel(config), config, vocabulary, signer=private.sign,
                    extra={"mode": "federated", "run_id": "run-a", "round": 3, "rounds_trained": [3]})  # fmt: skip
    args = ["site", "finetune", "--checkpoint", str(checkpoint), "--server-public-key", str(tmp_path / "server.pub"),
            "--data", str(fed_sites[0]), "--task", "asthma", "--out", str(tmp_path / "ft"),
            "--state", str(tmp_path / "state")]  # fmt: skip
    result = runner.invoke(app, [*args, "--adaptation", "nonsense"])
    assert result.exit_code == 2 and not (tmp_path / "state").exists()


def test_the_superexec_poll_interval_site_join_sets_is_one_flower_accepts(monkeypatch: pytest.MonkeyPatch) -> None:
    """`site join` shortens the SuperExec's task poll (Flower's own setting, read from the
    environment): a value Flower refuses would stop the SuperExec at start."""
    from flwr.supercore.superexec.run_superexec import _get_task_poll_interval

    from client.supernode import SUPEREXEC_POLL

    for key, value in SUPEREXEC_POLL.items():
        monkeypatch.setenv(key, value)
    assert _get_task_poll_interval() == 0.1


def test_the_short_poll_supernode_changes_only_flowers_sleeps(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """`site join` runs Flower's SuperNode through client.supernode_launcher: its 3 s idle sleep
    and 0.5 s reply polls shortened, nothing else; refused on another Flower, or on a SuperNode
    loop that does not sleep where 1.42.0's did; `--stock-supernode` runs Flower's script."""
    import time

    from flwr.supernode import start_client_internal

    from client import supernode_launcher as launcher
    from client.supernode import SuperNodeSettings, supernode_command

    monkeypatch.setattr(start_client_internal, "time", time)  # restored after the test
    monkeypatch.setattr(start_client_internal, "pull_objects", start_client_internal.pull_objects)
    with pytest.raises(launcher.UnsupportedFlower, match=r"1\.42\.0, found 1\.43\.0.*--stock-supernode"):
        launcher.install(version="1.43.0")
    moved = tmp_path / "moved_sleeps.py"
    moved.write_text("import time\n\ndef loop():\n    time.sleep(2)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import moved_sleeps

    with pytest.raises(launcher.UnsupportedFlower, match="does not sleep where"):
        launcher.install(module=moved_sleeps)
    assert moved_sleeps.time is time

    launcher.install()
    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)
    start_client_internal.time.sleep(3)
    start_client_internal.time.sleep(0.5)
    start_client_internal.time.sleep(7)
    assert slept == [launcher.IDLE_POLL_SECONDS, launcher.REPLY_POLL_SECONDS, 7]
    assert start_client_internal.time.monotonic is time.monotonic  # everything else is the time module
    retries = start_client_internal.pull_objects  # a message's objects: retried after 20 ms, not 1 s
    assert retries.keywords == {"initial_backoff": 0.02, "backoff_cap": 1.0} and not retries.args

    site = SuperNodeSettings("127.0.0.1:9092", tmp_path / "site", None, None, insecure=True)
    assert supernode_command(site)[1:3] == ["-m", "client.supernode_launcher"]
    stock = supernode_command(
        SuperNodeSettings("127.0.0.1:9092", tmp_path / "site", None, None, insecure=True, short_polls=False)
    )
    assert Path(stock[0]).name == "flower-supernode"


def test_site_join_hands_the_tasks_to_the_site_worker_unless_told_not_to(
    fed_sites: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--no-site-worker` reaches run_site as no worker (Flower's SuperExec then takes the tasks),
    the default as a worker on the SuperNode's runtime port with the site's node config."""
    import client.worker

    started: list[tuple] = []
    monkeypatch.setattr(client.worker, "run_site", lambda *args: started.append(args) or 0)
    join = ["site", "join", "--superlink", "127.0.0.1:9092", "--data", str(fed_sites[0]), "--site-id", "a",
            "--insecure", "--runtime-port", "19094"]  # fmt: skip
    for extra in ([], ["--no-site-worker"]):
        result = runner.invoke(app, [*join, "--state", str(tmp_path / f"state{len(extra)}"), *extra])
        assert result.exit_code == 0, result.output
    (_, _, worker, _, _, _), (_, _, none, superexec, _, _) = started
    assert none is None and Path(superexec(1)[0]).name == "flower-superexec"
    assert worker.runtime_address == "127.0.0.1:19094" and worker.node_config["site-id"] == "a"


def test_the_serverapp_retries_a_replys_objects_after_20_ms(monkeypatch: pytest.MonkeyPatch) -> None:
    """A reply is announced before its objects are all uploaded; Flower's deployed grid retried
    them after 1 s. Only Flower's own pull_objects is wrapped, and only its retry times change."""
    import types

    from flwr.supercore.inflatable.inflatable_utils import pull_objects
    from flwr.superlink.grid import http_grid

    from server.exchange import short_object_retries
    from shared_model.runtime.flower_pins import UnsupportedFlower, shorten_object_retries

    monkeypatch.setattr(http_grid, "pull_objects", pull_objects)
    short_object_retries()
    short_object_retries()  # once is enough: not wrapped twice
    assert http_grid.pull_objects.func is pull_objects
    assert http_grid.pull_objects.keywords == {"initial_backoff": 0.02, "backoff_cap": 1.0}
    with pytest.raises(UnsupportedFlower, match="does not call"):
        shorten_object_retries(types.ModuleType("elsewhere"))
