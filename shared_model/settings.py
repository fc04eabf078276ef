"""The training settings (frozen dataclasses, no TensorFlow import, so the command line can build
its options from them cheaply) and `setting`, a field that carries its own help text."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

ADAPTATIONS = ("probe", "probe-then-finetune", "finetune")
MODELS = ("transformer", "logreg", "gbm")  # the transformer, or a count-feature baseline


def setting(default: Any, help: str) -> Any:
    """A config field with its help text, from which the command line makes its option
    (shared_model.runtime.options)."""
    return dataclasses.field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class VocabularySettings:
    """Which codes the model embeds and which code groups it learns to predict in pretraining
    (shared_model.vocabulary)."""

    min_count: int = setting(1, "Keep codes seen in at least this many training patients.")
    max_vocab: int = setting(0, "Keep at most this many codes, most frequent first (0: every code).")
    target_vocabularies: str = setting(
        "ICD10CM",
        "Coding systems whose code groups are the pretraining targets, separated by commas; patterns "
        "match too (D* for every code starting with D); * for every system but event markers (also "
        "the fallback when none is in the data).",
    )
    max_groups: int = setting(1000, "Keep at most this many target groups, most frequent first.")

    def __post_init__(self) -> None:
        if self.min_count < 1 or self.max_vocab < 0 or self.max_groups < 1:
            raise ValueError("min-count and max-groups must be >= 1, max-vocab >= 0")
        systems = self.target_systems
        if not all(systems) or any("/" in s for s in systems):
            raise ValueError(
                "target-vocabularies must be coding systems separated by commas (or *), "
                f"got {self.target_vocabularies!r}"
            )

    @property
    def target_systems(self) -> tuple[str, ...]:
        return tuple(s.strip() for s in self.target_vocabularies.split(","))


@dataclass(frozen=True)
class PretrainSettings:
    epochs: int = setting(10, "Maximum passes over the pooled training data.")
    batch_size: int = setting(100, "Patients per step (Claim-PT: 100).")
    learning_rate: float = setting(1e-3, "RMSprop learning rate (Claim-PT: 1e-3).")
    patience: int = setting(2, "Early stopping: epochs without tuning-loss improvement.")
    seed: int = setting(0, "Random seed (initialisation and batch order).")

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.patience < 1 or self.learning_rate <= 0:
            raise ValueError("epochs, batch-size and patience must be >= 1 and learning-rate > 0")


@dataclass(frozen=True)
class FinetuneSettings:
    """How a pretrained encoder is adapted to a task (`adaptation`):

    - "probe": fit only the task head on the frozen encoder (L2 logistic regression for binary
      tasks, `probe_epochs` of Adam otherwise);
    - "probe-then-finetune": the probe, then all layers with layer-wise learning-rate decay,
      keeping whichever scores better on the tuning cohort;
    - "finetune": Claim-PT's recipe, all layers with Adam 1e-4 from a fresh head.

    Models trained from scratch always train all layers ("finetune")."""

    adaptation: str = setting(
        "probe",
        "With a checkpoint: probe (head only on the frozen encoder), "
        "probe-then-finetune, or finetune (Claim-PT: all layers).",
    )
    epochs: int = setting(40, "Maximum epochs of training all layers (early stopping on the tuning cohort).")
    batch_size: int = setting(32, "Patients per step.")
    learning_rate: float = setting(1e-4, "Adam learning rate of the task head (Claim-PT: 1e-4).")
    layer_decay: float = setting(0.8, "Learning-rate factor per layer below the head (1: uniform).")
    gradual_unfreeze: bool = setting(False, "Unfreeze one more layer group per epoch, head first.")
    patience: int = setting(4, "Early stopping patience in epochs.")
    seed: int = setting(0, "Random seed (cohort draw, initialisation, batch order).")
    probe_epochs: int = setting(
        40, "Adam epochs of the head-only phase for next_visit (binary tasks use logistic regression)."
    )
    probe_learning_rate: float = setting(1e-3, "Adam learning rate of the head-only phase.")

    def __post_init__(self) -> None:
        if self.adaptation not in ADAPTATIONS:
            raise ValueError(f"adaptation must be one of {ADAPTATIONS}, got {self.adaptation!r}")
        if not 0.0 <= self.layer_decay <= 1.0:
            raise ValueError(f"layer-decay must be in [0, 1], got {self.layer_decay}")
        if min(self.epochs, self.batch_size, self.patience, self.probe_epochs) < 1:
            raise ValueError("epochs, batch-size, patience and probe-epochs must be >= 1")
