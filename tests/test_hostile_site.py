"""Attacks on the coordinator and the honest sites from one site: whatever one site replies, the run
goes on with the others, and nothing it sends moves the aggregate unless it reads as a reply of
its type (shared_model.contract.messages.REPLIES).

The property tests build malformed replies of every message type (records missing, extra or of
the wrong kind; keys missing or unknown; wrong types, NaN, inf, negative or huge values; arrays of
the wrong shape or non-finite) beside honest ones and call the server's own functions (the
vocabulary round over an in-process grid, the strategy wrapper's aggregation). The suite runs 200
examples each; `HYPOTHESIS_PROFILE=bulk` runs 2,000 (tests/conftest.py).
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAvg
from hypothesis import given
from hypothesis import strategies as st

from client.app import make_client_app
from client.node_config import SITE_ID_KEY
from server.exchange import send_and_receive
from server.federation import run_federation
from server.registry import EnrolledSite, EnrolmentError, Registry, site_key_files
from server.validation import UpdateValidation
from server.vocabulary_round import vocabulary_round
from shared_model.contract.messages import EVALUATION
from shared_model.contract.passport import MANIFEST_KEY
from shared_model.contract.run_config import FederatedRunConfig
from shared_model.settings import VocabularySettings
from tests.inprocess_grid import InProcessGrid

HONEST_NODES = (1000, 1001)
HOSTILE_NODE = 1002
K = 5


def vocabulary_record(node: int) -> dict:
    codes = ["ICD10CM/A01", "ICD10CM/B02", f"CPT/{node}"]
    return {"codes": codes, "counts": [40, 30, 20], "parents": ["", "", ""], "patients": 100, "site-key": node}


def scripted_app(answer):
    """A stand-in ClientApp for the in-process grid: `answer(message, node)` gives the reply content."""

    def app(message: Message, context: Context) -> Message:
        return Message(answer(message, context.node_id), reply_to=message)

    return app


def run_vocabulary_round(hostile: RecordDict, max_weight_ratio: float = 10.0):
    def answer(message: Message, node: int) -> RecordDict:
        if node == HOSTILE_NODE:
            return copy.deepcopy(hostile)
        return RecordDict({"vocabulary": ConfigRecord(vocabulary_record(node))})

    grid = InProcessGrid(scripted_app(answer), [{}, {}, {}])
    return vocabulary_round(
        grid, k=K, minimum_sites=2, settings=VocabularySettings(), max_weight_ratio=max_weight_ratio
    )


def test_a_sites_weight_is_positive_and_bounded_whatever_it_claims() -> None:
    for claimed in (-199, 0, float("nan"), 1e9, "100"):  # -199 once made the aggregate -98.5
        record = {**vocabulary_record(HOSTILE_NODE), "patients": claimed}
        result = run_vocabulary_round(RecordDict({"vocabulary": ConfigRecord(record)}))
        assert HOSTILE_NODE not in result.weight_caps and [n for n, _ in result.dropped] == [HOSTILE_NODE]
        assert "patients must be" in result.dropped[0][1]
    huge = {**vocabulary_record(HOSTILE_NODE), "patients": 10**9}  # a well-formed integer: its word, capped
    result = run_vocabulary_round(RecordDict({"vocabulary": ConfigRecord(huge)}))
    assert result.weight_caps == {1000: 100, 1001: 100, HOSTILE_NODE: 1_000}  # 10 x the others' median
    assert run_vocabulary_round(RecordDict({"vocabulary": ConfigRecord(huge)}), 0.0).weight_caps[HOSTILE_NODE] == 10**9


# --- malformed replies, generated -----------------------------------------------------------------

NOT_A_VALUE = [math.nan, math.inf, -math.inf, -1, -1.5, [1], [1.0, 2.0]]  # wrong for every metric


@st.composite
def corrupted(draw, content: RecordDict, values_record: str) -> RecordDict:
    """`content` with one or more corruptions, each of which alone makes it a reply that does not read."""
    content = copy.deepcopy(content)
    # only what the honest reply had is taken away: an added record or key, taken away again, would undo a corruption
    own_records = list(content.keys())
    own_keys = sorted(content[values_record]) if values_record in content else []
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(
            st.sampled_from(
                ["drop record", "extra record", "record kind", "drop key", "extra key", "bad value"]
                + (["arrays"] * 3 if "arrays" in content else [])
                + (["vocabulary"] * 3 if values_record == "vocabulary" else [])
            )
        )
        names = list(content.keys())
        if kind == "drop record" and set(own_records) & set(names):
            del content[draw(st.sampled_from(sorted(set(own_records) & set(names))))]
        elif kind == "extra record":
            content[draw(st.sampled_from(["extra", "metrics-2", "config"]))] = MetricRecord({"x": 1.0})
        elif kind == "record kind" and names:
            name = draw(st.sampled_from(names))
            if isinstance(content[name], MetricRecord) and draw(st.booleans()):
                content[name] = ConfigRecord(dict(content[name]))  # the same values, the other kind
            else:
                content[name] = ArrayRecord([np.zeros(2)]) if name != "arrays" else MetricRecord({"x": 1.0})
        elif values_record in content and kind in ("drop key", "extra key", "bad value"):
            record = content[values_record]
            if not isinstance(record, ConfigRecord | MetricRecord):
                continue
            keys = sorted(record)
            if kind == "drop key" and set(own_keys) & set(keys):
                del record[draw(st.sampled_from(sorted(set(own_keys) & set(keys))))]
            elif kind == "extra key":
                record[draw(st.sampled_from(["extra", "loss", "num_examples"]))] = 1.0
            elif keys:
                record[draw(st.sampled_from(keys))] = draw(st.sampled_from(NOT_A_VALUE))
        elif kind == "arrays" and isinstance(content.get("arrays"), ArrayRecord):
            arrays = content["arrays"].to_numpy_ndarrays()
            if not arrays:
                continue  # a corruption already took every array away
            how = draw(st.sampled_from(["nan", "inf", "shape", "missing", "extra", "huge"]))
            if how in ("nan", "inf"):
                arrays[0] = arrays[0].copy()
                arrays[0].flat[0] = np.nan if how == "nan" else np.inf
            elif how == "shape":
                arrays[-1] = np.zeros((3, 3), np.float32)
            elif how == "missing":
                arrays = arrays[1:]  # the first: an extra one, added and taken away, would undo itself
            elif how == "extra":
                arrays = [*arrays, np.zeros(2, np.float32)]
            else:
                arrays[0] = np.zeros(10_000, np.float32)
            content["arrays"] = ArrayRecord(arrays)
        elif kind == "vocabulary" and isinstance(content.get("vocabulary"), ConfigRecord):
            record = content["vocabulary"]
            if not {"codes", "counts"} <= set(record) or not all(
                isinstance(record[k], list) for k in ("codes", "counts")
            ):
                continue  # a key already taken away
            if not all(type(n) is int for n in record["counts"]):
                continue  # a bad value already replaced the counts (Flower holds no list of ints and floats)
            how = draw(st.sampled_from(["lengths", "below k", "above patients", "duplicate", "types", "patients"]))
            if how == "lengths":
                record["counts"] = list(record["counts"])[:-1]
            elif how == "below k":
                record["counts"] = [K - 1] + list(record["counts"])[1:]
            elif how == "above patients":
                record["counts"] = [10**6] + list(record["counts"])[1:]
            elif how == "duplicate":
                record["codes"] = [record["codes"][0]] * len(record["codes"])
            elif how == "types":
                record["codes"] = [1] * len(record["counts"])
            else:
                record["patients"] = draw(st.sampled_from([-199, 0, math.nan, 1e9, "100"]))
        # otherwise an earlier corruption already took away what this one would change
    return content


def honest_vocabulary() -> RecordDict:
    return RecordDict({"vocabulary": ConfigRecord(vocabulary_record(HOSTILE_NODE))})


def test_the_corruptions_are_detectable_in_principle() -> None:
    """The generator's honest starting points read: every drop below is the corruption's doing."""
    result = run_vocabulary_round(honest_vocabulary())
    assert result.dropped == [] and set(result.weight_caps) == {*HONEST_NODES, HOSTILE_NODE}


@given(hostile=corrupted(honest_vocabulary(), "vocabulary"))
def test_the_vocabulary_round_takes_the_honest_sites_whatever_one_site_sends(hostile: RecordDict) -> None:
    honest = run_vocabulary_round(RecordDict())  # the hostile node answers with nothing that reads
    result = run_vocabulary_round(hostile)
    assert [n for n, _ in result.dropped] == [HOSTILE_NODE]
    assert result.vocabulary == honest.vocabulary and result.weight_caps == {1000: 100, 1001: 100}


GLOBAL = [np.zeros((4, 2), np.float32), np.zeros(3, np.float32)]


def train_reply(node: int, content: RecordDict) -> Message:
    instruction = Message(RecordDict(), dst_node_id=node, message_type="train")
    instruction.metadata.__dict__["_message_id"] = f"m{node}"
    return Message(content, reply_to=instruction)


def honest_train(node: int, value: float = 1.0) -> RecordDict:
    arrays = [np.full_like(a, value) for a in GLOBAL]
    metrics = {"num-examples": 100, "site-key": node, "train-seconds": 1.0}  # the required keys only
    return RecordDict({"arrays": ArrayRecord(arrays), "metrics": MetricRecord(metrics)})


def honest_evaluate(node: int) -> RecordDict:
    metrics = {
        "num-examples": 50,
        "site-key": node,
        "eval-loss": 3.0 + node - 1000,
        "eval-recall@5": 0.1,
        "eval-recall@10": 0.2,
        "eval-recall@30": 0.3,
        "eval-seconds": 0.5,
    }
    return RecordDict({"metrics": MetricRecord(metrics)})


def wrapper() -> UpdateValidation:
    InProcessGrid(None, [])  # stamps Flower's task identity, as a transport would
    strategy = UpdateValidation(FedAvg(), max_norm_ratio=0.0)
    strategy.current_arrays = GLOBAL
    strategy.example_caps = {1000: 100, 1001: 100, HOSTILE_NODE: 100}
    return strategy


@given(hostile=corrupted(honest_train(HOSTILE_NODE, 50.0), "metrics"))
def test_training_aggregates_the_honest_sites_whatever_one_site_sends(hostile: RecordDict) -> None:
    strategy = wrapper()
    replies = [train_reply(1000, honest_train(1000, 1.0)), train_reply(1001, honest_train(1001, 2.0))]
    arrays, _ = strategy.aggregate_train(1, [*replies, train_reply(HOSTILE_NODE, hostile)])
    for got in arrays.to_numpy_ndarrays():
        np.testing.assert_allclose(got, 1.5)  # the honest sites' mean, nothing of the hostile one
    report = strategy.reports[1]
    assert sorted(report.accepted) == list(HONEST_NODES) and [n for n, _ in report.dropped] == [HOSTILE_NODE]


@given(hostile=corrupted(honest_evaluate(HOSTILE_NODE), "metrics"))
def test_evaluation_aggregates_the_honest_sites_whatever_one_site_sends(hostile: RecordDict) -> None:
    strategy = wrapper()
    replies = [train_reply(node, honest_evaluate(node)) for node in HONEST_NODES]
    metrics = strategy.aggregate_evaluate(1, [*replies, train_reply(HOSTILE_NODE, hostile)])
    assert metrics["eval-loss"] == pytest.approx(3.5)  # (3.0 + 4.0) / 2: equal held-out sizes
    assert [n for n, _ in strategy.reports[1].evaluations_dropped] == [HOSTILE_NODE]


# --- whole runs -------------------------------------------------------------------------------------


def garbles_one_site(message: Message, context: Context, call_next) -> Message:
    """A site (partition 2) whose training replies carry NaN patients and whose evaluation replies
    carry one extra metric: each of these once ended the run."""
    reply = call_next(message, context)
    if context.node_config.get("partition-id") != 2 or reply.has_error():
        return reply
    if message.metadata.message_type == "train":
        reply.content["metrics"]["num-examples"] = float("nan")
        if EVALUATION in reply.content:  # the previous round's evaluation, carried by this reply
            reply.content[EVALUATION]["extra-metric"] = 1.0
    elif message.metadata.message_type == "evaluate":
        reply.content["metrics"]["extra-metric"] = 1.0
    return reply


def test_a_run_finishes_with_one_hostile_site(fed_sites: list[Path], tmp_path: Path) -> None:
    settings_ = FederatedRunConfig(
        num_server_rounds=2,
        min_available_clients=2,
        k_anonymity=5,
        max_vocab=300,
        d_model=16,
        ffn_dim=16,
        run_dir=str(tmp_path / "run"),
        data_paths=",".join(str(p) for p in fed_sites),
    )
    app = make_client_app(settings_.to_run_config(), mods=[garbles_one_site])
    run_federation(InProcessGrid(app, [{"partition-id": i} for i in range(3)]), settings_)
    rounds = pd.read_csv(tmp_path / "run" / "rounds.csv")
    assert rounds["clients"].tolist() == [2, 2] and rounds["dropped"].tolist() == [1, 1]
    assert rounds["eval_loss"].notna().all()
    passport = json.loads((tmp_path / "run" / "checkpoint" / "manifest.json").read_text())[MANIFEST_KEY]
    reasons = [d["reason"] for site in passport["sites"].values() for d in site["updates_dropped"]]
    assert len(reasons) == 2 and all("num-examples must be" in r for r in reasons)
    stages = [d["stage"] for site in passport["sites"].values() for d in site.get("replies_dropped", [])]
    assert stages == ["evaluation", "evaluation"]
    statements = [site for site in passport["sites"].values() if site["k_anonymity"] is not None]
    assert len(statements) == 3  # the hostile site's vocabulary statement still reads


def test_a_site_that_stops_answering_does_not_hold_the_round() -> None:
    def answer(message: Message, node: int) -> RecordDict:
        return RecordDict({"metrics": MetricRecord({"x": 1.0})})

    class SilentNode(InProcessGrid):
        def pull_messages(self, message_ids):
            return [m for m in super().pull_messages(message_ids) if m.metadata.src_node_id != HOSTILE_NODE]

    grid = SilentNode(scripted_app(answer), [{}, {}, {}])
    messages = [Message(RecordDict(), dst_node_id=node, message_type="train") for node in grid.get_node_ids()]
    replies = send_and_receive(grid, messages, timeout=0.5)
    assert len(replies) == 3 and [r.has_error() for r in replies] == [False, False, True]
    assert replies[2].metadata.src_node_id == HOSTILE_NODE and "no reply within" in replies[2].error.reason


def test_a_site_cannot_take_another_sites_name(fed_sites: list[Path], tmp_path: Path) -> None:
    """Names come from the coordinator's enrolment of SuperNode keys: a site that declares another
    site's name (a typo, the docs' default, or on purpose) once merged two hospitals into one
    passport entry. Its replies are dropped; the others train and are named."""
    names = {1000: "hospital-a", 1001: "hospital-b", 1002: "hospital-c"}
    registry = Registry({n: EnrolledSite(n, node_key=f"key-{node}", node_id=node) for node, n in names.items()})
    registry.save(tmp_path / "sites.json")
    settings_ = FederatedRunConfig(
        num_server_rounds=2,
        min_available_clients=2,
        k_anonymity=5,
        d_model=16,
        ffn_dim=16,
        site_registry=str(tmp_path / "sites.json"),
        run_dir=str(tmp_path / "run"),
        data_paths=",".join(str(p) for p in fed_sites),
    )
    declared = ["hospital-a", "hospital-b", "hospital-a"]  # hospital-c's node says it is hospital-a
    nodes = [{"partition-id": i, SITE_ID_KEY: name} for i, name in enumerate(declared)]
    run_federation(InProcessGrid(make_client_app(settings_.to_run_config()), nodes), settings_)
    assert pd.read_csv(tmp_path / "run" / "rounds.csv")["clients"].tolist() == [2, 2]
    passport = json.loads((tmp_path / "run" / "checkpoint" / "manifest.json").read_text())[MANIFEST_KEY]
    by_name = {site.get("name"): site for site in passport["sites"].values()}
    assert by_name["hospital-a"]["rounds_joined"] == [1, 2] and by_name["hospital-b"]["rounds_joined"] == [1, 2]
    impostor = by_name["hospital-c"]
    assert impostor["rounds_joined"] == [] and impostor["k_anonymity"] is None  # its statement is not taken
    reasons = [d["reason"] for d in impostor["updates_dropped"] + impostor["replies_dropped"]]
    assert reasons and all("declares another name than 'hospital-c'" in r for r in reasons)


def test_a_name_or_key_belongs_to_one_site(tmp_path: Path) -> None:
    one = Registry({}).with_site(EnrolledSite("hospital-a", node_key="ecdsa AAA", node_id=7))
    with pytest.raises(EnrolmentError, match="already enrolled as 'hospital-a'"):
        one.with_site(EnrolledSite("hospital-b", node_key="ecdsa AAA"))
    with pytest.raises(EnrolmentError, match="node 7 is already enrolled"):
        one.with_site(EnrolledSite("hospital-b", node_key="ecdsa BBB", node_id=7))
    for directory in ("a", "b"):
        (tmp_path / directory).mkdir()
        (tmp_path / directory / "hospital-a.pub").write_text("x")
    with pytest.raises(EnrolmentError, match="given twice"):
        site_key_files([str(tmp_path / "a" / "hospital-a.pub"), str(tmp_path / "b" / "hospital-a.pub")])
    assert site_key_files([f"hospital-b={tmp_path / 'b' / 'hospital-a.pub'}"]) == {
        "hospital-b": tmp_path / "b" / "hospital-a.pub"
    }
