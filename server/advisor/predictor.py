"""The transfer predictor: a ridge regression from a (site, partner set) pair's signals to the
AUROC the site gains by fine-tuning from the partners' pretrained encoder instead of from scratch.

It is fitted on simulated consortia (`make experiment-advisor`, never on the consortium it is
judged on) and stored as plain numbers in JSON: a site can read exactly what it computes."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.linear_model import Ridge

from server.advisor.signals import SIGNALS

FORMAT = "claimpt-transfer-predictor/1"
DEFAULT_PREDICTOR = Path(__file__).with_name("predictor.json")


@dataclass(frozen=True)
class TransferPredictor:
    """gain = intercept + sum(coefficient * (signal - mean) / scale), over `features`, for the
    fine-tuning `task` whose gains it was fitted on. A signal a summary does not give (NaN) counts
    as its mean: it moves the prediction neither way. `margin`: the predicted gain partners must
    exceed to be recommended, chosen with the fit (on simulated consortia, never the one judged)."""

    features: tuple[str, ...]
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    coefficients: tuple[float, ...]
    intercept: float
    task: str = ""
    margin: float = 0.0
    fitted_on: str = ""

    def __post_init__(self) -> None:
        sizes = {len(self.features), len(self.mean), len(self.scale), len(self.coefficients)}
        if len(sizes) != 1 or set(self.features) - set(SIGNALS):
            known = ", ".join(SIGNALS)
            raise ValueError(f"a predictor needs one mean, scale and coefficient per known signal ({known})")

    @classmethod
    def fit(
        cls,
        rows: pd.DataFrame,
        *,
        alpha: float = 1.0,
        task: str = "",
        margin: float = 0.0,
        fitted_on: str = "",
    ) -> TransferPredictor:
        """Fit on rows holding every signal of SIGNALS and the measured `gain` of `task`."""
        values = rows[list(SIGNALS)].to_numpy(np.float64)
        known = np.maximum((~np.isnan(values)).sum(axis=0), 1)
        mean = np.nansum(values, axis=0) / known  # over the rows that give the signal
        spread = np.sqrt(np.nansum((values - mean) ** 2, axis=0) / known)
        scale = np.where(spread > 0, spread, 1.0)
        standardised = _standardise(rows, SIGNALS, mean, scale)
        model = Ridge(alpha=alpha).fit(standardised, rows["gain"].to_numpy(np.float64))
        return cls(
            SIGNALS,
            tuple(float(x) for x in mean),
            tuple(float(x) for x in scale),
            tuple(float(x) for x in model.coef_),
            float(model.intercept_),
            task,
            margin,
            fitted_on,
        )

    def predict(self, signals: pd.DataFrame) -> np.ndarray:
        standardised = _standardise(signals, self.features, np.asarray(self.mean), np.asarray(self.scale))
        return self.intercept + standardised @ np.asarray(self.coefficients)

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": FORMAT,
                "task": self.task,
                "margin": self.margin,
                "fitted_on": self.fitted_on,
                "intercept": self.intercept,
                "features": {
                    name: {"mean": m, "scale": s, "coefficient": c}
                    for name, m, s, c in zip(self.features, self.mean, self.scale, self.coefficients, strict=True)
                },
            },
            indent=2,
        )

    @classmethod
    def from_json(cls, text: str) -> TransferPredictor:
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"not a transfer predictor (expected format {FORMAT!r})")
        features = data["features"]
        if not isinstance(features, dict) or set(features) != set(SIGNALS):
            raise ValueError(f"a transfer predictor gives every signal by name ({', '.join(SIGNALS)})")
        ordered = [features[name] for name in SIGNALS]  # by name: the file's order does not matter
        return cls(
            SIGNALS,
            tuple(float(f["mean"]) for f in ordered),
            tuple(float(f["scale"]) for f in ordered),
            tuple(float(f["coefficient"]) for f in ordered),
            float(data["intercept"]),
            str(data.get("task", "")),
            float(data.get("margin", 0.0)),
            str(data.get("fitted_on", "")),
        )


def _standardise(rows: pd.DataFrame, features: tuple[str, ...], mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """(signal - mean) / scale, a missing signal (NaN) as 0: the mean's."""
    return np.nan_to_num((rows[list(features)].to_numpy(np.float64) - mean) / scale, nan=0.0)


def load_predictor(path: Path | None = None) -> TransferPredictor:
    """The predictor at `path`, or the one fitted on every consortium of `make experiment-advisor`."""
    return TransferPredictor.from_json(Path(path or DEFAULT_PREDICTOR).read_text())
