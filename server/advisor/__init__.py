"""The transfer advisor: from the sites' releasable summaries, the predicted gain of every
partner set for every site and the set to recommend (docs/architecture.md §4)."""

from server.advisor.advice import Advice, advise, partner_sets, recommend, signal_table
from server.advisor.predictor import TransferPredictor, load_predictor
from server.advisor.signals import PAIR_SIGNALS, SIGNALS, SITE_SIGNALS, pair_signals

__all__ = [
    "PAIR_SIGNALS",
    "SIGNALS",
    "SITE_SIGNALS",
    "Advice",
    "TransferPredictor",
    "advise",
    "load_predictor",
    "pair_signals",
    "partner_sets",
    "recommend",
    "signal_table",
]
