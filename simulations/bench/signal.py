"""Does the data carry learnable, non-trivial signal? A bag-of-codes logistic-regression check."""

from __future__ import annotations

from dataclasses import dataclass

from sklearn.metrics import roc_auc_score

from shared_model.data import MedsDataset
from shared_model.training.baselines import bag_of_codes, fit_logreg


@dataclass(frozen=True)
class SignalResult:
    task: str
    auroc: float
    n_train: int
    n_test: int
    positives_test: int


def logreg_signal(dataset: MedsDataset, task: str, seed: int = 0) -> SignalResult:
    """Train on the train split, report AUROC on tuning + held_out (NaN when either side has a
    single class: too few patients to measure a signal)."""
    labels = dataset.labels[task].merge(dataset.splits, on="subject_id")
    train = labels[labels["split"] == "train"]
    test = labels[labels["split"] != "train"]
    if train["boolean_value"].nunique() < 2 or test["boolean_value"].nunique() < 2:
        return SignalResult(task, float("nan"), len(train), len(test), int(test["boolean_value"].sum()))
    features, vocabulary = bag_of_codes(dataset.events, train)
    test_features, _ = bag_of_codes(dataset.events, test, vocabulary)
    model = fit_logreg(features, train["boolean_value"].to_numpy(), seed=seed)
    score = model.predict_proba(test_features)[:, 1]
    return SignalResult(
        task,
        float(roc_auc_score(test["boolean_value"], score)),
        len(train),
        len(test),
        int(test["boolean_value"].sum()),
    )
