"""What a site reaches alone: the AUROC of a task's model trained from scratch on the site's own
labelled cohort and scored on its own held-out split, the mean over a few seeds.

The transfer advisor's site-level signal: how much partners can add depends first on how much a
site already learns alone. A site computes it itself, from nothing but its own data, and releases
it in its summary (shared_model/site_summary.py) only to 0.01 and only when its held-out split
holds at least k positives and k negatives. The recipe is the predictor's (it was fitted on
values measured exactly this way), so a site measures what the predictor expects."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from shared_model.config import ClaimTransformerConfig
from shared_model.data import MedsDataset
from shared_model.finetuning import finetune_and_score
from shared_model.site_summary import PRECISION, labelled_and_positive
from shared_model.tasks import split_subjects
from shared_model.training import FinetuneSettings

#: bounds a recipe must keep, whoever sends it: a request beyond them is a mistake or an attempt
#: to spend the site's machine
MAX_SEEDS, MAX_EPOCHS, MAX_COHORT = 32, 200, 100_000


@dataclass(frozen=True)
class OwnAurocRecipe:
    """How a site measures its own AUROC: `cohort_size` labelled train patients, the default
    transformer (with `time_encoding`) from scratch for at most `epochs`, one run per seed of
    `seeds`. The advisor experiment's config writes it (`AdvisorConfig.own_auroc_recipe`)."""

    cohort_size: int
    epochs: int
    seeds: tuple[int, ...]
    time_encoding: str

    def __post_init__(self) -> None:
        ok = (
            20 <= self.cohort_size <= MAX_COHORT
            and 1 <= self.epochs <= MAX_EPOCHS
            and 1 <= len(self.seeds) <= MAX_SEEDS
            and len(set(self.seeds)) == len(self.seeds)
            and all(isinstance(s, int) and s >= 0 for s in self.seeds)
        )
        if not ok:
            raise ValueError(
                f"an own-AUROC recipe needs 20 <= cohort_size <= {MAX_COHORT}, 1 <= epochs <= {MAX_EPOCHS} "
                f"and 1 to {MAX_SEEDS} distinct seeds >= 0"
            )
        ClaimTransformerConfig(vocab_size=3, n_groups=1, time_encoding=self.time_encoding)  # validates it

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "seeds": list(self.seeds)}

    @classmethod
    def from_dict(cls, data: Any) -> OwnAurocRecipe:
        """A recipe from JSON-like data; anything else is refused with ValueError."""
        if not isinstance(data, dict) or set(data) != {"cohort_size", "epochs", "seeds", "time_encoding"}:
            raise ValueError("an own-AUROC recipe gives cohort_size, epochs, seeds and time_encoding")
        numbers = [data["cohort_size"], data["epochs"], *(data["seeds"] if isinstance(data["seeds"], list) else [None])]
        if any(isinstance(n, bool) or not isinstance(n, int) for n in numbers):
            raise ValueError("an own-AUROC recipe's cohort_size, epochs and seeds are integers")
        return cls(data["cohort_size"], data["epochs"], tuple(data["seeds"]), str(data["time_encoding"]))


def scratch_auroc(dataset: MedsDataset, task: str, recipe: OwnAurocRecipe, seed: int) -> float:
    """One seed's AUROC, trained from scratch on the site's cohort and scored on its held-out
    split (NaN when that split holds one class only)."""
    outcome = finetune_and_score(
        dataset,
        task,
        train_size=recipe.cohort_size,
        seed=seed,
        settings=FinetuneSettings(seed=seed, epochs=recipe.epochs, guard=False),
        model_config=ClaimTransformerConfig(vocab_size=3, n_groups=1, time_encoding=recipe.time_encoding),
    )
    return float(outcome.record["auroc"])


def held_out_label_counts(dataset: MedsDataset, task: str) -> tuple[int, int]:
    """(positives, negatives) among the held-out split's labelled patients of `task`."""
    labelled, positive = labelled_and_positive(dataset, task, split_subjects(dataset, "held_out"))
    return positive, labelled - positive


def released_own_auroc(aurocs: list[float], positives: int, negatives: int, k: int) -> float | None:
    """The value a site releases: the mean of its seeds' AUROCs to 0.01, or None when its held-out
    split has fewer than k positives or k negatives (or no seed gave an AUROC)."""
    known = [a for a in aurocs if not np.isnan(a)]
    if min(positives, negatives) < k or not known:
        return None
    return round(float(np.mean(known)), PRECISION)


def measure_own_auroc(dataset: MedsDataset, task: str, recipe: OwnAurocRecipe, k: int) -> float | None:
    """What the site releases about `task` (None: nothing), measured by `recipe`."""
    if task not in dataset.labels:
        return None
    positives, negatives = held_out_label_counts(dataset, task)
    if min(positives, negatives) < k:  # not released: no need to train
        return None
    return released_own_auroc([scratch_auroc(dataset, task, recipe, s) for s in recipe.seeds], positives, negatives, k)
