"""Classic baselines: logistic regression on bag-of-codes history (scikit-learn)."""

from shared_model.baselines.bag_of_codes import bag_of_codes, fit_logreg, logreg_pipeline

__all__ = ["bag_of_codes", "fit_logreg", "logreg_pipeline"]
