"""Federated pretraining: strategies, faults, resume and privacy, with the production ServerApp
logic and ClientApp over an in-process transport (the Ray engine has its own test)."""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from flwr.app import ArrayRecord, ConfigRecord, MetricRecord

from client.app import OPTIMIZER_STATE, make_client_app
from client.policy import SitePolicy
from server.federation import run_federation
from server.outcome import RunIncomplete
from shared_model.contract.checkpoint import load_checkpoint
from shared_model.contract.messages import EVALUATION, STATEMENT, released
from shared_model.contract.run_config import FederatedRunConfig
from shared_model.contract.wire import LAYOUT, is_packed, unpack
from shared_model.data import read_meds
from shared_model.tensors.tasks import NEXT_VISIT, task_arrays
from simulations.federation.adversary import AdversaryMod
from tests.conftest import tensorboard_events
from tests.inprocess_grid import InProcessGrid

TINY = {"d_model": 16, "ffn_dim": 16, "k_anonymity": 5}


def federate(
    sites: list[Path], run_dir: Path, adversary: str = "", first_node: int = 1000, **options
) -> tuple[InProcessGrid, pd.DataFrame]:
    settings = FederatedRunConfig(
        **{**TINY, "num_server_rounds": 2, **options}, run_dir=str(run_dir), data_paths=",".join(map(str, sites))
    )
    app = make_client_app(settings.to_run_config(), mods=[AdversaryMod(adversary)] if adversary else [])
    grid = InProcessGrid(app, [{"partition-id": i} for i in range(len(sites))], first_node=first_node)
    run_federation(grid, settings)
    return grid, pd.read_csv(run_dir / "rounds.csv")


# the strategies with state carried between rounds (server momentum and moments, the proximal
# anchor) run two rounds end to end; FedAvg runs in every other test here, FedMedian in the privacy
# experiment's test, and every rule's arithmetic is checked by hand in test_strategies.py
STATEFUL = ("fedavgm", "fedadam", "fedprox")


@pytest.mark.parametrize("strategy", STATEFUL)
def test_strategies_run_end_to_end(fed_sites: list[Path], tmp_path: Path, strategy: str) -> None:
    grid, rounds = federate(fed_sites, tmp_path / strategy, strategy=strategy)
    assert rounds["round"].tolist() == [1, 2]
    with_arrays = [r.content for r in grid.sent if r.has_content() and r.content.array_records]
    assert with_arrays and all(is_packed(c) and len(c.array_records) == 1 for c in with_arrays)  # one blob each
    assert rounds["eval_loss"].notna().all() and (rounds["clients"] >= 2).all()
    checkpoint = load_checkpoint(tmp_path / strategy / "checkpoint")
    assert checkpoint.manifest["strategy"] == strategy and checkpoint.manifest["round"] == 2
    assert all(np.isfinite(w).all() for w in checkpoint.weights)
    assert (tmp_path / strategy / "checkpoints" / "round-001" / "manifest.json").exists()


def test_one_exchange_a_round_evaluates_every_round_as_two_exchanges_do(fed_sites: list[Path], tmp_path: Path) -> None:
    """Round r's evaluation rides on round r+1's training message; only the last round's model
    has an evaluate message of its own. Every round's evaluation is the one a run with an
    evaluate message a round gets (same seed, same models), and the site's time evaluating counts
    as local work in the round that carried it."""
    one, carried = federate(fed_sites, tmp_path / "one")
    two, separate = federate(fed_sites, tmp_path / "two", evaluate_with_training=False)

    def messages(grid: InProcessGrid) -> Counter:
        return Counter(reply.metadata.message_type for reply in grid.sent)

    assert messages(one)["train"] == messages(two)["train"] == 6  # 3 sites, 2 rounds
    assert messages(one)["evaluate"] == 3 and messages(two)["evaluate"] == 6
    for column in ("eval_loss", "eval_recall@10", "train_loss"):
        np.testing.assert_allclose(carried[column], separate[column], rtol=1e-5)
    assert (carried["slowest_eval_seconds"] > 0).all()
    second = carried.set_index("round").loc[2]  # its sites evaluated round 1's model, then trained
    assert second["local_seconds"] > second["slowest_train_seconds"]


def test_a_client_that_raises_does_not_stop_the_run(fed_sites: list[Path], tmp_path: Path) -> None:
    _, rounds = federate(fed_sites, tmp_path / "run", adversary="site-2:raise@2")
    assert rounds.set_index("round").loc[2, "failed"] == 1
    assert rounds.set_index("round").loc[2, "clients"] == 2
    assert rounds.set_index("round").loc[1, "failed"] == 0


def test_nan_weights_are_rejected_and_the_model_stays_finite(fed_sites: list[Path], tmp_path: Path) -> None:
    _, rounds = federate(fed_sites, tmp_path / "run", adversary="site-3:nan")
    assert (rounds["dropped"] == 1).all()
    assert all(np.isfinite(w).all() for w in load_checkpoint(tmp_path / "run" / "checkpoint").weights)


def test_scaled_update_is_dropped_by_the_norm_ratio(fed_sites: list[Path], tmp_path: Path) -> None:
    _, rounds = federate(fed_sites, tmp_path / "run", adversary="site-1:scale=50", num_server_rounds=1)
    assert rounds["dropped"].tolist() == [1]
    # the server's dashboard (RUN/tensorboard) says the same, per round and per site, and why
    events = tensorboard_events(tmp_path / "run" / "tensorboard")
    assert events["round/dropped"] == [(1, 1.0)] and events["round/clients"] == [(1, 2.0)]
    assert events["round/eval_recall@10"][0][1] == pytest.approx(rounds["eval_recall@10"][0], rel=1e-5)
    assert events["round/round_seconds"][0][1] > 0
    assert "median" in events["dropped"][0][1]  # the norm-ratio reason
    site_losses = [tag for tag in events if tag.startswith("site/node-") and tag.endswith("/train-loss")]
    assert len(site_losses) == 2  # the two sites whose updates were kept


def test_resume_after_a_kill_reaches_the_uninterrupted_weights(fed_sites: list[Path], tmp_path: Path) -> None:
    federate(fed_sites, tmp_path / "full", num_server_rounds=3, strategy="fedadam")
    # a kill while round 2's checkpoint was written (the disk filled up: its weights are torn), so
    # round 3 and the final checkpoint never were (the same seed gives the same first rounds, so a
    # copy of the full run stands in for the killed one)
    shutil.copytree(tmp_path / "full", tmp_path / "killed")
    for path in [tmp_path / "killed" / "checkpoints" / "round-003", tmp_path / "killed" / "checkpoint"]:
        shutil.rmtree(path)
    torn = tmp_path / "killed" / "checkpoints" / "round-002" / "weights.npz"
    torn.write_bytes(torn.read_bytes()[: torn.stat().st_size // 2])
    kept = {p: p.stat().st_mtime_ns for p in (tmp_path / "killed" / "checkpoints").glob("round-001/weights.npz")}
    # the restarted run's nodes have new ids, as in Flower's simulation engine: the weight caps of
    # the vocabulary round were keyed by the first run's node ids and dropped every update
    resumed_run = {"num_server_rounds": 3, "strategy": "fedadam", "resume": True, "first_node": 2000}
    _, rounds = federate(fed_sites, tmp_path / "killed", **resumed_run)
    assert rounds["round"].tolist() == [1, 2, 3] and rounds["clients"].tolist() == [3, 3, 3]
    assert len(kept) == 1 and {p: p.stat().st_mtime_ns for p in kept} == kept  # round 1 was not trained again
    assert (tmp_path / "killed" / "checkpoints" / "round-002.torn").exists()  # the torn round, moved aside
    full = load_checkpoint(tmp_path / "full" / "checkpoint")
    resumed = load_checkpoint(tmp_path / "killed" / "checkpoint")
    assert resumed.manifest["run_id"] == full.manifest["run_id"]
    assert resumed.manifest["rounds_trained"] == full.manifest["rounds_trained"] == [1, 2, 3]
    # carried over from round 1's checkpoint; only the Flower runs differ
    assert {**resumed.manifest["passport"], "flower_runs": []} == {**full.manifest["passport"], "flower_runs": []}
    for a, b in zip(full.weights, resumed.weights, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_a_run_in_which_every_site_refused_fails_and_says_so(fed_sites: list[Path], tmp_path: Path) -> None:
    """Every site's policy refuses the run (its epsilon is above their ceiling): the run once
    ended as a success with a signed, untrained checkpoint."""
    policy = tmp_path / "policy.toml"
    policy.write_text("max_run_epsilon = 1.0\n")
    settings = FederatedRunConfig(
        **TINY,
        dp_epsilon=8.0,
        num_server_rounds=2,
        run_dir=str(tmp_path / "run"),
        data_paths=",".join(map(str, fed_sites)),
    )
    nodes = [{"partition-id": i, "policy": str(policy), "state-dir": str(tmp_path / f"s{i}")} for i in range(3)]
    grid = InProcessGrid(make_client_app(settings.to_run_config()), nodes)
    with pytest.raises(RunIncomplete, match="trained 0 of 2 round"):
        run_federation(grid, settings)
    manifest = load_checkpoint(tmp_path / "run" / "checkpoint").manifest
    assert manifest["rounds_trained"] == []
    outcome = json.loads((tmp_path / "run" / "outcome.json").read_text())
    assert not outcome["complete"] and outcome["failed_rounds"] == [1, 2]
    assert all("epsilon is above" in f["reason"] for site in outcome["sites"] for f in site["failed"])
    assert pd.read_csv(tmp_path / "run" / "rounds.csv")["clients"].tolist() == [0, 0]


def test_a_site_that_leaves_after_the_vocabulary_round_missed_its_rounds(fed_sites: list[Path], tmp_path: Path) -> None:
    """A site that is down for a round sends nothing: the passport once said "failed: none"."""

    class LeavingSite(InProcessGrid):
        left = False

        def get_node_ids(self):
            return [n for n in super().get_node_ids() if not (self.left and n == 1002)]

        def push_messages(self, messages):
            messages = list(messages)
            pushed = super().push_messages(messages)
            self.left = self.left or any(m.metadata.message_type == "query.vocabulary" for m in messages)
            return pushed

    settings = FederatedRunConfig(
        **TINY,
        num_server_rounds=2,
        min_available_clients=2,
        run_dir=str(tmp_path / "run"),
        data_paths=",".join(map(str, fed_sites)),
    )
    grid = LeavingSite(make_client_app(settings.to_run_config()), [{"partition-id": i} for i in range(3)])
    run_federation(grid, settings)
    passport = load_checkpoint(tmp_path / "run" / "checkpoint").manifest["passport"]["sites"]
    missed = {name: site["rounds_missed"] for name, site in passport.items()}
    every = list(range(1, settings.num_server_rounds + 1))
    assert sorted(missed.values()) == [[], [], every]
    outcome = json.loads((tmp_path / "run" / "outcome.json").read_text())
    assert outcome["complete"] and f"missed rounds {', '.join(map(str, every))}" in outcome["summary"]


def test_starting_over_an_existing_run_needs_resume(fed_sites: list[Path], tmp_path: Path) -> None:
    federate(fed_sites, tmp_path / "run", num_server_rounds=1)
    # the final checkpoint has the central checkpoint's format exactly
    names = sorted(p.name for p in (tmp_path / "run" / "checkpoint").iterdir())
    assert names == ["config.json", "manifest.json", "vocabulary.json", "weights.npz"]
    assert load_checkpoint(tmp_path / "run" / "checkpoint").kind == "pretraining"
    with pytest.raises(ValueError, match="--resume"):
        federate(fed_sites, tmp_path / "run", num_server_rounds=1)


def test_clients_send_only_weights_metrics_and_k_anonymous_counts(fed_sites: list[Path], tmp_path: Path) -> None:
    k = 25
    grid, _ = federate(fed_sites, tmp_path / "run", k_anonymity=k, num_server_rounds=1)
    datasets = [read_meds(p) for p in fed_sites]
    subject_ids = set(np.concatenate([d.events["subject_id"].unique() for d in datasets]).tolist())
    shapes = [w.shape for w in load_checkpoint(tmp_path / "run" / "checkpoint").weights]
    released_keys = released()  # the one list of what leaves a site (shared_model.contract.messages)
    kinds = set()
    assert grid.sent
    assert all(OPTIMIZER_STATE not in state.array_records for state in grid.states.values())  # "reset" keeps none
    for reply in grid.sent:
        assert not reply.has_error()
        if is_packed(reply.content):  # besides the blob, the layout: array names, dtypes, shapes, sizes
            layout = json.loads(str(reply.content.config_records[LAYOUT]["layout"]))
            assert {entry[0] for entry in layout} == {"arrays"} and {entry[2] for entry in layout} == {"float32"}
        for name, record in unpack(reply.content).items():
            if isinstance(record, ArrayRecord):
                kinds.add("arrays")
                arrays = record.to_numpy_ndarrays()
                assert [a.shape for a in arrays] == shapes and all(a.dtype == np.float32 for a in arrays)
            elif isinstance(record, MetricRecord):
                kinds.add("metrics")
                allowed = set(released_keys[(reply.metadata.message_type, name)])
                assert set(record) <= allowed, set(record) - allowed
                assert all(isinstance(v, int | float) for v in record.values())
                assert not (set(record.values()) & subject_ids - {record.get("num-examples")})
            elif name == STATEMENT:  # the site's privacy statement: its settings and its DP accounting
                kinds.add("statement")
                assert set(record) == set(released_keys[(reply.metadata.message_type, STATEMENT)])
                assert set(json.loads(str(record["policy"]))) == {f.name for f in dataclasses.fields(SitePolicy)}
                assert not ({v for v in record.values() if isinstance(v, int)} & subject_ids)
            else:
                assert isinstance(record, ConfigRecord) and name == "vocabulary"
                kinds.add("counts")
                assert set(record) == set(released_keys[("query.vocabulary", "vocabulary")])
                assert min(record["counts"]) >= k
                _assert_counts_are_true_patient_counts(record, datasets, k)
    assert kinds == {"arrays", "metrics", "counts", "statement"}


def _assert_counts_are_true_patient_counts(record: ConfigRecord, datasets, k: int) -> None:
    """The reply is exactly one site's codes seen in >= k train patients, with their true counts;
    no string in it looks like a subject id or a timestamp."""
    texts = [*record["codes"], *record["parents"]]
    assert not any(t.isdigit() or ("T" in t and ":" in t) for t in texts)
    for ds in datasets:
        train = ds.splits.loc[ds.splits["split"] == "train", "subject_id"]
        events = ds.events[ds.events["subject_id"].isin(train) & ds.events["time"].notna()]
        per_code = events.drop_duplicates(["subject_id", "code"])["code"].astype(str).value_counts()
        markers = ("MEDS_BIRTH", "INDEX_DATE")  # birth and the tasks' index dates are no model inputs
        clinical = {
            c: n for c, n in per_code.items() if n >= k and not c.startswith(("VISIT/", "SEX/")) and c not in markers
        }
        if list(record["codes"]) == sorted(clinical):
            assert list(record["counts"]) == [clinical[c] for c in record["codes"]]
            return
    pytest.fail("reported codes match no site's k-anonymous code counts")


def test_kept_client_optimizer_state_stays_on_the_node_and_accumulates(fed_sites: list[Path], tmp_path: Path) -> None:
    grid, _ = federate(fed_sites, tmp_path / "keep", client_optimizer="keep")
    steps = []
    for state in grid.states.values():
        slots = state.array_records[OPTIMIZER_STATE].to_numpy_ndarrays()
        steps.append(int(slots[0]))  # the optimizer's step count
        assert any(np.abs(s).sum() > 0 for s in slots[1:])
    # two rounds of one local epoch: twice each site's batches per epoch
    vocabulary = load_checkpoint(tmp_path / "keep" / "checkpoint").vocabulary
    batches = [
        -(-len(task_arrays(read_meds(p), NEXT_VISIT, vocabulary)["train"]["subject_id"]) // 100) for p in fed_sites
    ]
    assert sorted(steps) == sorted(2 * b for b in batches)
    n_weights = len(load_checkpoint(tmp_path / "keep" / "checkpoint").weights)
    for reply in grid.sent:  # replies carry the weights only, never the optimizer's slots
        content = unpack(reply.content)
        assert set(content.keys()) <= {"arrays", "metrics", EVALUATION, "vocabulary", STATEMENT}
        if "arrays" in content:
            assert len(content["arrays"]) == n_weights
