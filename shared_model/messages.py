"""The wire contract (docs/architecture.md §4): what each message between server and site may carry.

Every record is a frozen dataclass whose fields are its keys (kebab-case on the wire), each with
a type and a range declared once, with `settings.setting`. Both sides check by them: a site
parses what the server sends before it touches patient data, and the server parses every reply
before it counts, sums or aggregates anything. A record with a key it does not know, without a
key it needs, or with a value of the wrong type, non-finite or out of range is refused whole.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shared_model.run_config import MAX_ROUNDS
from shared_model.settings import MAX_EPOCHS, check_settings, setting, settings_from

MAX_JSON = 64 * 2**20  # characters of a vocabulary or model config sent as JSON


@dataclass(frozen=True)
class RoundInstructions:
    """The config record of a `train` or `evaluate` message: what the server asks of a site in one round."""

    server_round: int = setting(help="The round this message belongs to.", at_least=1, at_most=MAX_ROUNDS)
    vocabulary: str = setting(help="The consortium vocabulary (Vocabulary.to_json).", max_length=MAX_JSON)
    model_config: str = setting(help="The model's architecture (ClaimTransformerConfig.to_json).", max_length=MAX_JSON)
    local_epochs: int = setting(1, "Passes over the site's training data.", at_least=1, at_most=MAX_EPOCHS)
    proximal_mu: float = setting(0.0, "FedProx: weight of the proximal term.", at_least=0, at_most=1_000)

    def __post_init__(self) -> None:
        check_settings(self)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> RoundInstructions:
        return settings_from(cls, dict(config), what="round's instructions")
