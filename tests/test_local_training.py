"""A site's round of local training on its long-lived model (client.local): the same round gives
the same weights whatever the process trained or seeded before it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from client.local import site_samples, train_locally
from shared_model.contract.run_config import FederatedRunConfig
from shared_model.data import read_meds
from shared_model.model.config import ClaimTransformerConfig
from shared_model.model.transformer import PretrainingModel
from shared_model.settings import SettingError
from shared_model.tensors.tasks import training_vocabulary


def test_a_round_trains_the_same_whatever_ran_before_it_in_the_process(fed_sites: list[Path]) -> None:
    site = fed_sites[2]
    vocabulary = training_vocabulary([read_meds(site)])
    config = ClaimTransformerConfig(
        vocab_size=vocabulary.size, n_groups=vocabulary.n_groups, d_model=16, patient_dim=16, ffn_dim=16, dropout=0.3
    )
    weights = [np.asarray(w) for w in PretrainingModel(config).get_weights()]
    samples = site_samples(str(site), vocabulary.to_json(), 5)

    def round_weights(server_round: int) -> list[np.ndarray]:
        options = {"epochs": 1, "batch_size": 64, "learning_rate": 1e-3, "seed": 0, "key": 3}
        return train_locally(weights, config, samples, server_round=server_round, **options).weights

    first, second = round_weights(1), round_weights(2)
    again = round_weights(1)  # after another round: the dropout masks and the data order start over
    tf.random.set_seed(123)  # and after anything else in the process seeded TensorFlow
    once_more = round_weights(1)
    for a, b, c in zip(first, again, once_more, strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)
    assert any(not np.array_equal(a, b) for a, b in zip(first, second, strict=True))


def small_model_and_site(site: Path) -> tuple[ClaimTransformerConfig, list[np.ndarray], dict]:
    """A small model's config and initial weights, and a site's samples."""
    vocabulary = training_vocabulary([read_meds(site)])
    config = ClaimTransformerConfig(
        vocab_size=vocabulary.size, n_groups=vocabulary.n_groups, d_model=16, patient_dim=16, ffn_dim=16
    )
    weights = [np.asarray(w) for w in PretrainingModel(config).get_weights()]
    return config, weights, site_samples(str(site), vocabulary.to_json(), 5)


def test_fedprox_binds_a_round_also_after_rounds_without_it_in_the_process(fed_sites: list[Path]) -> None:
    """A long-lived site worker may train a FedAvg run, then a FedProx run: its compiled step must
    take up the proximal term (a strong term keeps the weights near the global ones)."""
    config, weights, samples = small_model_and_site(fed_sites[2])
    options = {"epochs": 1, "batch_size": 64, "learning_rate": 1e-2, "seed": 0, "key": 3, "server_round": 1}

    def moved(proximal_mu: float) -> float:
        trained = train_locally(weights, config, samples, proximal_mu=proximal_mu, **options).weights
        return sum(float(np.sum((a - b) ** 2)) for a, b in zip(trained, weights, strict=True))

    free = moved(0.0)
    # unbound, the term changes nothing (a ratio near 1); bound, RMSprop's normalised steps still
    # jitter around the anchor (about 2% of the free movement since the heads start at their prior)
    assert moved(1e4) < free / 10


def test_a_round_trains_in_the_precision_its_run_config_names(fed_sites: list[Path]) -> None:
    """The run config names one precision for every site (never `auto`, which each site's hardware
    would decide); the site's weights stay float32 and move as in float32, to bfloat16's rounding."""
    with pytest.raises(SettingError, match="precision"):
        FederatedRunConfig.from_run_config({"precision": "auto"})
    config, weights, samples = small_model_and_site(fed_sites[2])
    options = {"epochs": 1, "batch_size": 64, "learning_rate": 1e-3, "seed": 0, "key": 3, "server_round": 1}
    trained = {
        precision: train_locally(weights, config, samples, precision=precision, **options).weights
        for precision in ("float32", "bfloat16")
    }
    assert {w.dtype for w in trained["bfloat16"]} == {np.dtype(np.float32)}

    def distance(a: list[np.ndarray], b: list[np.ndarray]) -> float:
        return float(np.sqrt(sum(np.sum((x - y) ** 2) for x, y in zip(a, b, strict=True))))

    apart = distance(trained["float32"], trained["bfloat16"])
    assert 0 < apart < 0.2 * distance(trained["float32"], weights)
