"""`ClaimTransformerConfig`: every architectural choice, serialised into every checkpoint."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shared_model.settings import MAX_CODES, MAX_GROUPS, SettingError, check_settings, setting, settings_from

TIME_ENCODINGS = ("day_of_year", "days_before+age")
#: the architecture choices a user makes (the others follow from the data or are Claim-PT's fixed sizes)
ARCHITECTURE = ("d_model", "n_layers", "n_heads", "ffn_dim", "dropout", "pre_layer_norm", "time_encoding")


@dataclass(frozen=True)
class ClaimTransformerConfig:
    """Defaults are the faithful Claim-PT architecture (docs/architecture.md §3); improvements are flags."""

    vocab_size: int = setting(help="Codes embedded, with padding and unknown.", at_least=3, at_most=MAX_CODES + 2)
    n_groups: int = setting(help="Pretraining target groups.", at_least=1, at_most=MAX_GROUPS)
    max_visits: int = setting(30, "Visits per patient (Claim-PT: 30).", at_least=1, at_most=1_000)
    max_codes: int = setting(10, "Codes per visit (Claim-PT: 10).", at_least=1, at_most=1_000)
    d_model: int = setting(
        100, "Width of the code, visit and patient vectors (Claim-PT: 100).", at_least=2, at_most=4_096
    )
    n_layers: int = setting(1, "Transformer layers (Claim-PT: 1).", at_least=1, at_most=64)
    n_heads: int = setting(2, "Attention heads (Claim-PT: 2).", at_least=1, at_most=64)
    ffn_dim: int = setting(100, "Feed-forward width (Claim-PT: 100).", at_least=1, at_most=16_384)
    patient_dim: int = setting(100, "Width of the patient vector (Claim-PT: 100).", at_least=1, at_most=4_096)
    dropout: float = setting(0.0, "Dropout rate (Claim-PT: 0).", at_least=0, below=1)
    pre_layer_norm: bool = setting(False, "Pre-LayerNorm blocks (Claim-PT: post-LayerNorm).")
    time_encoding: str = setting("day_of_year", "day_of_year (Claim-PT) or days_before+age.", choices=TIME_ENCODINGS)
    nvp_weight: float = setting(1.0, "Weight of the next-visit loss.", at_least=0, at_most=1_000)
    cp_weight: float = setting(1.0, "Weight of the per-visit category loss.", at_least=0, at_most=1_000)

    def __post_init__(self) -> None:
        check_settings(self, kebab=False)
        if self.d_model % self.n_heads:
            raise SettingError("d_model", f"divisible by n_heads ({self.n_heads})", found=self.d_model)

    @property
    def parameters(self) -> int:
        """The number of weights (within a few per cent: biases and norms left out), which a site
        holds to its policy before it builds a model a server described."""
        d, f = self.d_model, self.ffn_dim
        encoder = self.vocab_size * d + self.n_layers * (4 * d * d + 2 * d * f) + d * self.patient_dim
        return encoder + 2 * self.n_groups * max(d, self.patient_dim)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ClaimTransformerConfig:
        """A config from a mapping that crossed a boundary: unknown keys, wrong types and values out
        of range are refused (SettingError)."""
        return settings_from(cls, data, kebab=False, what="model config")

    @classmethod
    def from_json(cls, text: str) -> ClaimTransformerConfig:
        try:
            data = json.loads(text)
        except (TypeError, ValueError) as exc:
            raise SettingError("the model config", "a JSON object") from exc
        if not isinstance(data, dict):
            raise SettingError("the model config", "a JSON object")
        return cls.from_dict(data)


def architecture_options(values: Mapping[str, Any]) -> dict[str, Any]:
    """The ARCHITECTURE entries of `values` as ClaimTransformerConfig's keyword arguments (the
    patient vector is as wide as the model, as in Claim-PT)."""
    options = {name: values[name] for name in ARCHITECTURE}
    return {**options, "patient_dim": options["d_model"]}
