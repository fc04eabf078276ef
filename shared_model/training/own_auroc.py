"""What a site reaches alone: the AUROC of a task's model trained from scratch on the site's own
labelled cohort and scored on its own held-out split, the mean over a few seeds.

The transfer advisor's site-level signal: how much partners can add depends first on how much a
site already learns alone. A site computes it itself, from nothing but its own data, and releases
it in its summary (shared_model/contract/site_summary.py) only to 0.01 and only when its held-out split
holds at least k positives and k negatives. The recipe is the predictor's (it was fitted on
values measured exactly this way; its four fields are `site_summary.OwnAurocRecipe`, a module
without TensorFlow that the coordinator reads too), so a site measures what the predictor expects."""

from __future__ import annotations

import numpy as np

from shared_model.contract.site_summary import PRECISION, OwnAurocRecipe, labelled_and_positive
from shared_model.data import MedsDataset
from shared_model.model.config import ClaimTransformerConfig
from shared_model.tensors.tasks import split_subjects
from shared_model.training.finetuning import finetune_and_score
from shared_model.training.fit import FinetuneSettings


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
