"""The default path's safety net: pretraining must never leave a site worse off than no pretraining.

An encoder pretrained elsewhere can fail to transfer to a site's data: another producer's codes,
a population it never saw, or an encoder that collapsed (every patient one point, as on
CoreBEHRT's example data before the heads' bias fix). A site that fine-tunes it cannot tell from
the held-out patients, which it must not look at. So fine-tuning from a checkpoint also fits the
same network from a random start, and the count baseline, on the same cohort, and compares them on
the tuning patients by the one-standard-error rule `model_selection.choose_c` uses for C: the
preferred candidate (here the pretrained model) is kept unless another beats it by more than one
standard error, here of the paired AUROC difference (bootstrap over the tuning patients). With
~100 tuning patients that error is 0.05-0.1 AUROC, so the guard catches a collapse, not the small
differences between recipes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from shared_model.evaluation.metrics import auroc

PRETRAINED = "pretrained"
SCRATCH = "scratch"
BOOTSTRAP_RESAMPLES = 200


@dataclass(frozen=True)
class GuardChoice:
    """Which transformer the default path keeps, and why (written to metrics.json as `guard`)."""

    chosen: str  # PRETRAINED or SCRATCH
    tuning_auroc: dict[str, float]  # pretrained, scratch and the count baseline on the tuning patients
    standard_error: float  # bootstrap standard error of the tuning AUROC difference, scratch - pretrained
    reason: str
    baseline: str  # the count baseline compared
    baseline_better: bool  # it beat the chosen model by more than one standard error (of that difference)

    def to_record(self) -> dict:
        return asdict(self)


def paired_standard_error(labels: np.ndarray, scores: np.ndarray, reference: np.ndarray, seed: int) -> float:
    """Standard error of AUROC(scores) - AUROC(reference) on these patients: the spread of the
    difference over bootstrap resamples of the patients, both models scored on each resample
    (resamples with one class skipped)."""
    labels = np.asarray(labels) > 0.5
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(labels), size=(BOOTSTRAP_RESAMPLES, len(labels)))
    differences = [
        auroc(labels[rows], scores[rows]) - auroc(labels[rows], reference[rows])
        for rows in draws
        if 0 < labels[rows].sum() < len(rows)
    ]
    return float(np.std(differences, ddof=1)) if len(differences) > 1 else float("nan")


def choose(
    labels: np.ndarray,
    pretrained: np.ndarray,
    scratch: np.ndarray,
    baseline: str,
    baseline_scores: np.ndarray,
    seed: int,
) -> GuardChoice:
    """Keep the pretrained model unless the scratch model's tuning AUROC exceeds it by more than
    one standard error of that difference; flag a count baseline that beats the choice the same
    way."""
    scores = {
        PRETRAINED: auroc(labels, pretrained),
        SCRATCH: auroc(labels, scratch),
        baseline: auroc(labels, baseline_scores),
    }
    rounded = {name: round(value, 4) for name, value in scores.items()}
    if any(np.isnan(value) for value in scores.values()):
        reason = "one class in the tuning patients: nothing to compare"
        return GuardChoice(PRETRAINED, rounded, float("nan"), reason, baseline, baseline_better=False)
    worse_by = scores[SCRATCH] - scores[PRETRAINED]
    error = paired_standard_error(labels, scratch, pretrained, seed)
    if worse_by > error:
        chosen, kept = SCRATCH, scratch
        reason = f"pretrained tuning AUROC {worse_by:.3f} below scratch: more than one standard error ({error:.3f})"
    else:
        chosen, kept = PRETRAINED, pretrained
        reason = f"pretrained within one standard error ({error:.3f}) of scratch, or above it, on the tuning patients"
    baseline_gain = scores[baseline] - scores[chosen]
    baseline_better = bool(baseline_gain > paired_standard_error(labels, baseline_scores, kept, seed))
    return GuardChoice(chosen, rounded, round(error, 4), reason, baseline, baseline_better)
