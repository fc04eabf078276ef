"""The site's privacy policy: floors the site sets for itself and nothing from the server can lower.

A run's settings come from the coordinator; what a site *releases* is decided here. The policy is
a TOML file owned by the site (`claimpt site join --policy FILE`), read by the ClientApp from the
node config, which only the site sets. Every message is checked against it before any patient
data is touched, and a message asking for less protection is refused (`SiteRefusal`), never
quietly adjusted down.

Every key, its default, range and meaning: `claimpt site policy --example` (a file to start from),
`--table` (the table in docs/deployment.md), `--check FILE` (what a file sets, or why it is refused).
All three are generated from the fields below, each declared once with its help and range.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from client.replies import SiteRefusal
from shared_model.contract.run_config import MAX_EPSILON, MAX_ROUNDS, MAX_SITES
from shared_model.data import DataValidationError
from shared_model.settings import MAX_COUNT, SettingError, check_settings, setting, settings_from

MAX_PARAMETERS = 10**10


@dataclass(frozen=True)
class SitePolicy:
    k_anonymity: int = setting(
        11,
        "Codes reported and used only if seen in >= k of this site's patients (the server's k where higher).",
        at_least=2,
        at_most=MAX_COUNT,
    )
    require_dp: bool = setting(False, "Train only with record-level DP-SGD.")
    dp_epsilon: float = setting(
        0.0,
        "DP-SGD at this epsilon per run even if the run asks none; the run's where smaller (0: the run's).",
        at_least=0,
        at_most=MAX_EPSILON,
    )
    max_run_epsilon: float = setting(
        0.0, "Refuse runs asking for a larger epsilon (0: no ceiling).", at_least=0, at_most=MAX_EPSILON
    )
    lifetime_epsilon: float = setting(
        0.0, "The site's total over every run, in its ledger (0: none).", at_least=0, at_most=100 * MAX_EPSILON
    )
    max_delta: float = setting(
        0.0, "DP-SGD at most at this delta, the run's if smaller (0: 1 / n).", at_least=0, below=1
    )
    min_noise_multiplier: float = setting(0.0, "Refuse DP-SGD with less noise (0: no floor).", at_least=0, at_most=1e3)
    require_secure_aggregation: bool = setting(False, "Refuse plain (non-SecAgg+) training rounds.")
    min_secure_aggregation_sites: int = setting(
        3,
        "SecAgg+: refuse a round with fewer sites (with two, each learns the other's model).",
        at_least=2,
        at_most=MAX_SITES,
    )
    min_secure_aggregation_threshold: int = setting(
        2,
        "SecAgg+: refuse a reconstruction threshold below this (and below a majority of the shares).",
        at_least=2,
        at_most=MAX_SITES,
    )
    max_evaluations_per_run: int = setting(
        0, "Federated evaluations answered per run (0: one per round, + 1).", at_least=0, at_most=MAX_ROUNDS
    )
    lifetime_evaluations: int = setting(
        1_000, "Federated evaluations answered over every run, kept in the site's state.", at_least=0, at_most=10**6
    )
    max_model_parameters: int = setting(
        100_000_000,
        "Refuse to build a model the server describes with more weights than this (the site's memory).",
        at_least=1,
        at_most=MAX_PARAMETERS,
    )
    share_task_counts: bool = setting(
        False, "The advisory summary may say, per task, its labelled and positive patients."
    )
    share_own_auroc: bool = setting(False, "The advisory summary may carry the AUROC the site reaches alone.")

    def __post_init__(self) -> None:
        check_settings(self, kebab=False)

    @property
    def dp_required(self) -> bool:
        """A lifetime budget or a noise floor only means something if every round is private."""
        return self.require_dp or self.lifetime_epsilon > 0 or self.min_noise_multiplier > 0

    def epsilon_for(self, requested: float) -> float:
        """The record-level epsilon this site trains a run with when the server asks for
        `requested` (0: no DP): the smaller of the two where both are set, the site's own when the
        run asks for none. `requested` has passed the run config's range check (finite, >= 0)."""
        if self.dp_epsilon and requested > 0:
            return min(self.dp_epsilon, requested)
        return self.dp_epsilon or requested

    def k_for(self, requested: Any) -> int:
        """The k this site applies when the server asks for `requested`: the larger of the two.
        A k that is not a positive integer is refused (not rounded: 2.5 is a mistake or a probe)."""
        if isinstance(requested, bool) or not isinstance(requested, int) or not 1 <= requested <= MAX_COUNT:
            raise SiteRefusal("k-anonymity must be a positive integer")
        return max(self.k_anonymity, requested)

    def max_delta_for(self, n_patients: int) -> float:
        return self.max_delta or 1.0 / max(n_patients, 1)

    def evaluations_allowed(self, rounds_trained: int) -> int:
        return self.max_evaluations_per_run or rounds_trained + 1


def load_policy(path: str | Path) -> SitePolicy:
    """Read a policy file; any unknown key, wrong type or value out of range (NaN included) is an
    error naming the file and key."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise DataValidationError(path, "a readable TOML policy file", found=type(exc).__name__) from exc
    except tomllib.TOMLDecodeError as exc:
        raise DataValidationError(path, "valid TOML", found=str(exc)) from exc
    try:
        return settings_from(SitePolicy, data, kebab=False, what="policy")
    except SettingError as exc:
        raise DataValidationError(path, exc.expected, column=exc.key, found=data.get(exc.key, exc.key)) from exc
