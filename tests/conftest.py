"""Shared fixtures: small generated data only, so the suite stays fast."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, settings

from shared_model.data.meds import assign_splits, write_meds

# property tests: 200 examples each in the suite; `HYPOTHESIS_PROFILE=bulk pytest ...` runs 2,000 each
settings.register_profile("suite", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("bulk", parent=settings.get_profile("suite"), max_examples=2_000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "suite"))


@pytest.fixture(scope="session")
def small_sites(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three synthetic sites of different sizes (seed 11)."""
    from simulations.synth import synthesize

    return synthesize(tmp_path_factory.mktemp("sites"), [1500, 1000, 800], seed=11)


@pytest.fixture(scope="session")
def fed_sites(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three small synthetic sites for federated tests (seed 13)."""
    from simulations.synth import synthesize

    return synthesize(tmp_path_factory.mktemp("fed_sites"), [400, 300, 300], seed=13)


def tiny_events() -> pd.DataFrame:
    """Two subjects with birth, sex and a few visits, as a producer would hand them to write_meds."""
    t = lambda s: np.datetime64(s, "us")  # noqa: E731
    rows = [
        (1, None, "SEX/F"),
        (1, t("2010-01-01"), "MEDS_BIRTH"),
        (1, t("2015-03-01"), "VISIT/OP"),
        (1, t("2015-03-01"), "ICD10CM/J45.909"),
        (1, t("2016-05-02"), "CPT/99213"),
        (2, None, "SEX/M"),
        (2, t("2012-06-01"), "MEDS_BIRTH"),
        (2, t("2016-01-10"), "VISIT/ER"),
        (2, t("2016-01-10"), "ICD10CM/J21.9"),
        (2, t("2017-02-02"), "RXNORM/745679"),
    ]
    frame = pd.DataFrame(rows, columns=["subject_id", "time", "code"])
    frame["time"] = pd.to_datetime(frame["time"]).astype("datetime64[us]")
    frame["numeric_value"] = np.float32(np.nan)
    return frame


def tiny_labels() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "subject_id": [1, 2],
            "prediction_time": pd.to_datetime(["2016-01-01", "2016-06-01"]).astype("datetime64[us]"),
            "boolean_value": [True, False],
        }
    )


@pytest.fixture
def tiny_meds(tmp_path: Path) -> Path:
    events = tiny_events()
    return write_meds(
        tmp_path / "tiny",
        events,
        assign_splits(np.array([1, 2])),
        labels={"asthma": tiny_labels()},
        metadata={"dataset_name": "tiny"},
    )


#: the longest test files (minutes each on 2 cores), started first so that `make test`'s two
#: xdist workers (one file at a time each) do not end with one of them alone on a long file
LONGEST_FIRST = (
    "test_deployment.py",
    "test_transfer.py",
    "test_federation.py",
    "test_advisor.py",
    "test_privacy_experiment.py",
    "test_privacy.py",
    "test_federated_privacy.py",
    "test_simulation_engine.py",
    "test_pretrain_finetune.py",
    "test_hostile_server.py",
    "test_passport.py",
    "test_any_meds.py",
    "test_model.py",
    "test_damaged_inputs.py",
    "test_cli_bad_args.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        name = item.path.name
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: the order within each file is kept


def tensorboard_events(log_dir: Path) -> dict[str, list[tuple[int, object]]]:
    """Every tag of the TensorBoard event files in `log_dir`: [(step, value)], read back with
    TensorBoard's own reader (scalars as floats, text as str)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util.tensor_util import make_ndarray

    events = EventAccumulator(str(log_dir), size_guidance={"tensors": 0})
    events.Reload()
    found: dict[str, list[tuple[int, object]]] = {}
    for tag in events.Tags()["tensors"]:
        for event in events.Tensors(tag):
            value = make_ndarray(event.tensor_proto).item()
            found.setdefault(tag, []).append((event.step, value.decode() if isinstance(value, bytes) else float(value)))
    return found
