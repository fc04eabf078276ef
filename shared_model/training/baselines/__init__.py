"""Classic baselines: logistic regression on bag-of-codes history (scikit-learn) and gradient-boosted
trees on windowed code counts (LightGBM)."""

from shared_model.training.baselines.bag_of_codes import bag_of_codes, fit_logreg, logreg_pipeline
from shared_model.training.baselines.gbm import TREES, gbm_classifier, windowed_counts

__all__ = ["TREES", "bag_of_codes", "fit_logreg", "gbm_classifier", "logreg_pipeline", "windowed_counts"]
