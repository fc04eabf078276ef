"""The wire contract (docs/architecture.md §4): what each message between server and site may carry.

Every record is a frozen dataclass whose fields are its keys (kebab-case on the wire), each with
a type and a range declared once, with `settings.setting`. Both sides check by them: a site
parses what the server sends before it touches patient data, and the server parses every reply
before it counts, sums or aggregates anything. A record with a key it does not know, without a
key it needs, or with a value of the wrong type, non-finite or out of range is refused whole.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shared_model.contract.run_config import MAX_ROUNDS
from shared_model.settings import (
    MAX_CODES,
    MAX_COUNT,
    MAX_EPOCHS,
    SettingError,
    check_settings,
    key_of,
    setting,
    settings_from,
)

MAX_JSON = 64 * 2**20  # characters of a vocabulary or model config sent as JSON


@dataclass(frozen=True)
class RoundInstructions:
    """The config record of a `train` or `evaluate` message: what the server asks of a site in one round."""

    server_round: int = setting(help="The round this message belongs to.", at_least=1, at_most=MAX_ROUNDS)
    vocabulary: str = setting(help="The consortium vocabulary (Vocabulary.to_json).", max_length=MAX_JSON)
    model_config: str = setting(help="The model's architecture (ClaimTransformerConfig.to_json).", max_length=MAX_JSON)
    local_epochs: int = setting(1, "Passes over the site's training data.", at_least=1, at_most=MAX_EPOCHS)
    proximal_mu: float = setting(0.0, "FedProx: weight of the proximal term.", at_least=0, at_most=1_000)
    run_id: str = setting(
        "", "The consortium run (its checkpoints' run_id): the site files what it spends under it.", max_length=128
    )
    evaluate_received: bool = setting(
        False,
        "Train messages: evaluate the model received (the previous round's) before training on it and "
        "reply with both, one exchange a round; a refused evaluation never refuses the training.",
    )

    def __post_init__(self) -> None:
        check_settings(self)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> RoundInstructions:
        return settings_from(cls, dict(config), what="round's instructions")


# --- what a site replies ---------------------------------------------------------------------------

SITE_KEY_RANGE = {"at_least": 0, "at_most": 2**31 - 2}  # shared_model.contract.passport.site_key
MAX_SECONDS = 7 * 24 * 3_600.0
MAX_LOSS = 1e6
MAX_CODE_TEXT = 1_000  # characters of one code or parent code


@dataclass(frozen=True)
class VocabularyReply:
    """The `vocabulary` record of a `query.vocabulary` reply: codes seen in at least k of the
    site's training patients, their patient counts and parent codes, and its training patients."""

    codes: list[str] = setting(help="Codes seen in >= k training patients.", max_length=MAX_CODES)
    counts: list[int] = setting(help="Training patients per code.", max_length=MAX_CODES)
    parents: list[str] = setting(help="Each code's parent code ('' for none).", max_length=MAX_CODES)
    patients: int = setting(help="The site's training patients.", at_least=1, at_most=MAX_COUNT)
    site_key: int = setting(help="The site's key (its pseudonym's number).", **SITE_KEY_RANGE)

    def __post_init__(self) -> None:
        check_settings(self)
        if not len(self.codes) == len(self.counts) == len(self.parents):
            raise SettingError("codes, counts and parents", "lists of one length")
        if len(set(self.codes)) != len(self.codes):
            raise SettingError("codes", "distinct")
        if not all(1 <= count <= self.patients for count in self.counts):
            raise SettingError("counts", "patient counts between 1 and the site's patients")
        if not all(0 < len(code) <= MAX_CODE_TEXT for code in self.codes) or not all(
            len(parent) <= MAX_CODE_TEXT for parent in self.parents
        ):
            raise SettingError("codes and parents", f"text of at most {MAX_CODE_TEXT} characters")


@dataclass(frozen=True)
class TrainMetrics:
    """The `metrics` record of a `train` reply. Under record-level DP the site sends its epsilon,
    delta and noise and no training loss (an un-noised function of its records)."""

    num_examples: int = setting(help="Training patients (FedAvg's weight, capped by the server).", at_least=1)
    site_key: int = setting(help="The site's key.", **SITE_KEY_RANGE)
    train_seconds: float = setting(help="Seconds of local training.", at_least=0, at_most=MAX_SECONDS)
    train_loss: float | None = setting(None, "Last epoch's loss (no DP only).", at_least=0, at_most=MAX_LOSS)
    train_nvp_loss: float | None = setting(None, "Its next-visit part.", at_least=0, at_most=MAX_LOSS)
    train_cp_loss: float | None = setting(None, "Its per-visit category part.", at_least=0, at_most=MAX_LOSS)
    dp_epsilon: float | None = setting(None, "Record-level epsilon spent in this run.", at_least=0, at_most=1e6)
    dp_delta: float | None = setting(None, "Its delta.", above=0, below=1)
    dp_noise_multiplier: float | None = setting(None, "DP-SGD's noise multiplier.", above=0, at_most=1e6)

    def __post_init__(self) -> None:
        check_settings(self)


@dataclass(frozen=True)
class EvaluateMetrics:
    """The `metrics` record of an `evaluate` reply: the global model on the site's held-out split."""

    num_examples: int = setting(help="Held-out patients.", at_least=1)
    site_key: int = setting(help="The site's key.", **SITE_KEY_RANGE)
    eval_loss: float = setting(help="Held-out pretraining loss.", at_least=0, at_most=MAX_LOSS)
    eval_recall_5: float = setting(help="Next-visit Recall@5.", at_least=0, at_most=1, key="eval-recall@5")
    eval_recall_10: float = setting(help="Next-visit Recall@10.", at_least=0, at_most=1, key="eval-recall@10")
    eval_recall_30: float = setting(help="Next-visit Recall@30.", at_least=0, at_most=1, key="eval-recall@30")
    eval_seconds: float = setting(help="Seconds of evaluation.", at_least=0, at_most=MAX_SECONDS)

    def __post_init__(self) -> None:
        check_settings(self)


@dataclass(frozen=True)
class SummaryReply:
    """The `summary` record of a `query.summary` reply: the site's summary for the transfer advisor."""

    summary: str = setting(help="SiteSummary.to_json: its fields are SUMMARY_FIELDS.", max_length=MAX_JSON)
    site_key: int = setting(help="The site's key.", **SITE_KEY_RANGE)

    def __post_init__(self) -> None:
        check_settings(self)


@dataclass(frozen=True)
class PrivacyStatement:
    """The `privacy-statement` record of vocabulary, summary and evaluation replies, and of train
    replies that carry an evaluation (client.statement): what the site applies and what its ledger
    spent in this run."""

    site_key: int = setting(help="The site's key.", **SITE_KEY_RANGE)
    k_anonymity: int = setting(help="The k the site applied.", at_least=1, at_most=MAX_COUNT)
    policy: str = setting(help="The site's policy as JSON (its fields: client.policy.SitePolicy).", max_length=20_000)
    policy_sha256: str = setting(help="The sha256 of that JSON.", max_length=64)
    dp_rounds: int = setting(help="Private rounds in this run, from the ledger.", at_least=0, at_most=MAX_ROUNDS)
    dp_epsilon: float = setting(help="Epsilon the ledger spent in this run.", at_least=0, at_most=1e6)
    dp_delta: float = setting(help="Its delta (0: none spent).", at_least=0, below=1)
    dp_noise_multiplier: float = setting(help="The last private round's noise multiplier.", at_least=0, at_most=1e6)
    dp_accountant: str = setting(help="How the ledger composes.", choices=("rdp",))
    signature: str = setting(
        "", "Ed25519 by the site's enrolled key over statement_payload, base64url ('' unsigned).", max_length=200
    )

    def __post_init__(self) -> None:
        check_settings(self)


def statement_payload(statement: Mapping[str, Any], flower_run: int) -> bytes:
    """What a site signs of its statement: every field but the signature, and the Flower run it
    is for (a statement copied into another run does not verify there)."""
    fields = {key: value for key, value in statement.items() if key != "signature"}
    return json.dumps({"statement": fields, "flower-run": flower_run}, sort_keys=True).encode()


STATEMENT = "privacy-statement"  # the site's privacy statement (client.statement; read by server.passport)
ARRAYS = "arrays"  # the one ArrayRecord of a train reply (its arrays are checked against the global model)
EVALUATION = "evaluation"  # a train reply's evaluation of the model it received (`evaluate-received`)
#: every record a site's reply to each message type may carry, by name: its schema, ARRAYS for the
#: model's arrays, None for the privacy statement. Optional records are those named in OPTIONAL.
REPLIES: dict[str, dict[str, type | str]] = {
    "query.vocabulary": {"vocabulary": VocabularyReply, STATEMENT: PrivacyStatement},
    "query.summary": {"summary": SummaryReply, STATEMENT: PrivacyStatement},
    "train": {ARRAYS: ARRAYS, "metrics": TrainMetrics, EVALUATION: EvaluateMetrics, STATEMENT: PrivacyStatement},
    "evaluate": {"metrics": EvaluateMetrics, STATEMENT: PrivacyStatement},
}
OPTIONAL = frozenset({STATEMENT, EVALUATION})
#: records Flower's strategies aggregate, which must be MetricRecords (the others may be either kind)
METRIC_RECORDS = frozenset({TrainMetrics, EvaluateMetrics})
#: what the JSON texts inside a reply hold: the summary's fields and the stated policy's fields
SUMMARY_FIELDS = ("format", "patients", "k", "code_counts", "age_band_counts", "task_counts", "own_auroc")


def released() -> dict[tuple[str, str], tuple[str, ...]]:
    """Every key of every record a site may send, by (message type, record): the one list of what
    leaves a site (docs/deployment.md's table is checked against it). ARRAYS stands for the
    model's weights; Flower's SecAgg+ stages add their own key material and masked vectors."""
    return {
        (message_type, record): (ARRAYS,)
        if schema == ARRAYS
        else tuple(key_of(field) for field in dataclasses.fields(schema))
        for message_type, records in REPLIES.items()
        for record, schema in records.items()
    }
