"""The aggregation rules do what their names say, against values computed by hand here, and the
update validation the sites rely on holds at small consortia."""

from __future__ import annotations

from uuid import uuid4

import numpy as np
import pytest
from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict

from server.strategies import STRATEGY_FACTORIES, build_strategy
from shared_model.contract.run_config import STRATEGIES, FederatedRunConfig
from tests.inprocess_grid import InProcessGrid

GLOBAL = [np.zeros(4, np.float32), np.zeros((2, 2), np.float32)]


def replies(updates: list[list[np.ndarray]], examples: list[int]) -> list[Message]:
    """Train replies from nodes 1000, 1001, ... carrying `updates` and `num-examples`."""
    InProcessGrid(None, [])  # stamps Flower's task identity, as a transport would
    out = []
    for node, (arrays, n) in enumerate(zip(updates, examples, strict=True), start=1000):
        instruction = Message(RecordDict(), dst_node_id=node, message_type="train")
        instruction.metadata.__dict__["_message_id"] = str(uuid4())
        content = RecordDict(
            {
                "arrays": ArrayRecord([np.asarray(a, np.float32) for a in arrays]),
                "metrics": MetricRecord({"num-examples": n, "site-key": node, "train-seconds": 1.0}),
            }
        )
        out.append(Message(content, reply_to=instruction))
    return out


def aggregate(strategy_name: str, updates, examples=None, **options) -> list[np.ndarray] | None:
    settings = FederatedRunConfig(
        strategy=strategy_name, min_available_clients=len(updates), max_norm_ratio=0.0, **options
    )
    strategy = build_strategy(settings)
    strategy.current_arrays = GLOBAL
    arrays, _ = strategy.aggregate_train(1, replies(updates, examples or [10] * len(updates)))
    return None if arrays is None else arrays.to_numpy_ndarrays()


def update(value: float, scale: float = 1.0) -> list[np.ndarray]:
    return [np.arange(4, dtype=np.float32) * scale + value, np.full((2, 2), value, np.float32)]


def test_every_strategy_the_run_config_offers_has_a_factory_and_nothing_else_does() -> None:
    assert list(STRATEGY_FACTORIES) == list(STRATEGIES)
    for name in STRATEGIES:  # each builds the Flower class of its name (a copy-paste slip would not)
        built = build_strategy(FederatedRunConfig(strategy=name, min_available_clients=5)).strategy
        assert type(built).__name__.lower().startswith(name)


def test_fedavg_weights_by_examples() -> None:
    got = aggregate("fedavg", [update(1.0), update(4.0)], [30, 10])
    np.testing.assert_allclose(got[1], np.full((2, 2), (30 * 1.0 + 10 * 4.0) / 40), rtol=1e-6)


def test_fedmedian_is_the_coordinate_wise_median() -> None:
    updates = [update(1.0), update(2.0, scale=3.0), update(10.0, scale=-1.0)]
    got = aggregate("fedmedian", updates)
    for index in range(2):
        np.testing.assert_allclose(got[index], np.median(np.stack([u[index] for u in updates]), axis=0))


@pytest.mark.parametrize("n", [3, 4, 6])
def test_fedtrimmedavg_trims_at_least_one_update_per_side(n: int) -> None:
    rng = np.random.default_rng(n)
    updates = [[rng.normal(size=4), rng.normal(size=(2, 2))] for _ in range(n)]
    updates[0] = [u * 10 for u in updates[0]]  # one attacker sending 10x-scaled updates
    got = aggregate("fedtrimmedavg", updates, trimmed_beta=0.2)  # Flower's beta 0.2 alone trims none of 3 or 4
    for index in range(2):
        ordered = np.sort(np.stack([u[index] for u in updates]), axis=0)
        np.testing.assert_allclose(got[index], ordered[1:-1].mean(axis=0), rtol=1e-5, atol=1e-6)


def _krum_scores(updates: list[list[np.ndarray]], attackers: int = 1) -> np.ndarray:
    flat = np.stack([np.concatenate([a.ravel() for a in u]) for u in updates]).astype(np.float64)
    distances = ((flat[:, None, :] - flat[None, :, :]) ** 2).sum(axis=2)
    closest = len(updates) - attackers - 2
    return np.array([np.sort(row)[1 : closest + 1].sum() for row in distances])


def test_krum_picks_the_update_closest_to_its_neighbours_and_multikrum_averages_the_best() -> None:
    rng = np.random.default_rng(7)
    updates = [update(float(v), scale=0.1) for v in rng.normal(size=4)] + [update(50.0)]  # one far-off attacker
    scores = _krum_scores(updates)
    got = aggregate("krum", updates)
    np.testing.assert_allclose(got[0], updates[int(np.argmin(scores))][0], rtol=1e-6)
    chosen = np.argsort(scores)[:4]  # MultiKrum keeps n - 1; all weights equal here
    got = aggregate("multikrum", updates)
    np.testing.assert_allclose(got[1], np.mean([updates[i][1] for i in chosen], axis=0), rtol=1e-5)
    assert 4 not in chosen


def test_krum_and_trimmed_mean_refuse_consortia_too_small_to_mean_anything() -> None:
    for name, sites in (("krum", 3), ("multikrum", 4), ("fedtrimmedavg", 2)):
        with pytest.raises(ValueError, match=name):
            FederatedRunConfig(strategy=name, min_available_clients=sites)
    # and a round with fewer valid updates than that keeps the global model
    settings = FederatedRunConfig(strategy="krum", min_available_clients=5, max_norm_ratio=0.0)
    strategy = build_strategy(settings)
    strategy.current_arrays = GLOBAL
    assert strategy.aggregate_train(1, replies([update(1.0), update(2.0), update(3.0)], [10] * 3)) == (None, None)


def test_fedprox_adds_the_proximal_term_to_the_local_loss() -> None:
    from client.local import trainable_part
    from shared_model.model.config import ClaimTransformerConfig
    from shared_model.model.objectives import ProximalTerm
    from shared_model.model.transformer import PretrainingModel

    config = ClaimTransformerConfig(vocab_size=12, n_groups=3, d_model=8, patient_dim=8, ffn_dim=8)
    model = PretrainingModel(config)
    rng = np.random.default_rng(0)
    batch = {
        "codes": rng.integers(0, 12, (2, 30, 10)).astype(np.int32),
        "visit_type": np.full((2, 30), 3, np.int8),
        "date_index": np.ones((2, 30), np.int16),
        "days_before": np.ones((2, 30), np.int32),
        "age_days": np.ones((2, 30), np.int32),
        "demo": np.ones((2, 2), np.int8),
    }
    targets = {
        "target_groups": np.array([[0, -1], [2, 1]], np.int16),
        "visit_groups": rng.integers(-1, 3, (2, 30, 2)).astype(np.int16),
    }
    predictions = model(batch, training=True)
    plain = float(model.compute_loss(batch, targets, predictions, training=True))
    anchor = [w + 0.5 for w in model.get_weights()]
    model.proximal = ProximalTerm(model.trainable_variables)
    model.proximal.anchor_at(trainable_part(model, anchor), mu=0.3)
    distance = sum(
        float(np.sum((np.asarray(v) - a) ** 2))
        for v, a in zip(
            model.trainable_variables, [anchor[i] for i, v in enumerate(model.weights) if v.trainable], strict=True
        )
    )
    with_prox = float(model.compute_loss(batch, targets, predictions, training=True))
    assert with_prox == pytest.approx(plain + 0.3 / 2 * distance, rel=1e-4)


def test_the_norm_ratio_check_works_with_two_sites() -> None:
    settings = FederatedRunConfig(strategy="fedavg", min_available_clients=2, max_norm_ratio=5.0)
    strategy = build_strategy(settings)
    strategy.current_arrays = GLOBAL
    arrays, _ = strategy.aggregate_train(1, replies([update(1.0), update(1.0, scale=10)], [10, 10]))
    honest_only = aggregate("fedavg", [update(1.0)])
    assert strategy.reports[1].dropped and [n for n, _ in strategy.reports[1].dropped] == [1001]
    np.testing.assert_allclose(arrays.to_numpy_ndarrays()[0], honest_only[0])
