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

from shared_model.model.config import ARCHITECTURE, ClaimTransformerConfig, architecture_options
from shared_model.settings import (
    ACCOUNTANTS,
    FIXED_PRECISIONS,
    MAX_BATCH,
    MAX_COUNT,
    MAX_EPOCHS,
    MAX_SEED,
    VocabularySettings,
    check_settings,
    setting,
    settings_from,
)

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
    default, help and range: written once, there."""
    field = {f.name: f for f in dataclasses.fields(config)}[name]
    return dataclasses.field(default=field.default, metadata=field.metadata)


MAX_ROUNDS = 10_000
MAX_SITES = 10_000
MAX_EPSILON = 1_000.0  # beyond this no guarantee is meant: a typo or a probe
MAX_TEXT = 4_096  # a path or a list of paths


@dataclass(frozen=True)
class FederatedRunConfig:
    num_server_rounds: int = setting(3, "Federated training rounds.", at_least=1, at_most=MAX_ROUNDS)
    strategy: str = setting("fedavg", "Aggregation: " + ", ".join(STRATEGIES) + ".", choices=STRATEGIES)
    local_epochs: int = setting(1, "Passes over each site's training data per round.", at_least=1, at_most=MAX_EPOCHS)
    client_optimizer: str = setting(
        "reset",
        "reset: every site starts each round with a fresh RMSprop; keep: each "
        "site keeps its optimizer state across rounds (on the site).",
        choices=CLIENT_OPTIMIZER_STATES,
    )
    batch_size: int = setting(
        100, "Patients per local step (the expected batch under DP-SGD).", at_least=1, at_most=MAX_BATCH
    )
    learning_rate: float = setting(1e-3, "Local RMSprop learning rate.", above=0, at_most=10)
    seed: int = setting(
        0, "Random seed: the initial model and every site's local training.", at_least=0, at_most=MAX_SEED
    )
    precision: str = setting(
        "float32",
        "float32, or bfloat16 matmuls with float32 weights (fastest on GPUs and CPUs with AMX or "
        "AVX512-BF16): one precision for every site, named here, never chosen by a site's hardware.",
        choices=FIXED_PRECISIONS,
    )
    k_anonymity: int = setting(
        11,
        "Sites report and use only codes seen in at least k patients (a site's policy may raise it).",
        at_least=1,
        at_most=MAX_COUNT,
    )
    max_vocab: int = _field_of(VocabularySettings, "max_vocab")
    target_vocabularies: str = _field_of(VocabularySettings, "target_vocabularies")
    max_groups: int = _field_of(VocabularySettings, "max_groups")
    min_available_clients: int = setting(
        2, "Sites required to start and to continue a round.", at_least=1, at_most=MAX_SITES
    )
    proximal_mu: float = setting(0.01, "FedProx: weight of the proximal term.", at_least=0, at_most=1_000)
    server_learning_rate: float = setting(0.01, "FedAdam / FedAvgM: the server's learning rate.", above=0, at_most=10)
    server_momentum: float = setting(0.9, "FedAvgM: the server's momentum.", at_least=0, below=1)
    trimmed_beta: float = setting(
        0.2, "FedTrimmedAvg: share trimmed on each side (at least one update).", at_least=0, below=0.5
    )
    max_update_norm: float = setting(
        0.0, "Drop updates whose L2 norm exceeds this bound (0: off).", at_least=0, at_most=1e12
    )
    max_norm_ratio: float = setting(
        5.0, "Drop updates above this multiple of the other updates' median norm (0: off).", at_least=0, at_most=1e6
    )
    max_weight_ratio: float = setting(
        10.0,
        "Cap each site's aggregation weight (its training patients) at this multiple of the other "
        "sites' median count (0: off).",
        at_least=0,
        at_most=1e6,
    )
    round_timeout: float = setting(
        3_600.0,
        "Seconds the server waits for a round's replies; a site that has not answered by then "
        "counts as failed for that round.",
        above=0,
        at_most=7 * 24 * 3_600,
    )
    dp_epsilon: float = setting(
        0.0,
        "Record-level DP-SGD at every site: the epsilon spent over all rounds (0: off).",
        at_least=0,
        at_most=MAX_EPSILON,
    )
    dp_clip_norm: float = setting(0.1, "DP-SGD: bound on each patient's gradient norm.", above=0, at_most=1e6)
    dp_embedding_share: float = setting(
        0.5,
        "DP-SGD: share of the squared bound reserved for the code "
        "embedding's gradient, the rest for the other layers (0: one bound).",
        at_least=0,
        below=1,
    )
    dp_delta: float = setting(0.0, "DP-SGD: delta (0: 1/n^1.1, n the site's training patients).", at_least=0, below=1)
    dp_accountant: str = setting(
        "rdp",
        "DP accountant: rdp (fast, an upper bound) or pld (tighter, slow to calibrate).",
        choices=ACCOUNTANTS,
    )
    client_dp_noise: float = setting(
        0.0,
        "Client-level DP: noise multiplier of Flower's server-side clipping wrapper (0: off).",
        at_least=0,
        at_most=1_000,
    )
    client_dp_clipping: str = setting(
        "fixed", "Client-level DP clipping: fixed or adaptive.", choices=CLIENT_DP_CLIPPING
    )
    client_dp_clip_norm: float = setting(
        1.0,
        "Client-level DP: bound on a site's update norm (the initial bound if adaptive).",
        above=0,
        at_most=1e12,
    )
    client_dp_delta: float = setting(1e-5, "Client-level DP: delta.", above=0, below=1)
    secure_aggregation: bool = setting(
        False,
        "SecAgg+: the server learns only the sum of the sites' models "
        "(fedavg, sites weighted equally, no update validation).",
    )
    evaluate_with_training: bool = setting(
        True,
        "Each site evaluates the previous round's model in the same message that trains it: one "
        "exchange a round, the last round's evaluation on its own (not under SecAgg+).",
    )
    advise_only: bool = setting(
        False,
        "Only the advisory round: each site sends its k-anonymised summary, the server writes the "
        "consortium overview (overview.json, overview.md; experimental) in run-dir and trains nothing.",
    )
    advisor_predictor: str = setting(
        "",
        "The advisory round's predictor.json (default: the one shipped with claimpt); its recipe is "
        "how each site measures the AUROC it reaches alone.",
        max_length=MAX_TEXT,
    )
    run_dir: str = setting(
        "", "Where the server writes round checkpoints, rounds.csv and the final checkpoint.", max_length=MAX_TEXT
    )
    resume: bool = setting(False, "Continue from the last intact round checkpoint in run-dir.")
    site_registry: str = setting(
        "",
        "The consortium's enrolment (sites.json): sites named by their registered SuperNode keys, their "
        "statements checked against their identity keys ('': the one `claimpt server start` keeps, if any).",
        max_length=MAX_TEXT,
    )
    data_paths: str = setting(
        "",
        "Simulation only: the site directories, separated by commas, indexed by partition-id.",
        max_length=16 * MAX_TEXT,
    )
    signing_key: str = setting(
        "",
        "The server's Ed25519 private key (signing.key from `claimpt certs`) that "
        "signs every checkpoint (default: $CLAIMPT_SIGNING_KEY).",
        max_length=MAX_TEXT,
    )
    d_model: int = _field_of(ClaimTransformerConfig, "d_model")
    n_layers: int = _field_of(ClaimTransformerConfig, "n_layers")
    n_heads: int = _field_of(ClaimTransformerConfig, "n_heads")
    ffn_dim: int = _field_of(ClaimTransformerConfig, "ffn_dim")
    dropout: float = _field_of(ClaimTransformerConfig, "dropout")
    pre_layer_norm: bool = _field_of(ClaimTransformerConfig, "pre_layer_norm")
    time_encoding: str = _field_of(ClaimTransformerConfig, "time_encoding")

    def __post_init__(self) -> None:
        check_settings(self)  # every value: its type and range, before any rule below reads it
        if self.secure_aggregation and (self.strategy != "fedavg" or self.client_dp_noise > 0):
            raise ValueError(
                "secure-aggregation works with strategy fedavg and without client-dp-noise only: the "
                "others need each site's update, which SecAgg+ hides from the server"
            )
        if self.dp_epsilon > 0 and self.strategy == "fedprox":
            raise ValueError(
                "dp-epsilon does not combine with fedprox (DP-SGD's per-patient loss has no proximal term)"
            )
        self.vocabulary()  # checks target-vocabularies
        ClaimTransformerConfig(vocab_size=3, n_groups=1, **self.model_options())  # d-model divisible by n-heads
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
        """Parse Flower's run config (kebab-case keys): unknown keys, wrong types (TOML's `nan` and
        `inf` included) and values out of range are refused with a SettingError."""
        return settings_from(cls, run_config, what="run config")

    def to_run_config(self) -> dict[str, Any]:
        return {f.name.replace("_", "-"): getattr(self, f.name) for f in dataclasses.fields(self)}

    def model_options(self) -> dict[str, Any]:
        """The architecture part, as ClaimTransformerConfig takes it."""
        return architecture_options({name: getattr(self, name) for name in ARCHITECTURE})

    def site_paths(self) -> list[str]:
        return [p for p in self.data_paths.split(",") if p]


def local_seed(seed: int, server_round: int, site_key: int) -> int:
    """A client's training seed for one round: fixed by the run seed, the round and the site."""
    return (seed * 1_000_003 + server_round * 7_919 + site_key) % (2**31 - 1)
