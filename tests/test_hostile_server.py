"""Attacks on a site from its own coordinator (or anyone who can send it messages), one test each.

Every test plays the server: it crafts the messages a careless or hostile coordinator could send
to the production ClientApp (over the in-process transport; the real SuperLink/SuperNode path is
in test_deployment.py) and checks that the site refuses, or that what it sends back reveals
nothing the site's policy does not allow. Two attacks need real processes and are in
test_deployment.py: a site using the control plane (`test_a_site_cannot_use_the_control_plane`)
and a foreign or unsigned app bundle (`test_supernodes_refuse_unsigned_and_foreign_signed_bundles`).
"""

from __future__ import annotations

import dataclasses
import json
import stat
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.client.mod.secure_aggregation.secaggplus_mod import RECORD_KEY_CONFIGS as SECAGG_CONFIGS
from flwr.clientapp import ClientApp

from client.app import make_client_app
from shared_model.contract.messages import EVALUATION, STATEMENT
from shared_model.contract.run_config import FederatedRunConfig
from shared_model.contract.site_summary import OwnAurocRecipe, SiteSummary
from shared_model.data import read_meds
from shared_model.model.config import ClaimTransformerConfig
from shared_model.model.transformer import PretrainingModel
from shared_model.tensors.tasks import training_vocabulary
from shared_model.tensors.vocabulary import FIRST_CODE_ID, count_patients_per_code
from shared_model.training.own_auroc import held_out_label_counts
from tests.inprocess_grid import InProcessGrid

SITE_K = 11


@pytest.fixture(scope="module")
def site(fed_sites: list[Path]) -> Path:
    return fed_sites[1]


def probing_model_and_vocabulary(site: Path):
    """A vocabulary with every code the site has, rare ones included (what a server that wants
    to probe rare codes would send), and a small model over it."""
    vocabulary = training_vocabulary([read_meds(site)])
    config = ClaimTransformerConfig(
        vocab_size=vocabulary.size, n_groups=vocabulary.n_groups, d_model=16, patient_dim=16, ffn_dim=16
    )
    return [np.asarray(w) for w in PretrainingModel(config).get_weights()], config, vocabulary


@pytest.fixture(scope="module")
def model_and_vocabulary(site: Path):
    return probing_model_and_vocabulary(site)


class Server:
    """The coordinator's side of one site: sends crafted messages to the production ClientApp."""

    def __init__(
        self, site: Path, node_config: dict | None = None, run_id: int = 1, app: ClientApp | None = None, **run_config
    ) -> None:
        self.run_config = {**FederatedRunConfig(**run_config).to_run_config(), **{"data-paths": str(site)}}
        self.grid = InProcessGrid(
            app or make_client_app(), [{"partition-id": 0, **(node_config or {})}], self.run_config, run_id=run_id
        )

    def send(self, message_type: str, content: RecordDict) -> Message:
        (reply,) = self.grid.send_and_receive([Message(content, dst_node_id=1000, message_type=message_type)])
        return reply

    def train(self, weights, config: ClaimTransformerConfig, vocabulary, *, server_round: int = 1, **extra) -> Message:
        record = ConfigRecord(
            {
                "server-round": server_round,
                "vocabulary": vocabulary.to_json(),
                "model-config": config.to_json(),
                "local-epochs": 1,
                **extra,
            }
        )
        return self.send("train", RecordDict({"arrays": ArrayRecord(weights), "config": record}))

    def evaluate(self, weights, config: ClaimTransformerConfig, vocabulary) -> Message:
        record = ConfigRecord({"server-round": 1, "vocabulary": vocabulary.to_json(), "model-config": config.to_json()})
        return self.send("evaluate", RecordDict({"arrays": ArrayRecord(weights), "config": record}))

    def vocabulary_query(self, k) -> Message:
        return self.send("query.vocabulary", RecordDict({"config": ConfigRecord({"k-anonymity": k})}))


def refused(reply: Message, because: str = "refused by the site's policy") -> bool:
    return reply.has_error() and because in reply.error.reason and not reply.has_content()


def write_policy(path: Path, **values) -> Path:
    path.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items()))
    return path


def train_patient_counts(site: Path) -> pd.Series:
    dataset = read_meds(site)
    train = dataset.splits.loc[dataset.splits["split"] == "train", "subject_id"]
    return count_patients_per_code(dataset.events[dataset.events["subject_id"].isin(train)])


def test_k_too_low_is_raised_to_the_sites_floor_and_invalid_k_is_refused(site: Path) -> None:
    server = Server(site)
    reply = server.vocabulary_query(2)
    counts = reply.content["vocabulary"]["counts"]
    assert counts and min(counts) >= SITE_K  # the site's k, not the server's 2
    assert sum(train_patient_counts(site).between(2, SITE_K - 1)) > 0  # codes the server wanted to see exist
    for bad in (0, -3, 2.5, "11", True):
        assert refused(server.vocabulary_query(bad)), bad


def test_the_advisory_summary_keeps_the_sites_k(site: Path, tmp_path: Path) -> None:
    server = Server(site, {"policy": str(write_policy(tmp_path / "policy.toml", share_task_counts=True))})
    reply = server.send("query.summary", RecordDict({"config": ConfigRecord({"k-anonymity": 2})}))
    summary = SiteSummary.from_json(reply.content["summary"]["summary"])
    assert summary.k == SITE_K and min(summary.code_counts.values()) >= SITE_K
    assert min(summary.age_band_counts.values()) >= SITE_K
    assert not set(summary.code_counts) & set(train_patient_counts(site).loc[lambda n: n < SITE_K].index)
    assert refused(server.send("query.summary", RecordDict({"config": ConfigRecord({"k-anonymity": 0})})))
    assert summary.task_counts and all(min(p, n - p) >= SITE_K for n, p in summary.task_counts.values())


QUICK_RECIPE = OwnAurocRecipe(cohort_size=40, epochs=1, seeds=(0,), time_encoding="days_before+age")


def summary_query(server: Server, k: int, recipe: object = QUICK_RECIPE) -> Message:
    """The advisor's question, asking also for the AUROC the site reaches alone on asthma."""
    recipe = json.dumps(recipe.to_dict()) if isinstance(recipe, OwnAurocRecipe) else recipe
    config = ConfigRecord({"k-anonymity": k, "task": "asthma", "own-auroc": recipe})
    return server.send("query.summary", RecordDict({"config": config}))


def test_task_counts_and_the_own_auroc_leave_only_when_the_sites_policy_opts_in(site: Path, tmp_path: Path) -> None:
    for node_config in ({}, {"policy": str(write_policy(tmp_path / "policy.toml", share_task_counts=False))}):
        reply = summary_query(Server(site, node_config), SITE_K)  # the server asks for both
        summary = SiteSummary.from_json(reply.content["summary"]["summary"])
        assert summary.code_counts and summary.task_counts == {} and summary.own_auroc == {}


def test_a_site_releases_its_own_auroc_only_under_its_policy_and_its_k(fed_sites: list[Path], tmp_path: Path) -> None:
    site = fed_sites[0]
    positives, negatives = held_out_label_counts(read_meds(site), "asthma")
    assert 2 <= positives < negatives  # its held-out split: 5 positives
    at_its_k = write_policy(tmp_path / "k.toml", k_anonymity=positives, share_own_auroc=True)
    reply = summary_query(Server(site, {"policy": str(at_its_k)}), 2)
    released = SiteSummary.from_json(reply.content["summary"]["summary"]).own_auroc
    assert set(released) == {"asthma"} and round(released["asthma"], 2) == released["asthma"]  # 0.01, no finer
    above = write_policy(tmp_path / "above.toml", k_anonymity=positives + 1, share_own_auroc=True)
    reply = summary_query(Server(site, {"policy": str(above)}), 2)  # the server's k=2 does not lower the site's
    assert SiteSummary.from_json(reply.content["summary"]["summary"]).own_auroc == {}
    keeps_it = write_policy(tmp_path / "keep.toml", k_anonymity=positives, share_own_auroc=False)
    reply = summary_query(Server(site, {"policy": str(keeps_it)}), 2)
    summary = SiteSummary.from_json(reply.content["summary"]["summary"])
    assert summary.code_counts and summary.own_auroc == {}


def test_an_own_auroc_recipe_that_would_spend_the_sites_machine_is_refused(site: Path, tmp_path: Path) -> None:
    server = Server(site, {"policy": str(write_policy(tmp_path / "policy.toml", share_own_auroc=True))})
    bad = [
        {**QUICK_RECIPE.to_dict(), "seeds": list(range(1000))},
        {**QUICK_RECIPE.to_dict(), "epochs": 10**6},
        {**QUICK_RECIPE.to_dict(), "cohort_size": True},
        {**QUICK_RECIPE.to_dict(), "extra": 1},
    ]
    for recipe in [*(json.dumps(r) for r in bad), "not json", json.dumps([1, 2])]:
        assert refused(summary_query(server, SITE_K, recipe)), recipe


def test_a_rare_code_slipped_into_the_vocabulary_learns_nothing(site: Path, model_and_vocabulary) -> None:
    weights, config, vocabulary = model_and_vocabulary
    counts = train_patient_counts(site)
    rare = [c for c in vocabulary.codes if 0 < counts.get(c, 0) < SITE_K]
    common = [c for c in vocabulary.codes if counts.get(c, 0) >= SITE_K]
    assert rare and common
    reply = Server(site).train(weights, config, vocabulary)
    table_index = next(i for i, w in enumerate(weights) if w.shape == (vocabulary.size, config.d_model))
    before, after = weights[table_index], reply.content["arrays"].to_numpy_ndarrays()[table_index]
    rows = {code: vocabulary.encode([code])[0] for code in rare + common}
    assert all(np.array_equal(before[rows[c]], after[rows[c]]) for c in rare)  # the probe sees no movement
    assert any(not np.array_equal(before[rows[c]], after[rows[c]]) for c in common)  # training did happen
    assert min(rows.values()) >= FIRST_CODE_ID


def test_a_delta_above_the_sites_ceiling_trains_at_the_sites_own(site: Path, model_and_vocabulary, tmp_path) -> None:
    """As with epsilon, the site's ceiling applies whatever the run asks (the documented policy's
    1e-5 under the run's default n^-1.1 refused every round before)."""
    weights, config, vocabulary = model_and_vocabulary
    policy = write_policy(tmp_path / "policy.toml", max_delta=1e-5)
    for asked in (0.5, 0.0):  # an explicit delta far above the ceiling, and the run's default
        server = Server(site, {"policy": str(policy)}, dp_epsilon=4.0, dp_delta=asked, batch_size=25)
        reply = server.train(weights, config, vocabulary)
        assert not reply.has_error(), reply.error.reason
        assert reply.content["metrics"]["dp-delta"] == 1e-5


def test_dp_noise_is_fresh_on_a_replayed_round_and_no_training_loss_leaves(site: Path, model_and_vocabulary) -> None:
    weights, config, vocabulary = model_and_vocabulary
    server = Server(site, dp_epsilon=8.0, batch_size=25, num_server_rounds=4)
    first, replay = (server.train(weights, config, vocabulary, server_round=1) for _ in range(2))
    assert not first.has_error() and not replay.has_error()
    a, b = first.content["arrays"].to_numpy_ndarrays(), replay.content["arrays"].to_numpy_ndarrays()
    assert any(not np.array_equal(x, y) for x, y in zip(a, b, strict=True))  # same seed, round, weights: new noise
    assert not {"train-loss", "train-nvp-loss", "train-cp-loss"} & set(first.content["metrics"])
    assert replay.content["metrics"]["dp-epsilon"] > first.content["metrics"]["dp-epsilon"]  # the replay was paid for


def test_the_lifetime_budget_holds_across_runs_and_a_restart(site: Path, model_and_vocabulary, tmp_path: Path) -> None:
    weights, config, vocabulary = model_and_vocabulary
    policy = write_policy(tmp_path / "policy.toml", lifetime_epsilon=5.0)
    node = {"policy": str(policy), "state-dir": str(tmp_path / "state")}
    options = {"dp_epsilon": 4.0, "batch_size": 25, "num_server_rounds": 1}
    assert not Server(site, node, run_id=1, **options).train(weights, config, vocabulary).has_error()
    ledger = tmp_path / "state" / "privacy-ledger.jsonl"
    assert stat.S_IMODE(ledger.stat().st_mode) == 0o600 and len(ledger.read_text().splitlines()) == 1
    # a new run, from a restarted site (new app, new Flower state): the ledger on disk remembers
    again = Server(site, node, run_id=2, **options).train(weights, config, vocabulary)
    assert refused(again, "lifetime privacy budget")
    assert len(ledger.read_text().splitlines()) == 1
    # and a run without DP is refused outright once the site has a lifetime budget
    assert refused(Server(site, node, run_id=3, num_server_rounds=1).train(weights, config, vocabulary))


def test_a_sites_own_epsilon_holds_whatever_the_run_asks(site: Path, model_and_vocabulary, tmp_path: Path) -> None:
    weights, config, vocabulary = model_and_vocabulary
    policy = write_policy(tmp_path / "policy.toml", dp_epsilon=2.0)
    for asked in (0.0, 8.0):  # no DP, or more epsilon than the site allows: the site trains at its own
        reply = Server(site, {"policy": str(policy)}, dp_epsilon=asked, batch_size=25, num_server_rounds=1).train(
            weights, config, vocabulary
        )
        assert reply.content["metrics"]["dp-epsilon"] == pytest.approx(2.0, rel=0.01)
        assert not {"train-loss", "train-nvp-loss", "train-cp-loss"} & set(reply.content["metrics"])
    # FedProx's proximal term does not exist under DP-SGD: refused, not trained without it
    fedprox = Server(site, {"policy": str(policy)}, batch_size=25).train(
        weights, config, vocabulary, **{"proximal-mu": 0.1}
    )
    assert refused(fedprox, "FedProx")


@pytest.mark.parametrize(
    ("policy", "run_config", "rule"),
    [
        # a delta that is no number passed every ceiling and the lifetime check, and trained with noise 0.1
        ({"require_dp": True, "dp_epsilon": 4.0, "lifetime_epsilon": 20.0}, {"dp-delta": float("nan")}, "dp-delta"),
        ({"max_run_epsilon": 8.0}, {"dp-epsilon": float("nan")}, "dp-epsilon"),  # noise 0.0, trained
        ({"require_dp": True}, {"dp-epsilon": float("inf")}, "dp-epsilon"),  # noise 0.0, trained
        ({"require_dp": True}, {"dp-epsilon": -4.0}, "dp-epsilon"),
        ({"require_dp": True}, {"dp-epsilon": "4"}, "dp-epsilon"),
        ({}, {"batch-size": float("inf")}, "batch-size"),
        ({}, {"k-anonymity": float("nan")}, "k-anonymity"),
        ({}, {"dp-embedding-share": 1.0}, "dp-embedding-share"),
    ],
)
def test_run_config_values_that_are_no_numbers_are_refused_before_any_training(
    site: Path, model_and_vocabulary, tmp_path: Path, policy: dict, run_config: dict, rule: str
) -> None:
    weights, config, vocabulary = model_and_vocabulary
    node = {"policy": str(write_policy(tmp_path / "policy.toml", **policy)), "state-dir": str(tmp_path / "state")}
    server = Server(site, node, batch_size=25, num_server_rounds=2)
    server.grid.run_config.update(run_config)  # as `flwr run --run-config "dp-delta=nan"` delivers it
    for reply in (server.train(weights, config, vocabulary), server.evaluate(weights, config, vocabulary)):
        assert refused(reply, f"the run config does not read: {rule} must be")
    assert not (tmp_path / "state" / "privacy-ledger.jsonl").exists()  # nothing written to the ledger


def test_round_instructions_out_of_type_or_range_are_refused(site: Path, model_and_vocabulary, tmp_path: Path) -> None:
    weights, config, vocabulary = model_and_vocabulary
    node = {"state-dir": str(tmp_path / "state")}
    server = Server(site, node, batch_size=25, dp_epsilon=4.0, num_server_rounds=2)
    huge = dataclasses.replace(config, d_model=4_096, ffn_dim=16_384, n_layers=64)  # ~7e9 weights: the site's memory
    mismatched = dataclasses.replace(config, vocab_size=config.vocab_size + 5)
    broken_vocabulary = json.loads(vocabulary.to_json())
    broken_vocabulary["code_group"][0] = 10**9  # an index far outside the groups
    attacks = {
        "server-round": {"server-round": float("nan")},
        "server-round must": {"server-round": -1},
        "local-epochs must": {"local-epochs": 1.5},
        "proximal-mu must": {"proximal-mu": float("nan")},  # nan > 0 was False: FedProx's DP refusal skipped
        "key that is not": {"learning-rate": 10.0},
        "larger than this site's policy": {"model-config": huge.to_json()},
        "does not fit the round's vocabulary": {"model-config": mismatched.to_json()},
        "vocabulary does not read": {},
        "model-config must": {"model-config": 7},
    }
    sent = {rule: vocabulary for rule in attacks}
    sent["vocabulary does not read"] = SimpleNamespace(to_json=lambda: json.dumps(broken_vocabulary))
    for rule, extra in attacks.items():
        reply = server.train(weights, config, sent[rule], **extra)
        assert refused(reply, rule), (rule, reply.error.reason if reply.has_error() else "trained")
    assert not (tmp_path / "state" / "privacy-ledger.jsonl").exists()
    assert not server.train(weights, config, vocabulary).has_error()  # the honest round still trains


def test_local_epochs_must_match_the_noise_plan(site: Path, model_and_vocabulary) -> None:
    weights, config, vocabulary = model_and_vocabulary
    reply = Server(site, dp_epsilon=4.0, batch_size=25).train(weights, config, vocabulary, **{"local-epochs": 5})
    assert refused(reply, "local epochs")


def test_the_adversary_simulation_key_is_refused_by_a_deployed_site(site: Path, model_and_vocabulary) -> None:
    weights, config, vocabulary = model_and_vocabulary
    server = Server(site)
    server.grid.run_config["adversary"] = "site-2:signflip"
    reply = server.train(weights, config, vocabulary)
    assert refused(reply, "the run config has a key that is not one of its settings")
    assert "signflip" not in reply.error.reason


def test_a_plain_round_is_refused_when_the_policy_requires_secure_aggregation(
    site: Path, model_and_vocabulary, tmp_path: Path
) -> None:
    weights, config, vocabulary = model_and_vocabulary
    policy = write_policy(tmp_path / "policy.toml", require_secure_aggregation=True)
    server = Server(site, {"policy": str(policy)})
    assert refused(server.train(weights, config, vocabulary), "secure aggregation")
    # the legacy fit format SecAgg+ uses, sent outside a SecAgg+ round, is no way around it
    import flwr.compat.common.recorddict_compat as compat
    from flwr.common import FitIns, ndarrays_to_parameters

    legacy = compat.fitins_to_recorddict(
        FitIns(
            ndarrays_to_parameters(weights),
            {"server-round": 1, "vocabulary": vocabulary.to_json(), "model-config": config.to_json()},
        ),
        keep_input=True,
    )
    for open_policy in (server, Server(site)):
        assert refused(open_policy.send("train", legacy), "secure aggregation")


def secure_aggregation_stage(server: Server, **configs) -> Message:
    return server.send("train", RecordDict({SECAGG_CONFIGS: ConfigRecord(configs)}))


def test_a_secure_aggregation_setup_below_the_sites_policy_is_refused(site: Path) -> None:
    """Flower's SecAgg+ mod takes any threshold (1: one share reveals a site's mask) and, when
    unmasking, hands over both shares of a node listed as active and dead at once."""
    server = Server(site)
    setup = {"stage": "setup", "sample_num": 3, "share_num": 3, "threshold": 2, "clipping_range": 8.0}
    setup |= {"target_range": 1 << 16, "mod_range": 1 << 24, "max_weight": 1.0}
    for bad, rule in (
        ({"threshold": 1}, "threshold is below"),
        ({"share_num": 4}, "threshold is below"),  # 2 of 4 shares: no majority
        ({"sample_num": 2, "share_num": 2}, "fewer sites"),
        ({"threshold": 2.0}, "does not read"),
    ):
        assert refused(secure_aggregation_stage(server, **{**setup, **bad}), rule), bad
    accepted = secure_aggregation_stage(server, **setup)
    assert not accepted.has_error() and {"pk1", "pk2"} <= set(accepted.content[SECAGG_CONFIGS])
    one_partner = secure_aggregation_stage(server, stage="share_keys", **{"1000": [b"a", b"b"], "1001": [b"c", b"d"]})
    assert refused(one_partner, "fewer sites")
    twice = secure_aggregation_stage(server, stage="unmask", active_nids=[1000, 1001, 1002], dead_nids=[1002])
    assert refused(twice, "lists a node twice")


def test_error_replies_carry_no_data_paths_or_values(site: Path, model_and_vocabulary, tmp_path: Path) -> None:
    """A site whose data the server's messages make fail: the reply names the error class and a
    reference; the path, the file, the row and the value stay in the site's errors.log (0600)."""
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq

    weights, config, vocabulary = model_and_vocabulary
    broken = Path(shutil.copytree(site, tmp_path / "hospital-a-private-extract"))
    shard = sorted((broken / "data").rglob("*.parquet"))[0]
    table = pq.read_table(shard)
    ids = table.column("subject_id").to_pylist()
    ids[5] = -987654321  # a DataValidationError quotes the value, the file and the row
    pq.write_table(
        table.set_column(table.column_names.index("subject_id"), "subject_id", pa.array(ids, pa.int64())), shard
    )
    (tmp_path / "state").mkdir(mode=0o700)
    node = {"data-path": str(broken), "state-dir": str(tmp_path / "state")}
    server = Server(site, node)
    replies = [
        server.vocabulary_query(SITE_K),
        server.train(weights, config, vocabulary),
        server.evaluate(weights, config, vocabulary),
    ]
    for reply in replies:
        assert reply.has_error() and "site reference" in reply.error.reason
        for secret in (str(tmp_path), "hospital-a", shard.name, "987654321", "row "):
            assert secret not in reply.error.reason, reply.error.reason
    log = tmp_path / "state" / "errors.log"
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    text = log.read_text()
    assert "-987654321" in text and all(r.error.reason.split("reference ")[1][:12] in text for r in replies)


def test_a_refusal_is_one_line_in_the_sites_log_naming_its_policy_key(
    site: Path, model_and_vocabulary, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Routine refusals once reached the operator as full tracebacks."""
    weights, config, vocabulary = model_and_vocabulary
    policy = write_policy(tmp_path / "policy.toml", max_run_epsilon=1.0)
    state = tmp_path / "state"
    reply = Server(site, {"policy": str(policy), "state-dir": str(state)}, dp_epsilon=8.0, batch_size=25).train(
        weights, config, vocabulary
    )
    assert refused(reply, "dp-epsilon is above this site's ceiling")
    (line,) = (state / "errors.log").read_text().splitlines()
    assert "refused train of Flower run 1: dp-epsilon is above this site's ceiling (policy key max_run_epsilon)" in line
    assert "Traceback" not in caplog.text and "policy key max_run_epsilon" in caplog.text


def test_evaluation_is_rate_limited_and_aggregate_only(site: Path, model_and_vocabulary) -> None:
    weights, config, vocabulary = model_and_vocabulary
    server = Server(site)
    first = server.evaluate(weights, config, vocabulary)
    assert not first.has_error()
    metrics = first.content["metrics"]
    assert all(isinstance(v, int | float) for v in metrics.values())  # scalars: no per-patient values
    probes = [server.evaluate([w + 0.01 * i for w in weights], config, vocabulary) for i in range(1, 4)]
    assert all(refused(p, "evaluation limit") for p in probes)
    assert not server.train(weights, config, vocabulary).has_error()  # one more after a training round
    assert not server.evaluate(weights, config, vocabulary).has_error()
    assert refused(server.evaluate(weights, config, vocabulary), "evaluation limit")


def test_an_evaluation_carried_by_training_counts_and_its_refusal_never_refuses_the_training(
    site: Path, model_and_vocabulary, tmp_path: Path
) -> None:
    """One exchange a round: a train message asks the site to evaluate the model it carries first
    (`evaluate-received`). That evaluation counts against the same limit as an evaluate message's
    (here the default: one more than the rounds trained), and when the limit refuses it the site
    still trains, says nothing of why to the server and writes the refusal to its own log."""
    weights, config, vocabulary = model_and_vocabulary
    state = tmp_path / "state"
    server = Server(site, {"state-dir": str(state)})

    def carried(server_round: int) -> Message:
        return server.train(weights, config, vocabulary, server_round=server_round, **{"evaluate-received": True})

    first = carried(1)
    assert not first.has_error() and EVALUATION in first.content and STATEMENT in first.content
    assert not server.evaluate(weights, config, vocabulary).has_error()  # 2 evaluations, 1 round trained
    second = carried(2)
    assert not second.has_error() and "arrays" in second.content and "metrics" in second.content
    assert EVALUATION not in second.content and STATEMENT not in second.content
    (line,) = (state / "errors.log").read_text().splitlines()
    assert "refused the evaluation carried by round 2's training: this site's evaluation limit" in line
    assert not server.evaluate(weights, config, vocabulary).has_error()  # 2 rounds trained: a third
    assert refused(server.evaluate(weights, config, vocabulary), "evaluation limit")


def test_the_evaluation_budget_holds_across_runs_and_restarts(site: Path, model_and_vocabulary, tmp_path: Path) -> None:
    """Flower's node state forgets between runs and restarts: each new run bought a new allowance."""
    weights, config, vocabulary = model_and_vocabulary
    policy = write_policy(tmp_path / "policy.toml", lifetime_evaluations=2)
    node = {"policy": str(policy), "state-dir": str(tmp_path / "state")}
    assert not Server(site, node, run_id=1).evaluate(weights, config, vocabulary).has_error()
    restarted = Server(site, node, run_id=1)  # the same run, a restarted SuperNode: no new allowance
    assert refused(restarted.evaluate(weights, config, vocabulary), "evaluation limit for the run")
    second_run = Server(site, node, run_id=2)
    released = second_run.evaluate(weights, config, vocabulary)
    assert not released.has_error()
    metrics = released.content["metrics"]
    assert all(round(metrics[key], 3) == metrics[key] for key in metrics if key.startswith("eval-"))  # rounded
    assert refused(Server(site, node, run_id=3).evaluate(weights, config, vocabulary), "lifetime evaluation limit")


def test_a_rolled_back_checkpoint_is_refused(fed_sites: list[Path], model_and_vocabulary, tmp_path: Path) -> None:
    """The server hands a site an older (genuinely signed) round of a run it has already used."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519
    from typer.testing import CliRunner

    from shared_model.contract.checkpoint import save_checkpoint
    from simulations.cli.app import app

    key = ed25519.Ed25519PrivateKey.generate()
    public = tmp_path / "signing.pub"
    public.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    _, config, vocabulary = model_and_vocabulary
    model = PretrainingModel(config)
    for name, extra in (
        ("checkpoints/round-001", {"run_id": "run-a", "round": 1, "rounds_trained": [1]}),
        ("checkpoints/round-002", {"run_id": "run-a", "round": 2, "rounds_trained": [1, 2]}),
        ("checkpoint", {"run_id": "run-a", "round": 2, "rounds_trained": [1, 2]}),
        ("no-run-id", {"round": 3, "rounds_trained": [1]}),  # neither checked nor remembered by the guard, once
        ("untrained", {"run_id": "run-b", "round": 2, "rounds_trained": []}),  # every site refused every round
    ):
        save_checkpoint(
            tmp_path / "run" / name, model, config, vocabulary, signer=key.sign, extra={"mode": "federated", **extra}
        )
    state = tmp_path / "site-state"

    def finetune(checkpoint: Path, *extra: str):
        return CliRunner().invoke(
            app,
            [
                "site",
                "finetune",
                "--checkpoint",
                str(checkpoint),
                "--server-public-key",
                str(public),
                "--data",
                str(fed_sites[0]),
                "--task",
                "asthma",
                "--train-size",
                "60",
                "--epochs",
                "1",
                "--no-guard",
                "--state",
                str(state),
                "--out",
                str(tmp_path / f"ft-{len(list(tmp_path.glob('ft-*')))}"),
                *extra,
            ],
        )

    assert finetune(tmp_path / "run" / "checkpoints" / "round-002").exit_code == 0
    rolled_back = finetune(tmp_path / "run" / "checkpoints" / "round-001")
    assert rolled_back.exit_code == 2 and "rollback" in rolled_back.output
    assert finetune(tmp_path / "run" / "checkpoint", "--min-round", "3").exit_code == 2
    assert finetune(tmp_path / "run" / "checkpoint").exit_code == 0  # the newest round again is fine
    unplaced = finetune(tmp_path / "run" / "no-run-id")
    assert unplaced.exit_code == 2 and "names no run" in unplaced.output
    untrained = finetune(tmp_path / "run" / "untrained")
    assert untrained.exit_code == 2 and "no round of its run trained" in untrained.output
    assert finetune(tmp_path / "run" / "untrained", "--allow-untrained").exit_code == 0


def test_num_examples_inflation_is_capped_at_the_vocabulary_round_count() -> None:
    """A peer site claims 1e9 patients to take over FedAvg (the server protects the honest sites)."""
    from server.strategies import build_strategy
    from tests.test_strategies import GLOBAL, replies, update

    settings = FederatedRunConfig(strategy="fedavg", min_available_clients=3, max_norm_ratio=0.0)
    updates = [update(1.0), update(2.0), update(30.0)]
    strategy = build_strategy(settings)
    strategy.current_arrays = GLOBAL
    strategy.example_caps = {1000: 100, 1001: 100, 1002: 100}
    arrays, _ = strategy.aggregate_train(1, replies(updates, [100, 100, 10**9]))
    np.testing.assert_allclose(arrays.to_numpy_ndarrays()[1], np.full((2, 2), 11.0), rtol=1e-6)  # equal weights
    strategy.example_caps = {1000: 100, 1001: 100}  # a node that skipped the vocabulary round
    strategy.aggregate_train(2, replies(updates, [100, 100, 100]))
    assert [n for n, _ in strategy.reports[2].dropped] == [1002]
