"""The transfer advisor's experiment: simulated consortia, their measured gain matrices, and the
predictor judged on consortia it never saw (`make experiment-advisor`)."""

from simulations.experiments.advisor.config import AdvisorConfig, load_advisor_config
from simulations.experiments.advisor.runner import run_advisor_experiment

__all__ = ["AdvisorConfig", "load_advisor_config", "run_advisor_experiment"]
