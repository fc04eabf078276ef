"""Fitting the transfer predictor (server/overview/predictor.py) on measured gains: the lab's
half of the predictor; the product only reads and applies a fitted one."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.linear_model import Ridge

from server.overview.predictor import TransferPredictor, single_partner_means, site_keys, standardised
from server.overview.signals import PAIR_SIGNALS, SIGNALS, SITE_SIGNALS
from shared_model.contract.site_summary import OwnAurocRecipe

SITE_ALPHA = 1.0  # the site level's ridge penalty: a few site signals over a few dozen sites


def fit_predictor(
    rows: pd.DataFrame,
    *,
    alpha: float = 1.0,
    task: str = "",
    margin: float = 0.0,
    fitted_on: str = "",
    own_auroc: OwnAurocRecipe | None = None,
) -> TransferPredictor:
    """Fit on rows holding `site`, `partners` (joined by '+'; `consortium` too when there are
    several), every signal of SIGNALS and the measured `gain` of `task`; `alpha`: the pair
    part's ridge penalty."""
    values = rows[list(SIGNALS)].to_numpy(np.float64)
    known = np.maximum((~np.isnan(values)).sum(axis=0), 1)
    mean = np.nansum(values, axis=0) / known  # over the rows that give the signal
    spread = np.sqrt(np.nansum((values - mean) ** 2, axis=0) / known)
    scale = np.where(spread > 0, spread, 1.0)
    z = standardised(rows, mean, scale).assign(gain=rows["gain"].to_numpy(np.float64))
    reference = single_partner_means(z, rows)
    pair = Ridge(alpha=alpha, fit_intercept=False).fit((z - reference)[list(PAIR_SIGNALS)], (z - reference)["gain"])
    levels = z[list(SITE_SIGNALS)].assign(gain=reference["gain"]).groupby(site_keys(rows)).first()
    site = Ridge(alpha=SITE_ALPHA).fit(levels[list(SITE_SIGNALS)], levels["gain"])
    return TransferPredictor(
        SIGNALS,
        tuple(float(x) for x in mean),
        tuple(float(x) for x in scale),
        tuple(float(x) for x in (*pair.coef_, *site.coef_)),
        float(site.intercept_),
        task,
        margin,
        fitted_on,
        own_auroc,
    )
