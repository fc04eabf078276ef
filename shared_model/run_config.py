"""The federated run configuration: the contract between ServerApp and ClientApp (DESIGN 4).

Flower hands both apps `context.run_config` (from `[tool.flwr.app.config]` or overrides); both
parse it here, so the keys and their defaults live in one place.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

CLIENT_OPTIMIZER_STATES = ("reset", "keep")
CLIENT_DP_CLIPPING = ("fixed", "adaptive")
SECAGG_CLIPPING_RANGE = 8.0  # SecAgg+ quantises parameters in [-8, 8]; sites refuse to send anything outside
STRATEGIES = ("fedavg", "fedprox", "fedadam", "fedavgm", "fedmedian", "fedtrimmedavg", "krum", "multikrum")
#: robust rules that are not robust below a number of sites, and why
ROBUST_MINIMUM_SITES = {"fedtrimmedavg": 3, "krum": 5, "multikrum": 5}
ROBUST_RULES = {"fedtrimmedavg": "a trimmed mean drops at least one update per side and keeps one",
                "krum": "Krum assumes one attacker and needs n >= 2f + 3",
                "multikrum": "Krum assumes one attacker and needs n >= 2f + 3"}


@dataclass(frozen=True)
class FederatedRunConfig:
    num_server_rounds: int = 3
    strategy: str = "fedavg"
    local_epochs: int = 1
    client_optimizer: str = "reset"  # reset: fresh RMSprop state every round; keep: each site keeps its own
    batch_size: int = 100
    learning_rate: float = 1e-3
    seed: int = 0
    k_anonymity: int = 11
    max_vocab: int = 0  # 0: no limit
    min_available_clients: int = 2
    proximal_mu: float = 0.01
    server_learning_rate: float = 0.01
    server_momentum: float = 0.9
    trimmed_beta: float = 0.2
    max_update_norm: float = 0.0  # absolute L2 bound on an update; 0: off
    max_norm_ratio: float = 5.0  # drop updates above this multiple of the round's median norm; 0: off
    dp_epsilon: float = 0.0  # record-level DP-SGD at every site: epsilon spent over all rounds; 0: off
    # DP-SGD's per-patient gradient bound, and the share of its square reserved for the code
    # embedding's gradient (0: one flat bound). The best of those measured (C 0.1-1, flat or split,
    # README "Privacy"): after the first round a patient's gradient norm is ~0.3, the dense layers
    # ~90% of its square; C = 0.1 keeps the noise small, and half of C^2 for the embedding lets
    # its rows rise above that noise
    dp_clip_norm: float = 0.1
    dp_embedding_share: float = 0.5
    dp_delta: float = 0.0  # 0: each site uses 1 / n_site^1.1
    dp_accountant: str = "rdp"  # rdp (fast, an upper bound) or pld (tighter, slow to calibrate)
    client_dp_noise: float = 0.0  # client-level DP: server-side clipping + Gaussian noise multiplier; 0: off
    client_dp_clipping: str = "fixed"  # fixed (client-dp-clip-norm) or adaptive (Andrew et al. 2021)
    client_dp_clip_norm: float = 1.0  # bound on a site's update norm (initial bound if adaptive)
    client_dp_delta: float = 1e-5
    secure_aggregation: bool = False  # SecAgg+: the server sees only the sum of the sites' models (fedavg only)
    run_dir: str = ""
    resume: bool = False
    data_paths: str = ""  # simulation: comma-separated site directories, indexed by partition-id
    signing_key: str = ""  # server-side Ed25519 PEM key that signs every checkpoint (else $CLAIMPT_SIGNING_KEY)
    d_model: int = 100
    n_layers: int = 1
    n_heads: int = 2
    ffn_dim: int = 100
    dropout: float = 0.0
    pre_layer_norm: bool = False
    time_encoding: str = "day_of_year"

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        if self.client_optimizer not in CLIENT_OPTIMIZER_STATES:
            raise ValueError(f"client-optimizer must be one of {CLIENT_OPTIMIZER_STATES}, got {self.client_optimizer!r}")
        if self.client_dp_clipping not in CLIENT_DP_CLIPPING:
            raise ValueError(f"client-dp-clipping must be one of {CLIENT_DP_CLIPPING}, got {self.client_dp_clipping!r}")
        if self.dp_accountant not in ("rdp", "pld"):
            raise ValueError(f"dp-accountant must be rdp or pld, got {self.dp_accountant!r}")
        if not 0.0 <= self.dp_embedding_share < 1.0:
            raise ValueError(f"dp-embedding-share must be in [0, 1), got {self.dp_embedding_share}")
        if self.dp_epsilon < 0 or self.dp_clip_norm <= 0 or self.client_dp_noise < 0 or self.client_dp_clip_norm <= 0:
            raise ValueError("dp-epsilon and client-dp-noise must be >= 0, the clip norms > 0")
        if self.secure_aggregation and (self.strategy != "fedavg" or self.client_dp_noise > 0):
            raise ValueError("secure-aggregation works with strategy fedavg and without client-dp-noise only: the "
                             "others need each site's update, which SecAgg+ hides from the server")
        if self.dp_epsilon > 0 and self.strategy == "fedprox":
            raise ValueError("dp-epsilon does not combine with fedprox (DP-SGD's per-patient loss has no proximal term)")
        if self.num_server_rounds < 1 or self.local_epochs < 1 or self.k_anonymity < 1:
            raise ValueError("num-server-rounds, local-epochs and k-anonymity must be >= 1")
        needed = ROBUST_MINIMUM_SITES.get(self.strategy, 0)
        if self.min_available_clients < needed:
            raise ValueError(f"{self.strategy} means nothing with {self.min_available_clients} sites: it needs "
                             f"min-available-clients >= {needed} ({ROBUST_RULES[self.strategy]})")

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
        return {"d_model": self.d_model, "patient_dim": self.d_model, "n_layers": self.n_layers,
                "n_heads": self.n_heads, "ffn_dim": self.ffn_dim, "dropout": self.dropout,
                "pre_layer_norm": self.pre_layer_norm, "time_encoding": self.time_encoding}

    def site_paths(self) -> list[str]:
        return [p for p in self.data_paths.split(",") if p]


def _as_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def local_seed(seed: int, server_round: int, site_key: int) -> int:
    """A client's training seed for one round: fixed by the run seed, the round and the site."""
    return (seed * 1_000_003 + server_round * 7_919 + site_key) % (2**31 - 1)
