"""The transfer predictor: from a (site, partner set) pair's signals to the AUROC the site gains by
fine-tuning from the partners' pretrained encoder instead of from scratch.

It has two parts, learnt from different things. How much a site gains at all depends on how well
it does alone (the site signals), learnt from each site's mean gain over its single partners.
Which partners are better depends on how they differ from the site (the pair signals), learnt from
the differences between one site's candidates. A single ridge over both mixes them up: differences
between sites swamp those between partners, and the pair signals learn to tell sites apart, which
does not carry over to other consortia.

It is fitted in the lab (simulations/experiments/advisor/fit.py, on simulated consortia, never on
the consortium it is judged on) and stored as plain numbers in JSON: a site can read exactly what
it computes. This module only reads and applies one."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from server.overview.signals import PAIR_SIGNALS, SIGNALS, SITE_SIGNALS, partner_sets, signal_table
from shared_model.contract.site_summary import OwnAurocRecipe, SiteSummary

FORMAT = "claimpt-transfer-predictor/2"
DEFAULT_PREDICTOR = Path(__file__).with_name("predictor.json")


@dataclass(frozen=True)
class TransferPredictor:
    """gain = level + sum over PAIR_SIGNALS of coefficient * (z - z of the site's single partners),
    level = intercept + sum over SITE_SIGNALS of coefficient * z, z = (signal - mean) / scale, for
    the fine-tuning `task` whose gains it was fitted on. A signal a summary does not give (NaN)
    counts as its mean: it moves the prediction neither way. `margin`: the predicted gain partners
    must exceed to be recommended, chosen with the fit (on simulated consortia, never the one
    judged). `own_auroc`: how a site measures its own AUROC for this predictor (None: it was not
    asked)."""

    features: tuple[str, ...]
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    coefficients: tuple[float, ...]
    intercept: float
    task: str = ""
    margin: float = 0.0
    fitted_on: str = ""
    own_auroc: OwnAurocRecipe | None = None

    def __post_init__(self) -> None:
        sizes = {len(self.features), len(self.mean), len(self.scale), len(self.coefficients)}
        if sizes != {len(SIGNALS)} or self.features != SIGNALS:
            raise ValueError(f"a predictor needs one mean, scale and coefficient per signal ({', '.join(SIGNALS)})")

    def predict(self, signals: pd.DataFrame) -> np.ndarray:
        """The predicted gain of each row (`site`, `partners`, every signal); every site whose
        candidates are predicted needs its single partners among them."""
        z = standardised(signals, np.asarray(self.mean), np.asarray(self.scale))
        relative = (z - single_partner_means(z, signals))[list(PAIR_SIGNALS)]
        coefficients = dict(zip(self.features, self.coefficients, strict=True))
        pair = relative.to_numpy() @ np.array([coefficients[s] for s in PAIR_SIGNALS])
        level = z[list(SITE_SIGNALS)].to_numpy() @ np.array([coefficients[s] for s in SITE_SIGNALS])
        return self.intercept + level + pair

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": FORMAT,
                "task": self.task,
                "margin": self.margin,
                "fitted_on": self.fitted_on,
                "own_auroc": self.own_auroc.to_dict() if self.own_auroc else None,
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
        recipe = data.get("own_auroc")
        return cls(
            SIGNALS,
            tuple(float(f["mean"]) for f in ordered),
            tuple(float(f["scale"]) for f in ordered),
            tuple(float(f["coefficient"]) for f in ordered),
            float(data["intercept"]),
            str(data.get("task", "")),
            float(data.get("margin", 0.0)),
            str(data.get("fitted_on", "")),
            OwnAurocRecipe.from_dict(recipe) if recipe is not None else None,
        )


def candidate_gains(summaries: dict[str, SiteSummary], predictor: TransferPredictor, max_partners: int) -> pd.DataFrame:
    """Every site's candidate partner sets (each set of 1..max_partners other sites, and all of
    them): site, partners, every signal, the set's size and its predicted gain."""
    names = sorted(summaries)
    if len(names) < 2:
        raise ValueError("predicted gains need at least two sites")
    pairs = [(site, partners) for site in names for partners in partner_sets(site, names, max_partners)]
    candidates = signal_table(summaries, pairs, predictor.task)
    candidates["size"] = [len(p) for _, p in pairs]
    candidates["predicted_gain"] = predictor.predict(candidates)
    return candidates


def standardised(rows: pd.DataFrame, mean: np.ndarray, scale: np.ndarray) -> pd.DataFrame:
    """(signal - mean) / scale, a missing signal (NaN) as 0: the mean's."""
    z = np.nan_to_num((rows[list(SIGNALS)].to_numpy(np.float64) - mean) / scale, nan=0.0)
    return pd.DataFrame(z, columns=list(SIGNALS), index=rows.index)


def site_keys(rows: pd.DataFrame) -> list[pd.Series]:
    return [rows[column] for column in ("consortium", "site") if column in rows.columns]


def single_partner_means(values: pd.DataFrame, rows: pd.DataFrame) -> pd.DataFrame:
    """For each row, the mean of `values` over its site's single-partner candidates: the reference
    a site's candidates are compared with (the same whichever larger sets are candidates too)."""
    single = ~rows["partners"].str.contains("+", regex=False)
    keys = site_keys(rows)
    means = values[single].groupby([key[single] for key in keys]).mean()
    index = pd.MultiIndex.from_arrays(keys) if len(keys) > 1 else pd.Index(keys[0])
    if not index.isin(means.index).all():
        raise ValueError("every site needs its single partners among its candidates")
    return means.reindex(index).set_axis(values.index)


def load_predictor(path: Path | None = None) -> TransferPredictor:
    """The predictor at `path`, or the one fitted on every consortium of `make experiment-advisor`."""
    return TransferPredictor.from_json(Path(path or DEFAULT_PREDICTOR).read_text())
