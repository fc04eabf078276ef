"""What privacy and robustness cost: `claimpt experiment privacy` (plan -> runner -> summary, plots,
report).

1. The privacy-utility curve: federated pretraining with record-level DP-SGD at every site, the
   noise calibrated to spend epsilon in EPSILONS over all rounds (inf: no DP), then NVP Recall@10
   of the final global model (federated evaluation on the sites' held-out patients) and the
   downstream AUROC of a probe fine-tuned on `cohort_size` labelled patients at every site. Each
   point is `repeats` federated runs with their own seeds (initialisation, batches, noise): one
   run's downstream AUROC moves by ~0.03 with its seed alone, as much as the effect measured.
2. The robustness table: aggregation strategy x misbehaving site (one site sends 10x-scaled or
   sign-flipped updates every round), same metrics, on its own set of sites.

Every federated run is written under RUN/pretrained/<name>-<content digest>/ and reused when
complete, so an interrupted experiment resumes; the same seed gives the same tables.
"""

from simulations.experiments.privacy.plan import PrivacyExperimentConfig, load_config
from simulations.experiments.privacy.runner import run_privacy_experiment

__all__ = ["PrivacyExperimentConfig", "load_config", "run_privacy_experiment"]
