"""The checkpoints of a federated run: one after every round (`RUN/checkpoints/round-NNN/`: the
model, the strategy's state and the signed manifest with the run, the round and the passport so
far), and the newest intact one a resumed run starts from."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from server.passport import PassportRecorder
from server.strategies import client_level_epsilon
from shared_model.contract.checkpoint import Checkpoint, CheckpointError, load_checkpoint
from shared_model.contract.passport import MANIFEST_KEY as PASSPORT_KEY
from shared_model.contract.run_config import FederatedRunConfig

log = logging.getLogger(__name__)
STATE_FILE = "strategy_state.npz"


def round_dir(run_dir: Path, server_round: int) -> Path:
    return run_dir / "checkpoints" / f"round-{server_round:03d}"


def latest_round(run_dir: Path) -> int:
    """The last round whose checkpoint is complete (0 if none)."""
    return max(_checkpointed_rounds(run_dir), default=0)


def _checkpointed_rounds(run_dir: Path) -> list[int]:
    return sorted(
        int(path.name[6:])
        for path in (run_dir / "checkpoints").glob("round-*")
        if path.name[6:].isdigit() and (path / "manifest.json").exists()
    )


def last_intact_round(run_dir: Path) -> tuple[int, Checkpoint | None]:
    """The newest round checkpoint whose every hash verifies; newer, torn ones (a crash or a full
    disk while writing) are moved aside as `round-NNN.torn` and logged."""
    for server_round in reversed(_checkpointed_rounds(run_dir)):
        try:
            return server_round, load_checkpoint(round_dir(run_dir, server_round))
        except (CheckpointError, OSError, ValueError) as exc:
            torn = round_dir(run_dir, server_round)
            log.warning(
                "round %d's checkpoint is damaged (%s): moved to %s.torn, resuming from an earlier round",
                server_round,
                exc,
                torn.name,
            )
            shutil.rmtree(torn.with_name(torn.name + ".torn"), ignore_errors=True)
            torn.rename(torn.with_name(torn.name + ".torn"))
    return 0, None


def manifest_extra(
    settings: FederatedRunConfig, server_round: int, run_id: str, passport: PassportRecorder, trained: list[int]
) -> dict[str, Any]:
    """Signed with the manifest: which run and round this is (a site refuses rollbacks by them),
    the rounds that trained (a round no site's update reached keeps the previous model; who
    trained each is in the passport), and the privacy passport of the rounds so far."""
    return {
        PASSPORT_KEY: passport.document(server_round, client_level_epsilon(settings, server_round)).to_dict(),
        "mode": "federated",
        "run_id": run_id,
        "round": server_round,
        "rounds_trained": list(trained),
        "strategy": settings.strategy,
        "seed": settings.seed,
        "precision": settings.precision,
        "local_epochs": settings.local_epochs,
        "k_anonymity": settings.k_anonymity,
        "dp_epsilon": settings.dp_epsilon,
        "client_dp_noise": settings.client_dp_noise,
        "secure_aggregation": settings.secure_aggregation,
    }
