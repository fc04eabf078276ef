"""A real deployment on 127.0.0.1: `claimpt server start` (Flower's SuperLink with TLS, SuperNode
authentication and the control plane on 127.0.0.1), two `claimpt site join` SuperNodes with their
own pseudonymised data, keys and the consortium's app key, a federated round submitted as a signed
bundle with `claimpt server submit`, and a signed checkpoint a site verifies before fine-tuning.
Every process is started in its own process group and the whole group is stopped in teardown,
also when a test fails."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pytest

from server.advisor import load_predictor
from shared_model.checkpoint import load_checkpoint
from shared_model.data import read_meds
from shared_model.own_auroc import OwnAurocRecipe
from shared_model.passport import pseudonym, site_key
from shared_model.runtime.processes import executable, flower_environment, group_alive
from shared_model.signing import load_verifier
from simulations.local_deployment import (
    CLAIMPT,
    REPO,
    Deployment,
    free_port,
    launched,
    local_deployment,
    prepared_sites,
    wait_for,
)
from tests.test_site import files_mentioning

pytestmark = pytest.mark.deployment
SITES = ("site-1", "site-2")


@dataclass
class SiteDeployment(Deployment):
    """The running deployment, the sites' prepared data and the raw ids that must appear nowhere."""

    prepared: dict[str, Path] = field(default_factory=dict)
    raw_ids: np.ndarray = field(default_factory=lambda: np.array([]))


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SiteDeployment]:
    root = tmp_path_factory.mktemp("deployment")
    raw_sites, prepared = prepared_sites(root, [300, 300], seed=21)
    assert tuple(prepared) == SITES
    raw_ids = np.concatenate([read_meds(raw).splits["subject_id"].to_numpy() for raw in raw_sites])
    with local_deployment(root, prepared) as running:
        yield SiteDeployment(**vars(running), prepared=prepared, raw_ids=raw_ids)


def test_two_sites_pretrain_over_tls_and_the_checkpoint_is_signed(deployment: SiteDeployment) -> None:
    run_dir = deployment.root / "run"
    result = deployment.submit(
        f"num-server-rounds=1 min-available-clients=2 batch-size=32 d-model=32 ffn-dim=32 run-dir='{run_dir}'"
    )
    (deployment.root / "logs" / "flwr-run.log").write_text(result.stdout + result.stderr)
    assert result.returncode == 0, result.stdout + result.stderr
    verify = load_verifier(deployment.certs / "signing.pub")
    checkpoint = load_checkpoint(run_dir / "checkpoint", verify_signature=verify)
    assert checkpoint.manifest["round"] == 1 and checkpoint.manifest["mode"] == "federated"
    round_one = load_checkpoint(run_dir / "checkpoints" / "round-001", verify_signature=verify)
    assert round_one.manifest["run_id"] == checkpoint.manifest["run_id"]
    rounds = (run_dir / "rounds.csv").read_text().splitlines()
    for site in SITES:  # every message was answered by the site's long-lived worker
        assert "site worker: answered train" in deployment.launcher.log(site)
        assert "site worker: answered evaluate" in deployment.launcher.log(site)
    assert [line.split(",")[:3] for line in rounds[1:]] == [["1", "2", "0"]]
    passport = subprocess.run(  # what each site gave, and site-1's own ledger agrees (no DP in this run)
        [
            CLAIMPT,
            "passport",
            str(run_dir / "checkpoint"),
            "--server-public-key",
            str(deployment.certs / "signing.pub"),
            "--site-state",
            str(deployment.prepared["site-1"].with_name("site-1.site-state")),
            "--site-id",
            "site-1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert passport.returncode == 0 and "agrees with the passport" in passport.stdout, passport.stderr
    assert all(f"## {pseudonym(site_key(site))}" in passport.stdout for site in SITES)

    finetune = subprocess.run(
        [
            CLAIMPT,
            "site",
            "finetune",
            "--checkpoint",
            str(run_dir / "checkpoint"),
            "--server-public-key",
            str(deployment.certs / "signing.pub"),
            "--data",
            str(deployment.prepared["site-1"]),
            "--task",
            "asthma",
            "--train-size",
            "100",
            "--out",
            str(deployment.root / "finetune-site-1"),
        ],
        env=flower_environment(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    (deployment.root / "logs" / "finetune.log").write_text(finetune.stdout + finetune.stderr)
    assert finetune.returncode == 0, finetune.stderr
    prepared = json.loads((deployment.root / "finetune-site-1" / "metrics.json").read_text())
    assert prepared["signature_verified"]

    # the same fine-tuning on the raw extract: pseudonymisation changes the ids, nothing else
    raw = subprocess.run(
        [
            CLAIMPT,
            "site",
            "finetune",
            "--checkpoint",
            str(run_dir / "checkpoint"),
            "--server-public-key",
            str(deployment.certs / "signing.pub"),
            "--data",
            str(deployment.root / "raw" / "site-1"),
            "--task",
            "asthma",
            "--train-size",
            "100",
            "--out",
            str(deployment.root / "raw-finetune"),
        ],
        env=flower_environment(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert raw.returncode == 0, raw.stderr
    on_raw = json.loads((deployment.root / "raw-finetune" / "metrics.json").read_text())
    assert "auroc" in prepared
    assert {k: v for k, v in prepared.items() if k not in ("data", "seconds")} == {
        k: v for k, v in on_raw.items() if k not in ("data", "seconds")
    }


def test_the_advisory_round_runs_over_tls_and_advises_by_pseudonym(deployment: SiteDeployment) -> None:
    run_dir = deployment.root / "advice"
    quick = replace(
        load_predictor(),
        own_auroc=OwnAurocRecipe(cohort_size=40, epochs=1, seeds=(0,), time_encoding="days_before+age"),
    )
    predictor = deployment.root / "predictor.json"
    predictor.write_text(quick.to_json())  # the shipped recipe, over a few minutes per site, is not what is tested
    result = deployment.submit(
        f"advise-only=true min-available-clients=2 run-dir='{run_dir}' advisor-predictor='{predictor}'"
    )
    (deployment.root / "logs" / "flwr-advise.log").write_text(result.stdout + result.stderr)
    assert result.returncode == 0, result.stdout + result.stderr
    advice = json.loads((run_dir / "advice.json").read_text())
    assert set(advice["recommended"]) == {pseudonym(site_key(site)) for site in SITES}
    assert not (run_dir / "checkpoint").exists() and not (run_dir / "rounds.csv").exists()
    for site in SITES:
        assert "site worker: answered query.summary" in deployment.launcher.log(site)


def test_raw_ids_appear_in_no_output_or_log(deployment: SiteDeployment) -> None:
    searched = [
        deployment.root / name for name in ("prepared", "state", "logs", "homes", "run", "advice", "finetune-site-1")
    ]
    assert all(path.exists() for path in searched[:4])
    for path in searched:
        if path.exists():
            assert files_mentioning(path, deployment.raw_ids) == [], path
    assert files_mentioning(deployment.root / "raw", deployment.raw_ids)  # the check finds raw ids where they are


def test_an_unregistered_node_key_is_refused(deployment: SiteDeployment) -> None:
    before = {n["node-id"] for n in deployment.nodes()}
    rogue = deployment.join(
        "unregistered",
        deployment.certs / "supernodes" / "unregistered",
        deployment.prepared["site-1"],
        extra=("--max-retries", "1", "--state", str(deployment.root / "rogue-state"), "--no-site-worker"),
    )
    wait_for(lambda: rogue.poll() is not None, "unregistered SuperNode gives up", 120)
    assert rogue.returncode != 0
    assert "Failed to activate SuperNode" in deployment.launcher.log("unregistered")
    assert {n["node-id"] for n in deployment.nodes()} == before


def test_a_second_join_on_a_running_sites_state_is_refused(deployment: SiteDeployment) -> None:
    second = deployment.join("second-site-1", deployment.certs / "supernodes" / "site-1", deployment.prepared["site-1"])
    wait_for(lambda: second.poll() is not None, "a second worker on the same state directory gives up", 120)
    assert second.returncode == 2
    assert "another site worker is running" in deployment.launcher.log("second-site-1")


def test_a_supernode_without_the_ca_certificate_cannot_connect(deployment: SiteDeployment) -> None:
    command = [
        executable("flower-supernode"),
        "--superlink",
        f"127.0.0.1:{deployment.port}",
        "--auth-supernode-private-key",
        str(deployment.certs / "supernodes" / "site-1"),
        "--port",
        str(free_port()),
        "--max-retries",
        "1",
        "--node-config",
        f"data-path='{deployment.prepared['site-1']}'",
    ]
    process = deployment.launcher.start(
        "no-ca", command, flower_environment({"FLWR_HOME": str(deployment.root / "homes" / "no-ca")})
    )
    wait_for(lambda: process.poll() is not None, "SuperNode without the CA gives up", 120)
    assert process.returncode != 0
    assert "CERTIFICATE_VERIFY_FAILED" in deployment.launcher.log("no-ca")


def site_connection(deployment: SiteDeployment) -> dict[str, str]:
    """A `flwr` configuration from a site's position: the sites' port and ca.crt, nothing else."""
    home = deployment.root / "homes" / "site-operator"
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "consortium"\n\n[superlink.consortium]\naddress = "127.0.0.1:{deployment.port}"\n'
        f'root-certificates = "{deployment.certs / "ca.crt"}"\n'
    )
    return flower_environment({"FLWR_HOME": str(home)})


def test_a_site_cannot_use_the_control_plane(deployment: SiteDeployment) -> None:
    import http.client
    import ssl

    env = site_connection(deployment)
    before = {n["node-id"] for n in deployment.nodes()}
    attempts = {
        "run": [executable("flwr"), "run", str(REPO), "consortium", "--run-config", "num-server-rounds=1"],
        "register": [
            executable("flwr"),
            "supernode",
            "register",
            str(deployment.certs / "supernodes" / "unregistered.pub"),
            "consortium",
        ],
        "list": [executable("flwr"), "supernode", "list", "consortium", "--format", "json"],
    }
    for name, command in attempts.items():
        result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False)
        assert result.returncode != 0 or '"success": false' in result.stdout, (name, result.stdout, result.stderr)
    assert {n["node-id"] for n in deployment.nodes()} == before
    context = ssl.create_default_context(cafile=str(deployment.certs / "ca.crt"))
    for path in ("/v1/control/list-runs", "/v1/runtime/get-run", "/docs"):
        connection = http.client.HTTPSConnection("127.0.0.1", deployment.port, context=context, timeout=30)
        connection.request("POST" if path.startswith("/v1") else "GET", path, body=b"")
        assert connection.getresponse().status == 403, path
        connection.close()


def test_supernodes_refuse_unsigned_and_foreign_signed_bundles(deployment: SiteDeployment, tmp_path: Path) -> None:
    """The coordinator's own control plane, with a bundle no site approved: one with no signature,
    one signed by another key under the consortium key's id, one signed with the consortium's
    app-signing key (which the coordinator holds): each site runs only what it approved itself."""
    import shutil

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from server.app_signing import sign_app

    foreign = Path(
        shutil.copytree(
            REPO,
            tmp_path / "foreign-app",
            ignore=shutil.ignore_patterns(
                ".venv", ".git", "demo", "runs", "bench", "__pycache__", ".pytest_cache", "*.egg-info"
            ),
        )
    )
    with open(foreign / "client" / "app.py", "a") as handle:
        handle.write("\n# a ClientApp the consortium never reviewed\n")
    consortium_key = deployment.certs / "app-signing.key"
    other = tmp_path / "other.key"
    other.write_bytes(
        ed25519.Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    refusals = {"site-1": 0, "site-2": 0}
    # unsigned; signed by a stranger; signed by the coordinator with the consortium key, which the
    # sites, trusting only their own approval keys, do not run either
    for signed, key in (("unsigned", None), ("foreign-signed", other), ("coordinator-signed", consortium_key)):
        if key is not None:
            sign_app(foreign, key, deployment.state / "app-signatures")
        before = {site: _fab_refusals(deployment.launcher.log(site)) for site in refusals}
        result = subprocess.run(
            [
                executable("flwr"),
                "run",
                str(foreign),
                "claimpt",
                "--run-config",
                f"num-server-rounds=1 run-dir='{tmp_path / 'foreign-run'}'",
            ],
            cwd=foreign,
            env=deployment.flwr_env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if key is None:  # not submitted through `claimpt server submit`: the SuperLink starts no run
            assert result.returncode != 0 and "Successfully started run" not in result.stdout
            log = deployment.state / "superlink.log"
            wait_for(lambda log=log: "carries no signature" in log.read_text(errors="replace"), "refusal logged", 30)
            continue
        assert result.returncode == 0, result.stdout + result.stderr  # the SuperLink accepts it: the sites decide
        wait_for(
            lambda before=before: all(_fab_refusals(deployment.launcher.log(s)) > before[s] for s in refusals),
            f"both sites refuse the {signed} bundle",
            120,
        )
        run_id = result.stdout.split("Successfully started run")[1].split()[0]
        subprocess.run(
            [executable("flwr"), "stop", run_id, "claimpt"],
            env=deployment.flwr_env,
            capture_output=True,
            timeout=60,
            check=False,
        )
    assert not (tmp_path / "foreign-run" / "checkpoint").exists()


def test_a_local_process_without_the_sites_secret_cannot_take_its_task(deployment: SiteDeployment) -> None:
    """Another user on a site's host asks the SuperNode's runtime API (127.0.0.1) for its next task,
    as a SuperExec does: in Flower's subprocess isolation it would get the ClientApp's task and
    answer for the site; under process isolation with the site's secret, Flower refuses it."""
    from flwr.proto.runtime_pb2 import AcquireTaskRequest
    from flwr.supercore.interceptors import RuntimeVersionHttpInterceptor, SuperExecAuthHttpInterceptor
    from flwr.supercore.runtime import RuntimeHttpClient

    from client.supernode import SECRET_FILE

    def acquire(secret: bytes | None):
        interceptors = [RuntimeVersionHttpInterceptor(component_name="SuperExec")]
        if secret is not None:
            interceptors.append(
                SuperExecAuthHttpInterceptor(
                    master_secret=secret, protected_methods={"/flwr.proto.Runtime/AcquireTask"}
                )
            )
        client = RuntimeHttpClient.from_server_address(
            server_address=f"127.0.0.1:{deployment.runtime_ports['site-1']}",
            insecure=True,
            root_certificates=None,
            interceptors=interceptors,
        )
        try:
            return client.AcquireTask(AcquireTaskRequest(supported_task_types=["clientapp"]))
        finally:
            client.close()

    for intruder in (None, b"a guessed secret"):
        with pytest.raises(Exception, match="401 Unauthorized"):
            acquire(intruder)
    secret = (deployment.prepared["site-1"].with_name("site-1.site-state") / SECRET_FILE).read_bytes()
    assert not acquire(secret).HasField("task")  # the site's own SuperExec is answered (no task pending)


def _fab_refusals(log: str) -> int:
    return log.count("FAB verification failed") + log.count("The FAB could not be verified")


def test_teardown_stops_every_process_also_after_a_failure(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with pytest.raises(RuntimeError, match="a failing test"):
        with launched(tmp_path) as launcher:
            server = launcher.start(
                "server",
                [
                    CLAIMPT,
                    "server",
                    "start",
                    "--insecure",
                    "--state",
                    str(state),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(free_port()),
                ],
                flower_environment(),
            )
            wait_for(
                lambda: "SuperLink ready" in launcher.log("server"), "server start", 90, server, launcher.log("server")
            )
            superlink = int((state / "superlink.pid").read_text())
            launcher.extra_pgids.append(superlink)
            assert group_alive(server.pid) and group_alive(superlink)
            raise RuntimeError("a failing test")
    assert not group_alive(server.pid) and not group_alive(superlink)
    assert "WITHOUT TLS" in (tmp_path / "server.log").read_text()
