"""Pretrained checkpoints for the grid, cached by content: the key hashes the data files of the
pretraining sites and every setting that changes the weights, so a rerun (or another experiment
in the same directory) reuses a checkpoint exactly when it would be rebuilt identically."""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, fields
from pathlib import Path

from shared_model.contract.checkpoint import Checkpoint, load_checkpoint
from shared_model.contract.run_config import FederatedRunConfig
from shared_model.model.config import ClaimTransformerConfig
from shared_model.settings import PretrainSettings, VocabularySettings
from shared_model.training.central import run_central_pretraining
from simulations.experiments.common import FederatedRunner, content_digest, default_federated_runner, site_fingerprint
from simulations.experiments.transfer.grid import Run, TransferConfig

log = logging.getLogger(__name__)
CENTRAL_BATCH_SIZE = PretrainSettings().batch_size  # Claim-PT: 100
CLAIM_PT_TIME_ENCODING = next(f.default for f in fields(ClaimTransformerConfig) if f.name == "time_encoding")


@dataclass(frozen=True)
class Pretraining:
    """One pretraining job: `kind` is central (also used for a single site) or federated."""

    kind: str
    sites: tuple[str, ...]
    epochs: int
    seed: int
    strategy: str
    k_anonymity: int
    client_optimizer: str = "reset"
    federated_batch_size: int = 0  # 0: ceil(central batch / sites), as many sequential steps as central
    time_encoding: str = CLAIM_PT_TIME_ENCODING
    precision: str = "float32"

    @property
    def local_batch_size(self) -> int:
        return self.federated_batch_size or -(-CENTRAL_BATCH_SIZE // len(self.sites))

    def key(self, fingerprints: dict[str, str]) -> str:
        content = {
            "kind": self.kind,
            "data": [fingerprints[s] for s in sorted(self.sites)],
            "epochs": self.epochs,
            "seed": self.seed,
            "k": self.k_anonymity,
            "strategy": self.strategy if self.kind == "federated" else None,
        }
        # a setting at its default stays out of the key: adding a setting keeps every cache built before it
        if self.kind == "federated" and self.client_optimizer != "reset":
            content["client_optimizer"] = self.client_optimizer
        if self.kind == "federated" and self.local_batch_size != CENTRAL_BATCH_SIZE:
            content["federated_batch_size"] = self.local_batch_size
        if self.time_encoding != CLAIM_PT_TIME_ENCODING:
            content["time_encoding"] = self.time_encoding
        if self.precision != "float32":
            content["precision"] = self.precision
        return f"{self.kind}-{'+'.join(self.sites)}-{content_digest(content)}"


class CheckpointCache:
    """Builds each pretraining once under `root/<key>/` and hands out the loaded checkpoint."""

    def __init__(
        self,
        root: Path,
        site_dirs: dict[str, Path],
        *,
        parallel_clients: int = 1,
        federated_runner: FederatedRunner = default_federated_runner,
    ) -> None:
        self.root = Path(root)
        self.site_dirs = site_dirs
        self.parallel_clients = parallel_clients
        self.federated_runner = federated_runner
        self.fingerprints = {name: site_fingerprint(path) for name, path in site_dirs.items()}
        self._loaded: dict[str, Checkpoint] = {}

    def directory(self, job: Pretraining) -> Path:
        return self.root / job.key(self.fingerprints)

    def built(self, job: Pretraining) -> bool:
        return (self.directory(job) / "checkpoint" / "manifest.json").exists()

    def get(self, job: Pretraining) -> Checkpoint:
        run_dir = self.directory(job)
        if run_dir.name not in self._loaded:
            if not self.built(job):
                self._build(job, run_dir)
            self._loaded[run_dir.name] = load_checkpoint(run_dir / "checkpoint")
        return self._loaded[run_dir.name]

    def _build(self, job: Pretraining, run_dir: Path) -> None:
        dirs = [self.site_dirs[s] for s in job.sites]
        log.info(
            "pretraining %s on %s (%d %s)",
            job.kind,
            ", ".join(job.sites),
            job.epochs,
            "rounds" if job.kind == "federated" else "epochs",
        )
        if job.kind == "federated":
            settings = FederatedRunConfig(
                num_server_rounds=job.epochs,
                local_epochs=1,
                seed=job.seed,
                k_anonymity=job.k_anonymity,
                strategy=job.strategy,
                client_optimizer=job.client_optimizer,
                batch_size=job.local_batch_size,
                time_encoding=job.time_encoding,
                precision=job.precision,
                run_dir=str(run_dir),
                resume=(run_dir / "checkpoints").exists(),
                min_available_clients=len(dirs),
            )
            self.federated_runner(dirs, settings, self.parallel_clients)
        else:
            shutil.rmtree(run_dir, ignore_errors=True)  # an interrupted central run restarts cleanly
            run_central_pretraining(
                dirs,
                run_dir,
                vocabulary_settings=VocabularySettings(min_count=job.k_anonymity),
                settings=PretrainSettings(
                    epochs=job.epochs, patience=job.epochs, seed=job.seed, precision=job.precision
                ),
                model_options={"time_encoding": job.time_encoding},
            )


def pretraining_job(run: Run, config: TransferConfig) -> Pretraining | None:
    """The pretraining a run fine-tunes from (None for scratch and the count-feature baselines)."""
    if not run.pretraining:
        return None
    kind = "federated" if run.mode.startswith("federated") else "central"
    return Pretraining(
        kind,
        run.pretraining,
        config.pretrain_epochs,
        config.pretrain_seed,
        config.strategy,
        config.k_anonymity,
        config.client_optimizer,
        config.federated_batch_size,
        config.time_encoding,
        config.precision,
    )
