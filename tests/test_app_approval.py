"""Code that runs at a site is code the site approved: checked with Flower's own bundle verification
(`_verify_fab`, what a SuperNode runs before it starts any ClientApp) on the files `claimpt site
keys`, `claimpt site approve` and `claimpt server submit` write. The real SuperNodes' refusal of a
bundle the coordinator alone signed is in test_deployment.py."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from flwr.cli.build import build_fab_from_disk
from flwr.supercore.fab import Fab
from flwr.supernode.cli.flower_supernode import _try_obtain_trusted_entities
from flwr.supernode.start_client_internal import _verify_fab

from client.approval import approve, make_site_keys
from server.app_signing import sign_app
from server.certs import CertificateSettings, write_certificates
from shared_model.contract.app_bundle import fab_hash
from shared_model.contract.checkpoint import CheckpointError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def app(tmp_path: Path) -> Path:
    """A small Flower app (this project's pyproject and a file for each of its bundle patterns)."""
    directory = tmp_path / "app"
    for name in ("client/app.py", "server/app.py", "server/overview/predictor.json", "shared_model/contract/wire.py"):
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_text("{}\n" if name.endswith(".json") else "app = None\n")
    shutil.copy(REPO / "pyproject.toml", directory / "pyproject.toml")
    return directory


def runs_at(site_keys, app: Path, signatures: Path) -> bool:
    """Whether a SuperNode trusting `site_keys.trusted_entities` runs the bundle of `app`."""
    hex_hash, _ = fab_hash(app)
    fab = Fab(hex_hash, build_fab_from_disk(app), json.loads((signatures / f"{hex_hash}.json").read_text()))
    return _verify_fab(fab, _try_obtain_trusted_entities(site_keys.trusted_entities))


def test_a_site_runs_only_what_it_approved_and_a_rotation_withdraws_its_approvals(app: Path, tmp_path: Path) -> None:
    certs = write_certificates(tmp_path / "certs", CertificateSettings(hosts=("localhost",), sites=("site-1",)))
    site_1, site_2 = make_site_keys(tmp_path / "site-1", "site-1"), make_site_keys(tmp_path / "site-2", "site-2")
    signatures = tmp_path / "signatures"

    sign_app(app, certs / "app-signing.key", signatures)  # the coordinator alone, with the consortium key
    assert not runs_at(site_1, app, signatures) and not runs_at(site_2, app, signatures)

    approved_before = approve(app, site_1.key, "site-1", tmp_path / "approvals")
    sign_app(app, certs / "app-signing.key", signatures, approvals=(approved_before,))
    assert runs_at(site_1, app, signatures) and not runs_at(site_2, app, signatures)  # each site: its own approval

    rotated = make_site_keys(tmp_path / "site-1", "site-1", rotate=True)
    assert not runs_at(rotated, app, signatures)  # approved before the rotation: no longer runs
    sign_app(app, None, signatures, approvals=(approve(app, rotated.key, "site-1", tmp_path / "again"),))
    assert runs_at(rotated, app, signatures)

    (app / "client" / "app.py").write_text("app = 'changed after the review'\n")
    with pytest.raises(CheckpointError, match="reviewed other code"):
        sign_app(app, None, signatures, approvals=(approved_before,))
    with pytest.raises(FileExistsError):
        make_site_keys(tmp_path / "site-2", "site-2")  # a key is replaced only on purpose


def test_the_bundle_holds_the_applications_own_files_only(tmp_path: Path) -> None:
    """What `claimpt server submit` sends every site (and each site approves) is built from the
    application's files, not from whatever lies in the checkout it runs from."""
    import io
    import subprocess
    import zipfile

    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    app = tmp_path / "checkout"
    for name in tracked.split():
        (app / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / name, app / name)
    strays = ["pki/trusted-entities.yaml", "site-policy.toml", "sites/site-1/metadata/dataset.json", "notes.md"]
    for name in strays:  # what an operator may leave in the checkout
        (app / name).parent.mkdir(parents=True, exist_ok=True)
        (app / name).write_text("a: 1\n")
    names = set(zipfile.ZipFile(io.BytesIO(build_fab_from_disk(app))).namelist())
    own = {
        name
        for name in tracked.split()
        if name.split("/")[0] in ("server", "client", "shared_model")
        and (name.endswith(".py") or name == "server/overview/predictor.json")
    }
    assert names - {"pyproject.toml", ".info/CONTENT"} == own
    assert not names & set(strays)
