"""`ClaimTransformerConfig`: every architectural choice, serialised into every checkpoint."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shared_model.settings import setting

TIME_ENCODINGS = ("day_of_year", "days_before+age")
#: the architecture choices a user makes (the others follow from the data or are Claim-PT's fixed sizes)
ARCHITECTURE = ("d_model", "n_layers", "n_heads", "ffn_dim", "dropout", "pre_layer_norm", "time_encoding")


@dataclass(frozen=True)
class ClaimTransformerConfig:
    """Defaults are the faithful Claim-PT architecture (docs/architecture.md §3); improvements are flags."""

    vocab_size: int
    n_groups: int
    max_visits: int = 30
    max_codes: int = 10
    d_model: int = setting(100, "Width of the code, visit and patient vectors (Claim-PT: 100).")
    n_layers: int = setting(1, "Transformer layers (Claim-PT: 1).")
    n_heads: int = setting(2, "Attention heads (Claim-PT: 2).")
    ffn_dim: int = setting(100, "Feed-forward width (Claim-PT: 100).")
    patient_dim: int = 100
    dropout: float = setting(0.0, "Dropout rate (Claim-PT: 0).")
    pre_layer_norm: bool = setting(False, "Pre-LayerNorm blocks (Claim-PT: post-LayerNorm).")
    time_encoding: str = setting("day_of_year", "day_of_year (Claim-PT) or days_before+age.")
    nvp_weight: float = 1.0
    cp_weight: float = 1.0

    def __post_init__(self) -> None:
        if self.vocab_size < 3 or self.n_groups < 1:
            raise ValueError(f"vocab_size must be >= 3 and n_groups >= 1, got {self.vocab_size}, {self.n_groups}")
        if self.d_model < 2 or self.n_layers < 1 or self.n_heads < 1 or self.ffn_dim < 1:
            raise ValueError("d-model must be >= 2, n-layers, n-heads and ffn-dim >= 1")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}")
        if self.time_encoding not in TIME_ENCODINGS:
            raise ValueError(f"time_encoding must be one of {TIME_ENCODINGS}, got {self.time_encoding!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClaimTransformerConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> ClaimTransformerConfig:
        return cls.from_dict(json.loads(text))


def architecture_options(values: Mapping[str, Any]) -> dict[str, Any]:
    """The ARCHITECTURE entries of `values` as ClaimTransformerConfig's keyword arguments (the
    patient vector is as wide as the model, as in Claim-PT)."""
    options = {name: values[name] for name in ARCHITECTURE}
    return {**options, "patient_dim": options["d_model"]}
