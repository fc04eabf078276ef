"""Cross-institution transfer experiment (docs/architecture.md §6): does pretraining elsewhere help a site, and
does federated pretraining match pooled pretraining?

grid.py (what to run) -> pretraining.py (cached checkpoints) -> runner.py (resumable fine-tuning
grid, results.csv) -> summary.py (bootstrap intervals, results.md) -> plots.py -> report.py.
"""

from simulations.experiments.transfer.grid import MODES, TransferConfig, load_config
from simulations.experiments.transfer.runner import run_transfer_experiment

__all__ = ["MODES", "TransferConfig", "load_config", "run_transfer_experiment"]
