"""The site's privacy policy: floors the site sets for itself and nothing from the server can lower.

A run's settings come from the coordinator; what a site *releases* is decided here. The policy is
a TOML file owned by the site (`claimpt site join --policy FILE`), read by the ClientApp from the
node config, which only the site sets. Every message is checked against it before any patient
data is touched, and a message asking for less protection is refused (`SiteRefusal`), never
quietly adjusted down.

```toml
k_anonymity = 11                  # codes reported and used only if seen in >= k of this site's patients
require_dp = true                 # train only with record-level DP-SGD
dp_epsilon = 4.0                  # DP-SGD at this epsilon per run even if the run asks none (0: the run's)
max_run_epsilon = 8.0             # refuse runs asking for a larger epsilon (0: no ceiling)
lifetime_epsilon = 20.0           # this site's total over every run, kept in its privacy ledger (0: none)
max_delta = 1e-5                  # refuse a larger delta (0: 1 / n, n = the site's training patients)
min_noise_multiplier = 0.5        # refuse DP-SGD with less noise (0: no floor)
require_secure_aggregation = false  # refuse plain (non-SecAgg+) training rounds
max_evaluations_per_run = 0       # federated evaluations answered per run (0: one per training round, + 1)
share_task_counts = true          # the advisory summary may say, per task, how many patients are labelled and positive
share_own_auroc = true            # ... and the AUROC it reaches alone (to 0.01; >= k held-out positives, negatives)
```
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from client.replies import SiteRefusal
from shared_model.data import DataValidationError


@dataclass(frozen=True)
class SitePolicy:
    k_anonymity: int = 11
    require_dp: bool = False
    dp_epsilon: float = 0.0
    max_run_epsilon: float = 0.0
    lifetime_epsilon: float = 0.0
    max_delta: float = 0.0
    min_noise_multiplier: float = 0.0
    require_secure_aggregation: bool = False
    max_evaluations_per_run: int = 0
    share_task_counts: bool = True
    share_own_auroc: bool = True

    def __post_init__(self) -> None:
        if self.k_anonymity < 2:
            raise ValueError(f"k_anonymity must be an integer >= 2, got {self.k_anonymity}")
        for name in ("dp_epsilon", "max_run_epsilon", "lifetime_epsilon", "max_delta", "min_noise_multiplier"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.max_delta >= 1:
            raise ValueError(f"max_delta must be below 1, got {self.max_delta}")
        if self.max_evaluations_per_run < 0:
            raise ValueError(f"max_evaluations_per_run must be >= 0, got {self.max_evaluations_per_run}")

    @property
    def dp_required(self) -> bool:
        """A lifetime budget or a noise floor only means something if every round is private."""
        return self.require_dp or self.lifetime_epsilon > 0 or self.min_noise_multiplier > 0

    def epsilon_for(self, requested: float) -> float:
        """The record-level epsilon this site trains a run with when the server asks for
        `requested` (0: no DP): the smaller of the two where both are set, the site's own when the
        run asks for none."""
        if self.dp_epsilon and requested > 0:
            return min(self.dp_epsilon, requested)
        return self.dp_epsilon or requested

    def k_for(self, requested: Any) -> int:
        """The k this site applies when the server asks for `requested`: the larger of the two.
        A k that is not a positive integer is refused (not rounded: 2.5 is a mistake or a probe)."""
        if isinstance(requested, bool) or not isinstance(requested, int) or requested < 1:
            raise SiteRefusal("k-anonymity must be a positive integer")
        return max(self.k_anonymity, requested)

    def max_delta_for(self, n_patients: int) -> float:
        return self.max_delta or 1.0 / max(n_patients, 1)

    def evaluations_allowed(self, rounds_trained: int) -> int:
        return self.max_evaluations_per_run or rounds_trained + 1


def load_policy(path: str | Path) -> SitePolicy:
    """Read a policy file; any unknown key or wrong type is an error naming the file and key."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise DataValidationError(path, "a readable TOML policy file", found=type(exc).__name__) from exc
    except tomllib.TOMLDecodeError as exc:
        raise DataValidationError(path, "valid TOML", found=str(exc)) from exc
    fields = {f.name: f for f in dataclasses.fields(SitePolicy)}
    values = {}
    for key, value in data.items():
        if key not in fields:
            raise DataValidationError(path, f"one of the policy keys {sorted(fields)}", column=key, found=key)
        kind = type(fields[key].default)
        valid = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value, valid = float(value), True
        if not valid:
            raise DataValidationError(path, f"a {kind.__name__}", column=key, found=value)
        values[key] = value
    try:
        return SitePolicy(**values)
    except ValueError as exc:
        raise DataValidationError(path, str(exc)) from exc
