"""The federated run configuration: the contract between ServerApp and ClientApp (docs/architecture.md §4).

Flower hands both apps `context.run_config` (from `[tool.flwr.app.config]` or overrides); both
parse it here. This dataclass is the one place a key, its default and its help are written:
`pyproject.toml` lists the same keys (a test holds them equal) and `claimpt pretrain federated`
generates its options from the fields.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shared_model.config import ARCHITECTURE, ClaimTransformerConfig, architecture_options
from shared_model.settings import VocabularySettings, setting

CLIENT_OPTIMIZER_STATES = ("reset", "keep")
CLIENT_DP_CLIPPING = ("fixed", "adaptive")
SECAGG_CLIPPING_RANGE = 8.0  # SecAgg+ quantises parameters in [-8, 8]; sites refuse to send anything outside
STRATEGIES = ("fedavg", "fedprox", "fedadam", "fedavgm", "fedmedian", "fedtrimmedavg", "krum", "multikrum")
#: robust rules that are not robust below a number of sites, and why
ROBUST_MINIMUM_SITES = {"fedtrimmedavg": 3, "krum": 5, "multikrum": 5}
ROBUST_RULES = {
    "fedtrimmedavg": "a trimmed mean drops at least one update per side and keeps one",
    "krum": "Krum assumes one attacker and needs n >= 2f + 3",
    "multikrum": "Krum assumes one attacker and needs n >= 2f + 3",
}


def _field_of(config: type, name: str) -> Any:
    """The setting `name` of another config (the model's architecture, the vocabulary), with its
    default and help: written once, there."""
    field = {f.name: f for f in dataclasses.fields(config)}[name]
    return setting(field.default, field.metadata["help"])


@dataclass(frozen=True)
class FederatedRunConfig:
    num_server_rounds: int = setting(3, "Federated training rounds.")
    strategy: str = setting("fedavg", "Aggregation: " + ", ".join(STRATEGIES) + ".")
    local_epochs: int = setting(1, "Passes over each site's training data per round.")
    client_optimizer: str = setting(
        "reset",
        "reset: every site starts each round with a fresh RMSprop; keep: each "
        "site keeps its optimizer state across rounds (on the site).",
    )
    batch_size: int = setting(100, "Patients per local step (the expected batch under DP-SGD).")
    learning_rate: float = setting(1e-3, "Local RMSprop learning rate.")
    seed: int = setting(0, "Random seed: the initial model and every site's local training.")
    k_anonymity: int = setting(
        11, "Sites report and use only codes seen in at least k patients (a site's policy may raise it)."
    )
    max_vocab: int = _field_of(VocabularySettings, "max_vocab")
    target_vocabularies: str = _field_of(VocabularySettings, "target_vocabularies")
    max_groups: int = _field_of(VocabularySettings, "max_groups")
    min_available_clients: int = setting(2, "Sites required to start and to continue a round.")
    proximal_mu: float = setting(0.01, "FedProx: weight of the proximal term.")
    server_learning_rate: float = setting(0.01, "FedAdam / FedAvgM: the server's learning rate.")
    server_momentum: float = setting(0.9, "FedAvgM: the server's momentum.")
    trimmed_beta: float = setting(0.2, "FedTrimmedAvg: share trimmed on each side (at least one update).")
    max_update_norm: float = setting(0.0, "Drop updates whose L2 norm exceeds this bound (0: off).")
    max_norm_ratio: float = setting(5.0, "Drop updates above this multiple of the other updates' median norm (0: off).")
    dp_epsilon: float = setting(0.0, "Record-level DP-SGD at every site: the epsilon spent over all rounds (0: off).")
    dp_clip_norm: float = setting(0.1, "DP-SGD: bound on each patient's gradient norm.")
    dp_embedding_share: float = setting(
        0.5,
        "DP-SGD: share of the squared bound reserved for the code "
        "embedding's gradient, the rest for the other layers (0: one bound).",
    )
    dp_delta: float = setting(0.0, "DP-SGD: delta (0: 1/n^1.1, n the site's training patients).")
    dp_accountant: str = setting(
        "rdp", "DP accountant: rdp (fast, an upper bound) or pld (tighter, slow to calibrate)."
    )
    client_dp_noise: float = setting(
        0.0, "Client-level DP: noise multiplier of Flower's server-side clipping wrapper (0: off)."
    )
    client_dp_clipping: str = setting("fixed", "Client-level DP clipping: fixed or adaptive.")
    client_dp_clip_norm: float = setting(
        1.0, "Client-level DP: bound on a site's update norm (the initial bound if adaptive)."
    )
    client_dp_delta: float = setting(1e-5, "Client-level DP: delta.")
    secure_aggregation: bool = setting(
        False,
        "SecAgg+: the server learns only the sum of the sites' models "
        "(fedavg, sites weighted equally, no update validation).",
    )
    advise_only: bool = setting(
        False,
        "Only the advisory round: each site sends its k-anonymised summary, the server writes "
        "advice.json and advice.md (who helps whom) in run-dir and trains nothing.",
    )
    advisor_predictor: str = setting(
        "",
        "The advisory round's predictor.json (default: the one shipped with claimpt); its recipe is "
        "how each site measures the AUROC it reaches alone.",
    )
    run_dir: str = setting("", "Where the server writes round checkpoints, rounds.csv and the final checkpoint.")
    resume: bool = setting(False, "Continue from the last intact round checkpoint in run-dir.")
    data_paths: str = setting(
        "", "Simulation only: the site directories, separated by commas, indexed by partition-id."
    )
    signing_key: str = setting(
        "",
        "The server's Ed25519 private key (signing.key from `claimpt certs`) that "
        "signs every checkpoint (default: $CLAIMPT_SIGNING_KEY).",
    )
    d_model: int = _field_of(ClaimTransformerConfig, "d_model")
    n_layers: int = _field_of(ClaimTransformerConfig, "n_layers")
    n_heads: int = _field_of(ClaimTransformerConfig, "n_heads")
    ffn_dim: int = _field_of(ClaimTransformerConfig, "ffn_dim")
    dropout: float = _field_of(ClaimTransformerConfig, "dropout")
    pre_layer_norm: bool = _field_of(ClaimTransformerConfig, "pre_layer_norm")
    time_encoding: str = _field_of(ClaimTransformerConfig, "time_encoding")

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        if self.client_optimizer not in CLIENT_OPTIMIZER_STATES:
            raise ValueError(
                f"client-optimizer must be one of {CLIENT_OPTIMIZER_STATES}, got {self.client_optimizer!r}"
            )
        if self.client_dp_clipping not in CLIENT_DP_CLIPPING:
            raise ValueError(f"client-dp-clipping must be one of {CLIENT_DP_CLIPPING}, got {self.client_dp_clipping!r}")
        if self.dp_accountant not in ("rdp", "pld"):
            raise ValueError(f"dp-accountant must be rdp or pld, got {self.dp_accountant!r}")
        if not 0.0 <= self.dp_embedding_share < 1.0:
            raise ValueError(f"dp-embedding-share must be in [0, 1), got {self.dp_embedding_share}")
        if self.dp_epsilon < 0 or self.dp_clip_norm <= 0 or self.client_dp_noise < 0 or self.client_dp_clip_norm <= 0:
            raise ValueError("dp-epsilon and client-dp-noise must be >= 0, the clip norms > 0")
        if self.secure_aggregation and (self.strategy != "fedavg" or self.client_dp_noise > 0):
            raise ValueError(
                "secure-aggregation works with strategy fedavg and without client-dp-noise only: the "
                "others need each site's update, which SecAgg+ hides from the server"
            )
        if self.dp_epsilon > 0 and self.strategy == "fedprox":
            raise ValueError(
                "dp-epsilon does not combine with fedprox (DP-SGD's per-patient loss has no proximal term)"
            )
        if self.num_server_rounds < 1 or self.local_epochs < 1 or self.k_anonymity < 1 or self.batch_size < 1:
            raise ValueError("num-server-rounds, local-epochs, k-anonymity and batch-size must be >= 1")
        if self.min_available_clients < 1:
            raise ValueError("min-available-clients must be >= 1")
        self.vocabulary()  # checks max-vocab, target-vocabularies and max-groups
        needed = ROBUST_MINIMUM_SITES.get(self.strategy, 0)
        if self.min_available_clients < needed:
            raise ValueError(
                f"{self.strategy} means nothing with {self.min_available_clients} sites: it needs "
                f"min-available-clients >= {needed} ({ROBUST_RULES[self.strategy]})"
            )

    def vocabulary(self) -> VocabularySettings:
        """The vocabulary settings of the run (k-anonymity plays min-count's part)."""
        return VocabularySettings(
            max_vocab=self.max_vocab, target_vocabularies=self.target_vocabularies, max_groups=self.max_groups
        )

    @classmethod
    def from_run_config(cls, run_config: Mapping[str, Any]) -> FederatedRunConfig:
        """Parse Flower's run config (kebab-case keys); unknown keys are an error."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        for key, value in run_config.items():
            name = key.replace("-", "_")
            if name not in fields:
                raise ValueError(f"unknown run-config key {key!r}")
            default = fields[name].default
            values[name] = type(default)(value) if not isinstance(default, bool) else _as_bool(value)
        return cls(**values)

    def to_run_config(self) -> dict[str, Any]:
        return {f.name.replace("_", "-"): getattr(self, f.name) for f in dataclasses.fields(self)}

    def model_options(self) -> dict[str, Any]:
        """The architecture part, as ClaimTransformerConfig takes it."""
        return architecture_options({name: getattr(self, name) for name in ARCHITECTURE})

    def site_paths(self) -> list[str]:
        return [p for p in self.data_paths.split(",") if p]


def _as_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def local_seed(seed: int, server_round: int, site_key: int) -> int:
    """A client's training seed for one round: fixed by the run seed, the round and the site."""
    return (seed * 1_000_003 + server_round * 7_919 + site_key) % (2**31 - 1)
