"""The privacy passport: signed into the checkpoint of a federated run, printed and checked by
`claimpt passport`, refused when altered, and caught by a site's ledger when the server lies."""

from __future__ import annotations

import json
import re
from pathlib import Path
from uuid import uuid4

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from flwr.app import ConfigRecord, Context, Message, RecordDict
from typer.testing import CliRunner

from client.app import make_client_app
from client.approval import make_site_keys
from client.ledger import LEDGER_FILE, FileLedger, LedgerEntry
from client.node_config import IDENTITY_KEY, POLICY_KEY, STATE_DIR_KEY
from client.passport_check import disagreements
from client.policy import SitePolicy
from client.statement import privacy_statement
from server.federation import run_federation
from server.passport import PassportRecorder
from server.registry import enrol_identity as enrol
from server.registry import load_registry
from shared_model.contract.messages import STATEMENT
from shared_model.contract.passport import (
    ClientLevelDP,
    Passport,
    RequestedDP,
    SiteRecord,
    SpentDP,
    pseudonym,
    render_page,
    site_key,
)
from shared_model.contract.run_config import FederatedRunConfig
from simulations.cli.app import app
from tests.inprocess_grid import InProcessGrid
from tests.test_hostile_server import write_policy

OWN_EPSILON = 6.0  # sites 1 and 2 apply record-level DP of their own; the run asks for none


@pytest.fixture(scope="module")
def run(fed_sites: list[Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("passport")
    key = ed25519.Ed25519PrivateKey.generate()
    (root / "signing.pub").write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    nodes = []
    for index, site in enumerate(fed_sites):
        own_dp = {"dp_epsilon": OWN_EPSILON} if index < 2 else {}
        policy = write_policy(root / f"{site.name}.toml", k_anonymity=7, **own_dp)
        identity = make_site_keys(root / "identity" / site.name, site.name)
        enrol(root / "sites.json", site.name, identity.public)  # the coordinator enrols each site's key
        nodes.append(
            {
                "partition-id": index,
                POLICY_KEY: str(policy),
                STATE_DIR_KEY: str(root / f"{site.name}.state"),
                IDENTITY_KEY: str(identity.key),
            }
        )
    settings = FederatedRunConfig(
        d_model=16,
        ffn_dim=16,
        k_anonymity=5,
        num_server_rounds=2,
        site_registry=str(root / "sites.json"),
        run_dir=str(root / "run"),
        data_paths=",".join(map(str, fed_sites)),
    )
    run_federation(InProcessGrid(make_client_app(settings.to_run_config()), nodes), settings, signer=key.sign)
    return {"root": root, "checkpoint": root / "run" / "checkpoint", "public": root / "signing.pub", "key": key}


def passport(*args: str):
    return CliRunner().invoke(app, ["passport", *args])


def test_the_passport_says_what_each_site_gave(run: dict, fed_sites: list[Path]) -> None:
    out = run["root"] / "passport.json"
    result = passport(str(run["checkpoint"]), "--server-public-key", str(run["public"]), "--json", str(out))
    assert result.exit_code == 0, result.output
    document = json.loads(out.read_text())
    names = [pseudonym(site_key(site.name)) for site in fed_sites]
    assert sorted(document["sites"]) == sorted(names) and document["through_round"] == 2
    assert not document["secure_aggregation"] and document["client_level_dp"]["noise_multiplier"] == 0
    for index, name in enumerate(names):
        site = document["sites"][name]
        assert site["rounds_joined"] + [d["round"] for d in site["updates_dropped"]] == [1, 2]
        assert site["rounds_failed"] == [] and site["k_anonymity"] == 7 and site["policy"]["k_anonymity"] == 7
        assert site["statement_verified"]  # signed by the key the coordinator enrolled for it
        (flower_run,) = document["flower_runs"]
        dp = site["record_level_dp"][str(flower_run)]
        if index < 2:  # DP on at the two sites whose policy asks for it, as their ledgers spent it
            assert dp["rounds"] == 2 and 0 < dp["epsilon"] <= OWN_EPSILON * 1.01 and dp["noise_multiplier"] > 0
            assert f"{name}\n\n" in result.output and "Record-level DP (the site's own ledger): on" in result.output
        else:
            assert dp == {**dp, "rounds": 0, "epsilon": 0.0}
        assert name in result.output
    assert result.output.count("Record-level DP (the site's own ledger): off") == 1
    text = out.read_text()  # pseudonyms only: neither a site's id nor its data's path
    assert not any(f'"{site.name}"' in text or str(site.parent) in text for site in fed_sites)


def test_one_changed_byte_is_refused(run: dict, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "checkpoint"
    shutil.copytree(run["checkpoint"], copy)
    manifest = copy / "manifest.json"
    text = manifest.read_text()
    at = text.index('"rounds_joined"')
    manifest.write_text(text[:at] + text[at:].replace("1", "3", 1))  # one digit of one site's rounds
    result = passport(str(copy), "--server-public-key", str(run["public"]))
    assert result.exit_code == 2 and "does not verify" in result.output
    assert "Privacy passport" not in result.output


def test_a_sites_ledger_agrees_and_catches_a_signed_lie(run: dict, fed_sites: list[Path], tmp_path: Path) -> None:
    import shutil

    site = fed_sites[0]
    state = run["root"] / f"{site.name}.state"
    check = ["--server-public-key", str(run["public"]), "--site-state", str(state), "--site-id", site.name]
    honest = passport(str(run["checkpoint"]), *check)
    assert honest.exit_code == 0 and "agrees with the passport" in honest.output, honest.output
    # a coordinator that signs a passport understating what the site spent
    forged = tmp_path / "checkpoint"
    shutil.copytree(run["checkpoint"], forged)
    manifest = json.loads((forged / "manifest.json").read_text())
    (flower_run,) = manifest["passport"]["flower_runs"]
    manifest["passport"]["sites"][pseudonym(site_key(site.name))]["record_level_dp"][str(flower_run)]["epsilon"] /= 2
    data = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    (forged / "manifest.json").write_bytes(data)
    (forged / "manifest.sig").write_bytes(run["key"].sign(data))
    lie = passport(str(forged), *check)
    assert lie.exit_code == 1 and "disagrees" in lie.output and "epsilon" in lie.output


def forged(run: dict, tmp_path: Path, change) -> Path:
    """The run's checkpoint with `change` applied to its manifest, signed again with the real key:
    what a coordinator holding the signing key can hand a site."""
    import shutil

    copy = tmp_path / "forged"
    shutil.copytree(run["checkpoint"], copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    change(manifest)
    data = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    (copy / "manifest.json").write_bytes(data)
    (copy / "manifest.sig").write_bytes(run["key"].sign(data))
    return copy


def test_the_site_walks_its_own_state_against_a_signed_passport(
    run: dict, fed_sites: list[Path], tmp_path: Path
) -> None:
    site = fed_sites[2]  # trained without DP: only its activity log knows its rounds
    state, policy = run["root"] / f"{site.name}.state", run["root"] / f"{site.name}.toml"
    check = ["--server-public-key", str(run["public"]), "--site-state", str(state), "--site-id", site.name]
    honest = passport(str(run["checkpoint"]), *check, "--site-policy", str(policy))
    assert honest.exit_code == 0, honest.output
    name = pseudonym(site_key(site.name))

    def leave_out_round_2(manifest: dict) -> None:
        entry = manifest["passport"]["sites"][name]
        entry["rounds_joined"] = [r for r in entry["rounds_joined"] if r != 2]
        entry["updates_dropped"] = [d for d in entry["updates_dropped"] if d["round"] != 2]

    left_out = passport(str(forged(run, tmp_path / "a", leave_out_round_2)), *check)
    assert left_out.exit_code == 1 and "trained round(s) [2]" in left_out.output

    def lower_through_round(manifest: dict) -> None:
        manifest["passport"]["through_round"] = 1  # as if round 2 never ran

    lowered = passport(str(forged(run, tmp_path / "b", lower_through_round)), *check)
    assert lowered.exit_code == 2 and "another run or round" in lowered.output

    def understate_k(manifest: dict) -> None:
        manifest["passport"]["sites"][name]["k_anonymity"] = 2

    k_lie = passport(str(forged(run, tmp_path / "c", understate_k)), *check, "--site-policy", str(policy))
    assert k_lie.exit_code == 1 and "k = 2" in k_lie.output
    other_policy = write_policy(tmp_path / "other.toml", k_anonymity=7, require_dp=True)
    assert "policy digest" in passport(str(run["checkpoint"]), *check, "--site-policy", str(other_policy)).output


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda site: site.update(k_anonymity=float("nan")), "k_anonymity"),
        (lambda site: site.update(rounds_joined="1, 2"), "rounds_joined"),
        (lambda site: site.update(rounds_joined=[-1, 2]), "rounds_joined[0]"),
        (lambda site: [dp.update(epsilon=-0.5) for dp in site["record_level_dp"].values()], "epsilon"),
        (lambda site: site.update(updates_dropped=[{"round": True, "reason": "x"}]), "updates_dropped[0].round"),
        (lambda site: site.update(trust_me=True), "trust_me"),
        (lambda site: site.pop("record_level_dp").clear(), None),  # missing: a default, nothing to refuse
    ],
)
def test_a_signed_passport_of_a_shape_this_version_does_not_know_is_refused(
    run: dict, fed_sites: list[Path], tmp_path: Path, change, named: str | None
) -> None:
    """A coordinator signs what it likes: a passport whose values have the wrong type (NaN, a
    bool for a round, text for a list), a negative number or an unknown key is refused with exit
    2, naming the key,
    before the site compares anything; a key left out takes its empty default."""
    site_id = fed_sites[0].name
    name = pseudonym(site_key(site_id))
    state = run["root"] / f"{site_id}.state"
    checkpoint = forged(run, tmp_path, lambda manifest: change(manifest["passport"]["sites"][name]))
    result = passport(
        str(checkpoint), "--server-public-key", str(run["public"]), "--site-state", str(state), "--site-id", site_id
    )
    if named is None:
        assert result.exit_code == 1 and "disagrees" in result.output  # the site's DP rounds are gone
    else:
        assert result.exit_code == 2 and named in result.output and "Privacy passport" not in result.output


def passport_of(run_id: str, through_round: int, flower_runs: list[int], sites: dict[str, SiteRecord]) -> Passport:
    """A passport of these sites, the run's settings at their defaults."""
    return Passport(
        run_id=run_id,
        flower_runs=flower_runs,
        through_round=through_round,
        strategy="fedavg",
        secure_aggregation=False,
        k_anonymity_requested=5,
        record_level_dp_requested=RequestedDP(0.0, 0.0, 1.0, "rdp"),
        client_level_dp=ClientLevelDP(0.0, "fixed", 1.0, 1e-5, "rdp", 0.0),
        sites=sites,
    )


def test_a_passport_that_leaves_out_a_flower_run_is_caught(tmp_path: Path) -> None:
    ledger = FileLedger(tmp_path / LEDGER_FILE)
    for run, server_round in ((5, 1), (9, 2)):
        ledger.append(LedgerEntry(run, server_round, 0.3, 1.0, 4, 1e-4, consortium_run="run-a"))
    name = pseudonym(site_key("hospital-a"))
    site = SiteRecord(rounds_joined=[2], record_level_dp={"9": SpentDP(1, ledger.epsilon(1e-4, run=9), 1e-4)})
    document = passport_of("run-a", 2, [9], {name: site})
    assert any(
        "Flower run 5, which the passport leaves out" in p for p in disagreements(document, ledger, "hospital-a")
    )


def test_a_resumed_run_is_checked_flower_run_by_flower_run(tmp_path: Path) -> None:
    """A coordinator that resumes after a crash starts a new Flower run: the site's ledger has
    rounds under both, and a passport that kept only the second understates what the site spent."""
    ledger = FileLedger(tmp_path / LEDGER_FILE)
    for run, server_round in ((5, 1), (5, 2), (9, 3)):
        ledger.append(LedgerEntry(run, server_round, sampling_rate=0.3, noise_multiplier=1.0, steps=4, delta=1e-4))

    def spent(run: int, rounds: int) -> SpentDP:
        return SpentDP(rounds, ledger.epsilon(1e-4, run=run), 1e-4)

    name = pseudonym(site_key("hospital-a"))
    site = SiteRecord(rounds_joined=[1, 2, 3], record_level_dp={"5": spent(5, 2), "9": spent(9, 1)})
    document = passport_of("run-a", 3, [5, 9], {name: site})
    assert disagreements(document, ledger, "hospital-a") == []
    del site.record_level_dp["5"]
    assert any("Flower run 5" in problem for problem in disagreements(document, ledger, "hospital-a"))
    assert "is not in the passport" in disagreements(document, ledger, "hospital-b")[0]


def test_a_statement_that_does_not_read_stops_nothing() -> None:
    """A careless or hostile site's malformed statement is ignored (logged), the others are kept."""
    InProcessGrid(None, [])  # stamps Flower's task identity, as a transport would
    settings = FederatedRunConfig(data_paths="unused")
    recorder = PassportRecorder(settings, "run")
    good = {"site-key": 7, "k-anonymity": 11, "policy": "{}", "policy-sha256": "x", "dp-rounds": 0, "dp-epsilon": 0.0}
    good |= {"dp-delta": 0.0, "dp-noise-multiplier": 0.0, "dp-accountant": "rdp"}
    statements = [good, {**good, "site-key": 8, "policy": "not json"}, {**good, "site-key": 9, "k-anonymity": "many"}]
    replies = []
    for node, statement in enumerate(statements, start=1000):
        instruction = Message(RecordDict(), dst_node_id=node, message_type="evaluate")
        instruction.metadata.__dict__["_message_id"] = str(uuid4())
        replies.append(Message(RecordDict({STATEMENT: ConfigRecord(statement)}), reply_to=instruction))
    recorder.read_replies(replies)
    assert sorted(recorder.sites) == [pseudonym(7)] and recorder.sites[pseudonym(7)].k_anonymity == 11


def test_what_a_site_chose_is_escaped_on_the_page() -> None:
    """A hostile site's statement (a policy holding Markdown) and reasons must not shape the page."""
    InProcessGrid(None, [])  # stamps Flower's task identity, as a transport would
    recorder = PassportRecorder(FederatedRunConfig(data_paths="unused"), "run")
    policy = json.dumps({"k_anonymity": "[trust me](https://evil.example)\n# Approved by the ethics board"})
    statement = {"site-key": 7, "k-anonymity": 11, "policy": policy, "policy-sha256": "`x`", "dp-rounds": 0}
    statement |= {"dp-epsilon": 0.0, "dp-delta": 0.0, "dp-noise-multiplier": 0.0, "dp-accountant": "rdp"}
    instruction = Message(RecordDict(), dst_node_id=1000, message_type="evaluate")
    instruction.metadata.__dict__["_message_id"] = str(uuid4())
    recorder.read_replies([Message(RecordDict({STATEMENT: ConfigRecord(statement)}), reply_to=instruction)])
    recorder.replies_dropped(1, "evaluation", [(1000, "**bold** | <img src=x>")])
    page = render_page(recorder.document(1, 0.0))
    assert "[trust me](" not in page and "\n# Approved" not in page and "**bold**" not in page
    assert re.search(r"(?<!\\)<img", page) is None and "`x`" not in page
    assert "trust me" in page and "Approved by the ethics board" in page  # shown, as text


def test_a_statement_counts_only_under_the_pseudonym_of_the_site_that_signed_it(tmp_path: Path) -> None:
    """A site that puts another site's key in its statement once had its claims (k = 2) filed
    under the victim's pseudonym."""
    InProcessGrid(None, [])  # stamps Flower's task identity, as a transport would
    keys = {name: make_site_keys(tmp_path / name, name) for name in ("hospital-a", "hospital-b", "stranger")}
    for name in ("hospital-a", "hospital-b"):
        enrol(tmp_path / "sites.json", name, keys[name].public)
    recorder = PassportRecorder(
        FederatedRunConfig(data_paths="unused"), "run", registry=load_registry(tmp_path / "sites.json")
    )

    def statement(signer: str, claimed: str, k: int, node: int) -> Message:
        context = Context(
            run_id=5, node_id=node, node_config={IDENTITY_KEY: str(keys[signer].key)}, state=RecordDict(), run_config={}
        )
        record = privacy_statement(context, SitePolicy(k_anonymity=k), k, site_key(claimed))
        instruction = Message(RecordDict(), dst_node_id=node, message_type="evaluate")
        instruction.metadata.__dict__["_message_id"] = str(uuid4())
        reply = Message(RecordDict({STATEMENT: record}), reply_to=instruction)
        reply.metadata.__dict__["_run_id"] = 5
        return reply

    recorder.read_replies(
        [
            statement("hospital-b", "hospital-b", 11, 1002),
            statement("hospital-a", "hospital-b", 2, 1000),  # hospital-a's claims under hospital-b's key
            statement("stranger", "stranger", 2, 1001),  # a site the coordinator never enrolled
        ]
    )
    assert sorted(recorder.sites) == [pseudonym(site_key("hospital-b"))]
    victim = recorder.sites[pseudonym(site_key("hospital-b"))]
    assert victim.k_anonymity == 11 and victim.statement_verified
