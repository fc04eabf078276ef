"""A real deployment on 127.0.0.1, set up and run by the commands of docs/deployment.md "## Steps"
as written (tests/documented_deployment.py): certificates, two hospitals' prepared data, keys,
approvals and policy (the documented one), enrolment, a TLS SuperLink with SuperNode
authentication and the control plane on 127.0.0.1, two `claimpt site join` SuperNodes, a signed
run, fine-tuning and the passport. The attacks that need real processes then run against the
same consortium. Every process is started in its own process group and the whole group is
stopped in teardown, also when a test fails."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pytest

from client.approval import make_site_keys
from server.overview.predictor import load_predictor
from shared_model.contract.checkpoint import load_checkpoint
from shared_model.contract.passport import pseudonym, site_key
from shared_model.contract.signing import load_verifier
from shared_model.contract.site_summary import OwnAurocRecipe
from shared_model.data import read_meds
from shared_model.runtime.processes import executable, flower_environment, group_alive
from simulations.federation.local_deployment import CLAIMPT, REPO, Deployment, Launcher, free_port, launched, wait_for
from simulations.synth import synthesize
from tests.documented_deployment import (
    FIRST_SITE,
    LONG_RUNNING,
    Block,
    documented_steps,
    readme_commands,
    site_policy,
    substitute,
)
from tests.test_site import files_mentioning

pytestmark = pytest.mark.deployment
SITES = ("hospital-a", "hospital-b")
ROUNDS_DOCUMENTED = 2  # num-server-rounds in the guide's `server submit`


@dataclass
class SiteDeployment(Deployment):
    """The running deployment, the guide's remaining steps, the sites' prepared data and the raw
    ids that must appear nowhere."""

    guide: GuideRunner | None = None
    remaining: list[Block] = field(default_factory=list)
    prepared: dict[str, Path] = field(default_factory=dict)
    raw_ids: np.ndarray = field(default_factory=lambda: np.array([]))

    def state_of(self, site: str) -> Path:
        return self.prepared[site].with_name(self.prepared[site].name + ".site-state")


@dataclass
class GuideRunner:
    """Runs the guide's blocks from `root` (the coordinator's and the sites' working directory on
    this one host), with the one-host substitutions."""

    root: Path
    launcher: Launcher
    ports: dict[str, int]
    runtime_ports: dict[str, int]
    outputs: list[tuple[str, str]] = field(default_factory=list)  # (command as run, its output)

    def replacements(self, site: str | None) -> dict[str, str]:
        common = {
            "superlink.example.org": "127.0.0.1",
            "/var/lib/claimpt": str(self.root / "server-state"),
            "claimpt-release/": f"{REPO}/",
            "9092": str(self.ports["sites"]),
            "9093": str(self.ports["control"]),
        }
        if site is None:
            return common
        return {
            **common,
            "/data/meds-extract": str(self.root / site / "raw"),
            "/data/claimpt": str(self.root / site / "data"),
            "/secure/claimpt": str(self.root / "site-keys" / site),
            "9094": str(self.runtime_ports[site]),
            FIRST_SITE: site,
        }

    def run_block(self, block: Block) -> None:
        for site in SITES if block.role == "site" else (None,):
            for command in block.commands:
                self.run(substitute(command, self.replacements(site)), site or "coordinator")

    def run(self, command: str, who: str) -> str:
        if command.startswith(LONG_RUNNING):
            name = "server" if command.startswith(LONG_RUNNING[0]) else who
            if name != "server":  # the site's policy file, as the guide's step 3 has the site write it
                policy = self.root / "site-keys" / who / "site-policy.toml"
                policy.write_text(site_policy())
                policy.chmod(0o600)
            process = self.launcher.start(
                name, ["bash", "-c", f"cd {shlex.quote(str(self.root))} && exec {command}"], flower_environment()
            )
            ready = "SuperLink ready" if name == "server" else "site worker ready"
            wait_for(lambda: ready in self.launcher.log(name), f"{name}: {ready}", 180, process, "")
            return ""
        result = subprocess.run(
            ["bash", "-c", command],
            cwd=self.root,
            env=flower_environment(),
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        output = result.stdout + result.stderr
        self.outputs.append((command, output))
        with open(self.root / "logs" / "guide.log", "a") as log:
            log.write(f"$ {command}\n{output}\n")
        assert result.returncode == 0, f"{command}\n{output}"
        return output


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SiteDeployment]:
    root = tmp_path_factory.mktemp("deployment")
    (root / "logs").mkdir()
    for site, raw in zip(SITES, synthesize(root / "synth", [300, 300], seed=21), strict=True):
        (root / site).mkdir()
        shutil.move(raw, root / site / "raw")
    raw_ids = np.concatenate([read_meds(root / site / "raw").splits["subject_id"].to_numpy() for site in SITES])
    steps = documented_steps()
    joined = next(i for i, b in enumerate(steps) if any(c.startswith("claimpt site join") for c in b.commands))
    with launched(root / "logs") as launcher:
        ports = {"sites": free_port(), "control": free_port()}
        guide = GuideRunner(root, launcher, ports, {site: free_port() for site in SITES})
        for block in steps[: joined + 1]:  # up to the sites joining
            guide.run_block(block)
        launcher.extra_pgids.append(int((root / "server-state" / "superlink.pid").read_text()))
        status = substitute("claimpt server status --state /var/lib/claimpt", guide.replacements(None))
        wait_for(lambda: guide.run(status, "coordinator").count(", online;") == len(SITES), "sites online", 120)
        yield SiteDeployment(
            root=root,
            certs=root / "pki",
            state=root / "server-state",
            port=ports["sites"],
            launcher=launcher,
            runtime_ports=guide.runtime_ports,
            guide=guide,
            remaining=steps[joined + 1 :],
            prepared={site: root / site / "data" / "site" for site in SITES},
            raw_ids=raw_ids,
        )


def test_the_readme_shows_only_commands_the_guide_runs() -> None:
    documented = {command for block in documented_steps() for command in block.commands}
    assert readme_commands() and set(readme_commands()) <= documented, set(readme_commands()) - documented


def test_the_deployment_guide_runs_as_written(deployment: SiteDeployment) -> None:
    """The guide's remaining steps: a run submitted and followed, each site fine-tunes on the
    signed checkpoint and checks the passport against its own ledger; the documented policy in
    force at both hospitals, named as the coordinator enrolled them."""
    for block in deployment.remaining:
        deployment.guide.run_block(block)
    run_dir = deployment.state / "runs" / "2026-11"
    outputs = dict(deployment.guide.outputs)
    submitted = next(out for command, out in outputs.items() if command.startswith("claimpt server submit"))
    assert f"run complete: the run trained all {ROUNDS_DOCUMENTED} round(s)" in submitted, submitted
    assert all(f"{site} (site-" in submitted for site in SITES) and "verify it with: claimpt passport" in submitted
    checkpoint = load_checkpoint(
        run_dir / "checkpoint", verify_signature=load_verifier(deployment.certs / "signing.pub")
    )
    assert checkpoint.manifest["rounds_trained"] == list(range(1, ROUNDS_DOCUMENTED + 1))
    passport = checkpoint.manifest["passport"]["sites"]
    assert sorted(s.get("name") for s in passport.values()) == list(SITES)
    for site in passport.values():  # the documented policy, applied and stated by each site
        assert site["statement_verified"] and site["rounds_joined"] == [1, 2] and not site["rounds_missed"]
        assert site["k_anonymity"] == 11 and site["policy"]["max_delta"] == 1e-5
        (dp,) = site["record_level_dp"].values()
        assert dp["delta"] <= 1e-5 and 0 < dp["epsilon"] <= 4.0 and dp["noise_multiplier"] >= 0.5
    for site in SITES:
        checked = next(o for c, o in outputs.items() if c.startswith("claimpt passport") and f"--site-id {site}" in c)
        assert "agrees with the passport" in checked and f": {site}" in checked, checked
        metrics = json.loads((deployment.root / site / "data" / "asthma" / "metrics.json").read_text())
        assert metrics["signature_verified"] and 0 <= metrics["auroc"] <= 1
        assert "site worker: answered train" in (deployment.state_of(site) / "site.log").read_text()
    status = next(o for c, o in outputs.items() if c.startswith("claimpt server status"))
    assert all(f"  {site}: node " in status for site in SITES)
    site_statuses = [o for c, o in outputs.items() if c.startswith("claimpt site status")]
    assert len(site_statuses) == 2 and all("trained rounds 1, 2;" in o for o in site_statuses), site_statuses


def test_a_run_every_site_refuses_exits_1_and_its_checkpoint_is_refused(deployment: SiteDeployment) -> None:
    """The run asks for FedProx, whose proximal term the documented policy's DP-SGD does not take:
    both hospitals refuse every round. `server submit` once exited 0 and a signed, untrained
    checkpoint was written."""
    run_dir = deployment.root / "refused"
    result = deployment.submit(f"num-server-rounds=1 strategy='fedprox' run-dir='{run_dir}'")
    (deployment.root / "logs" / "flwr-refused.log").write_text(result.stdout + result.stderr)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "RUN INCOMPLETE: the run trained 0 of 1 round(s)" in result.stdout
    assert all(f"{site} (site-" in result.stdout for site in SITES)
    assert result.stdout.count("which has no FedProx proximal term") >= len(SITES)
    assert load_checkpoint(run_dir / "checkpoint").manifest["rounds_trained"] == []
    finetune = subprocess.run(
        [
            *(CLAIMPT, "site", "finetune", "--checkpoint", str(run_dir / "checkpoint")),
            *(
                "--server-public-key",
                str(deployment.certs / "signing.pub"),
                "--data",
                str(deployment.prepared[SITES[0]]),
            ),
            *("--task", "asthma", "--out", str(deployment.root / "refused-finetune")),
        ],
        env=flower_environment(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert finetune.returncode == 2 and "no round of its run trained" in finetune.stderr, finetune.stderr
    for site in SITES:  # one line each, naming the policy key, in the site's own log
        assert "proximal term (policy key require_dp)" in (deployment.state_of(site) / "site.log").read_text()


def test_the_advisory_round_runs_over_tls_and_shows_the_consortium_by_pseudonym(deployment: SiteDeployment) -> None:
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
    overview = json.loads((run_dir / "overview.json").read_text())
    assert {row["site"] for row in overview["sites"]} == {pseudonym(site_key(site)) for site in SITES}
    assert not (run_dir / "checkpoint").exists() and not (run_dir / "rounds.csv").exists()
    for site in SITES:
        assert "site worker: answered query.summary" in deployment.launcher.log(site)


def test_raw_ids_appear_in_no_output_or_log(deployment: SiteDeployment) -> None:
    searched = [
        *(deployment.root / site / "data" for site in SITES),
        deployment.root / "server-state",
        deployment.root / "logs",
        deployment.root / "received",
        deployment.root / "advice",
    ]
    assert all(path.exists() for path in searched[:5])
    for path in searched:
        if path.exists():
            assert files_mentioning(path, deployment.raw_ids) == [], path
    assert files_mentioning(deployment.root / SITES[0] / "raw", deployment.raw_ids)  # the check finds them there


def unregistered_key(deployment: SiteDeployment) -> Path:
    """A SuperNode key the coordinator never registered (made as a site makes its own)."""
    keys = deployment.root / "rogue-keys"
    if not (keys / "node.key").exists():
        make_site_keys(keys, "unregistered")
    return keys / "node.key"


def test_an_unregistered_node_key_is_refused(deployment: SiteDeployment) -> None:
    before = {n["node-id"] for n in deployment.nodes()}
    rogue = deployment.join(
        "unregistered",
        unregistered_key(deployment),
        deployment.prepared[SITES[0]],
        extra=("--max-retries", "1", "--state", str(deployment.root / "rogue-state"), "--no-site-worker"),
    )
    wait_for(lambda: rogue.poll() is not None, "unregistered SuperNode gives up", 120)
    assert rogue.returncode != 0
    assert "Failed to activate SuperNode" in deployment.launcher.log("unregistered")
    assert {n["node-id"] for n in deployment.nodes()} == before


def test_a_second_join_on_a_running_sites_state_is_refused(deployment: SiteDeployment) -> None:
    own_key = deployment.root / "site-keys" / SITES[0] / "node.key"
    second = deployment.join("second-hospital-a", own_key, deployment.prepared[SITES[0]])
    wait_for(lambda: second.poll() is not None, "a second worker on the same state directory gives up", 120)
    assert second.returncode == 2
    assert "another site worker is running" in deployment.launcher.log("second-hospital-a")


def test_a_supernode_without_the_ca_certificate_cannot_connect(deployment: SiteDeployment) -> None:
    command = [
        executable("flower-supernode"),
        "--superlink",
        f"127.0.0.1:{deployment.port}",
        "--auth-supernode-private-key",
        str(deployment.root / "site-keys" / SITES[0] / "node.key"),
        "--port",
        str(free_port()),
        "--max-retries",
        "1",
        "--node-config",
        f"data-path='{deployment.prepared[SITES[0]]}'",
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
            str(unregistered_key(deployment).with_name("node.key.pub")),
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
    refusals = dict.fromkeys(SITES, 0)
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
            server_address=f"127.0.0.1:{deployment.runtime_ports[SITES[0]]}",
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
    secret = (deployment.state_of(SITES[0]) / SECRET_FILE).read_bytes()
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
            assert int((state / "superlink.pid").read_text()) == server.pid  # the process to stop
            gates = _processes_mentioning("server.superlink_gate", str(state))
            assert group_alive(server.pid) and gates
            raise RuntimeError("a failing test")
    assert not group_alive(server.pid) and not any(Path(f"/proc/{pid}").exists() for pid in gates)
    log = (state / "superlink.log").read_text()
    assert "WITHOUT TLS" in (tmp_path / "server.log").read_text() and "\x1b[" not in log and "INFO" in log


def _processes_mentioning(*words: str) -> list[int]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if all(word in text for word in words):
            found.append(int(cmdline.parent.name))
    return found


def test_a_port_in_use_is_named_with_its_option(tmp_path: Path) -> None:
    """A second site on one host, or anything on 9094, once made `site join` die with a Flower
    traceback whose last line was "site worker ready"."""
    import socket

    from simulations.synth import synthesize as make_site

    (site,) = make_site(tmp_path / "raw", [40], seed=3)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        commands = {
            "--runtime-port": [
                *("site", "join", "--superlink", "127.0.0.1:1", "--insecure", "--max-retries", "1"),
                *("--data", str(site), "--site-id", "a", "--runtime-port", str(port), "--state", str(tmp_path / "s")),
            ],
            "--port": [
                *("server", "start", "--insecure", "--state", str(tmp_path / "server")),
                *("--host", "127.0.0.1", "--port", str(port)),
            ],
        }
        for option, arguments in commands.items():
            result = subprocess.run(
                [CLAIMPT, *arguments],
                env=flower_environment(),
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            assert result.returncode == 2, result.stderr
            assert f"port {port} on 127.0.0.1 is already in use" in result.stderr and option in result.stderr
            assert "Traceback" not in result.stderr
