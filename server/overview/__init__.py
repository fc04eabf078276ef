"""The consortium overview (experimental): from the summaries the sites release before anything
trains, each site's size, age mix and code overlap, and the AUROC gain the transfer predictor
expects from joining everyone (docs/architecture.md §4). The advisory round (`round`) asks for
the summaries; the predictor is fitted in the lab (simulations/experiments/advisor/)."""

from server.overview.overview import ConsortiumOverview, consortium_overview
from server.overview.predictor import TransferPredictor, load_predictor

__all__ = ["ConsortiumOverview", "TransferPredictor", "consortium_overview", "load_predictor"]
