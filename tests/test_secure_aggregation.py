"""SecAgg+ rounds (Flower's workflow and client mod) inside our ServerApp's run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shared_model.contract.checkpoint import load_checkpoint
from shared_model.contract.run_config import FederatedRunConfig
from shared_model.contract.wire import unpack
from tests.test_federation import federate


def _reply_arrays(grid) -> list[list[np.ndarray]]:
    out = []
    for message in grid.sent:
        if not message.has_error():
            records = unpack(message.content).array_records.values()  # as the site sent them
            out += [record.to_numpy_ndarrays() for record in records if len(record)]
    return out


def test_the_server_gets_the_average_but_never_a_sites_model(fed_sites: list[Path], tmp_path: Path) -> None:
    plain_grid, _ = federate(fed_sites, tmp_path / "plain", num_server_rounds=1)
    site_models = _reply_arrays(plain_grid)
    assert len(site_models) == 3
    secure_grid, rounds = federate(fed_sites, tmp_path / "secure", num_server_rounds=1, secure_aggregation=True)
    assert rounds["clients"].tolist() == [3] and rounds["failed"].tolist() == [0]
    aggregate = load_checkpoint(tmp_path / "secure" / "checkpoint").weights
    expected = [np.mean(layers, axis=0) for layers in zip(*site_models, strict=True)]  # sites weighted equally
    for got, want in zip(aggregate, expected, strict=True):
        np.testing.assert_allclose(got, want, atol=5e-5)
    # what the sites sent: key material and masked vectors, never their model
    for arrays in _reply_arrays(secure_grid):
        for model in site_models:
            assert not any(
                a.shape == m.shape and np.allclose(a, m, atol=1e-3) for a, m in zip(arrays, model, strict=True)
            )


def test_secure_aggregation_refuses_what_needs_individual_updates() -> None:
    with pytest.raises(ValueError, match="secure-aggregation"):
        FederatedRunConfig(secure_aggregation=True, strategy="fedmedian")
    with pytest.raises(ValueError, match="secure-aggregation"):
        FederatedRunConfig(secure_aggregation=True, client_dp_noise=1.0)
