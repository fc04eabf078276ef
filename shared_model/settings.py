"""Every setting declared once: `setting`, a dataclass field that carries its help text and range,
and the training settings (frozen dataclasses, no TensorFlow import, so the command line can build
its options from them cheaply)."""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

ADAPTATIONS = ("probe", "probe-then-finetune", "finetune")
ACCOUNTANTS = ("rdp", "pld")  # the DP accountants (shared_model.training.privacy)
# the ranges every setting is held to: generous for any real use, finite for every value
MAX_COUNT = 10**9  # patients, codes seen
MAX_CODES = 10**6  # vocabulary entries
MAX_GROUPS = 10**5  # pretraining target groups
MAX_EPOCHS = 10_000
MAX_BATCH = 100_000
MAX_SEED = 2**63 - 1  # any int64
PRECISION_AUTO = "auto"
PRECISIONS = (PRECISION_AUTO, "float32", "bfloat16")  # of the training heads' matmuls (shared_model.model.precision)
#: what a run config may name: one precision for every site, whatever each site's hardware
FIXED_PRECISIONS = ("float32", "bfloat16")
PRECISION_HELP = (
    "Of the training heads' matmuls: float32, or bfloat16 (weights, losses and the encoder stay "
    "float32); auto: bfloat16 where the machine has it natively (a GPU of compute capability 8.0+, "
    "or a CPU with AMX or AVX512-BF16), else float32."
)
MODELS = ("transformer", "logreg", "gbm")  # the transformer, or a count-feature baseline


class SettingError(ValueError):
    """A value outside its setting's type or range.

    `str()` says which key and what it must be, and (for a person at a terminal) what was found;
    `public` is the same without the value: a fixed sentence per key, safe for a site to send
    back to whoever sent the value."""

    def __init__(self, key: str, expected: str, found: object = dataclasses.MISSING, public: str = "") -> None:
        self.key, self.expected = key, expected
        self.public = public or f"{key} must be {expected}"
        shown = "" if found is dataclasses.MISSING else f", got {_shown(found)}"
        super().__init__(f"{key} must be {expected}{shown}")


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


@dataclass(frozen=True)
class Bounds:
    """The range of a setting. Every check is written so that a value it did not foresee (NaN, a
    wrong type) fails: `admits` is true only when each stated bound holds."""

    at_least: float | None = None
    above: float | None = None
    at_most: float | None = None
    below: float | None = None
    choices: tuple[str, ...] | None = None
    max_length: int | None = None  # characters of a string, items of a list

    def admits(self, value: Any) -> bool:
        if isinstance(value, str | list | tuple):
            if self.max_length is not None and not len(value) <= self.max_length:
                return False
            return self.choices is None or value in self.choices
        if isinstance(value, bool):
            return True
        checks = (
            (self.at_least, lambda b: value >= b),
            (self.above, lambda b: value > b),
            (self.at_most, lambda b: value <= b),
            (self.below, lambda b: value < b),
        )
        return all(bound is None or bool(holds(bound)) for bound, holds in checks)

    def describe(self, kind: type) -> str:
        """What a value must be, in words: 'an integer in [1, 10000]', 'one of rdp, pld'."""
        if self.choices is not None:
            return "one of " + ", ".join(self.choices)
        noun = {int: "an integer", float: "a finite number", bool: "true or false", str: "text"}.get(kind, "a list")
        if self.max_length is not None:
            return f"{noun} of at most {self.max_length} {'characters' if kind is str else 'items'}"
        low = f"[{_number(self.at_least)}" if self.at_least is not None else None
        low = low or (f"({_number(self.above)}" if self.above is not None else None)
        high = f"{_number(self.at_most)}]" if self.at_most is not None else None
        high = high or (f"{_number(self.below)})" if self.below is not None else None)
        if low and high:
            return f"{noun} in {low}, {high}"
        if low:
            return f"{noun} {'>=' if low[0] == '[' else '>'} {low[1:]}"
        if high:
            return f"{noun} {'<=' if high[-1] == ']' else '<'} {high[:-1]}"
        return noun


def _number(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def setting(default: Any = dataclasses.MISSING, help: str = "", *, key: str = "", **bounds: Any) -> Any:
    """A config field with its help text, from which the command line makes its option
    (shared_model.runtime.options), and its range (`Bounds`: at_least, above, at_most, below,
    choices, max_length), which `check_settings` holds every value to. `key` names it where its
    kebab-case name cannot (a wire key such as `eval-recall@5`)."""
    return dataclasses.field(default=default, metadata={"help": help, "bounds": Bounds(**bounds), "key": key})


def key_of(field: dataclasses.Field, kebab: bool = True) -> str:
    """The name a field has outside Python: its `key`, else its kebab-case (or plain) name."""
    return field.metadata.get("key") or (field.name.replace("_", "-") if kebab else field.name)


@functools.cache
def _kinds(config: type) -> dict[str, Any]:
    return typing.get_type_hints(config)


def checked_value(key: str, kind: Any, bounds: Bounds, value: Any) -> Any:
    """`value` as a setting of type `kind` within `bounds` (an int is taken for a float), or a
    SettingError. Types are strict: a bool is not a number, a number is not text."""
    optional = typing.get_origin(kind) in (typing.Union, types.UnionType) and type(None) in typing.get_args(kind)
    if optional:
        if value is None:
            return None
        (kind,) = [k for k in typing.get_args(kind) if k is not type(None)]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        try:
            value = float(value)
        except OverflowError as exc:  # an integer beyond any float (JSON allows it)
            raise SettingError(key, bounds.describe(kind), found=value) from exc
    origin = typing.get_origin(kind)
    if origin is list:
        (item,) = typing.get_args(kind)
        if not isinstance(value, list) or not bounds.admits(value):
            raise SettingError(key, bounds.describe(list), found=value)
        return [checked_value(key, item, Bounds(), v) for v in value]
    valid = isinstance(value, kind) and (kind is bool or not isinstance(value, bool))
    if valid and kind is float:
        valid = math.isfinite(value)
    if not valid or not bounds.admits(value):
        raise SettingError(key, bounds.describe(kind), found=value)
    return value


def check_settings(instance: Any, *, kebab: bool = True) -> None:
    """Hold every field of a frozen settings dataclass to its type and range (from its
    `__post_init__`); ints given for float fields become floats."""
    kinds = _kinds(type(instance))
    for field in dataclasses.fields(instance):
        key = key_of(field, kebab)
        bounds = field.metadata.get("bounds", Bounds())
        value = checked_value(key, kinds[field.name], bounds, getattr(instance, field.name))
        if value is not getattr(instance, field.name):
            object.__setattr__(instance, field.name, value)


def toml_value(value: Any) -> str:
    """A setting's value as TOML writes it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(map(toml_value, value)) + "]"
    return repr(value)


def settings_toml(values: Any, *, kebab: bool = True) -> str:
    """A settings dataclass instance as a TOML file, every key with its help as a comment: what
    an operator starts a file from (`claimpt site policy --example`)."""
    fields = dataclasses.fields(values)
    assignments = [f"{key_of(f, kebab)} = {toml_value(getattr(values, f.name))}" for f in fields]
    width = max(map(len, assignments)) + 2
    return "".join(f"{a:<{width}}# {f.metadata['help']}\n" for a, f in zip(assignments, fields, strict=True))


def settings_table(config: type, *, kebab: bool = True) -> str:
    """A settings dataclass's keys as a Markdown table: key, default, what a value must be, meaning."""
    kinds = _kinds(config)
    rows = ["| key | default | a value must be | meaning |", "|---|---|---|---|"]
    for field in dataclasses.fields(config):
        allowed = field.metadata["bounds"].describe(kinds[field.name])
        rows.append(
            f"| `{key_of(field, kebab)}` | `{toml_value(field.default)}` | {allowed} | {field.metadata['help']} |"
        )
    return "\n".join(rows) + "\n"


def settings_from(config: type, values: Mapping[str, Any], *, kebab: bool = True, what: str = "settings") -> Any:
    """`config` built from a mapping that crossed a boundary (a run config, a message's config, a
    policy file): unknown keys are refused, missing ones take their defaults, every value is
    checked by type and range (`check_settings`, from the class's `__post_init__`)."""
    names = {key_of(f, kebab): f.name for f in dataclasses.fields(config)}
    arguments = {}
    for key, value in values.items():
        name = names.get(key) if isinstance(key, str) else None
        if name is None:
            known = sorted(names)
            raise SettingError(
                str(key),
                f"one of the {what}'s keys" + (f" ({', '.join(known)})" if len(known) <= 16 else ""),
                public=f"the {what} has a key that is not one of its settings",
            )
        arguments[name] = value
    missing = [
        key_of(f, kebab)
        for f in dataclasses.fields(config)
        if f.name not in arguments and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise SettingError(missing[0], "given")
    return config(**arguments)


@dataclass(frozen=True)
class VocabularySettings:
    """Which codes the model embeds and which code groups it learns to predict in pretraining
    (shared_model.tensors.vocabulary)."""

    min_count: int = setting(
        1, "Keep codes seen in at least this many training patients.", at_least=1, at_most=MAX_COUNT
    )
    max_vocab: int = setting(
        0, "Keep at most this many codes, most frequent first (0: every code).", at_least=0, at_most=MAX_CODES
    )
    target_vocabularies: str = setting(
        "ICD10CM",
        "Coding systems whose code groups are the pretraining targets, separated by commas; patterns "
        "match too (D* for every code starting with D); * for every system but event markers (also "
        "the fallback when none is in the data).",
        max_length=1_000,
    )
    max_groups: int = setting(
        1000, "Keep at most this many target groups, most frequent first.", at_least=1, at_most=MAX_GROUPS
    )

    def __post_init__(self) -> None:
        check_settings(self)
        systems = self.target_systems
        if not all(systems) or any("/" in s for s in systems):
            raise ValueError(
                "target-vocabularies must be coding systems separated by commas (or *), "
                f"got {self.target_vocabularies!r}"
            )

    @property
    def target_systems(self) -> tuple[str, ...]:
        return tuple(s.strip() for s in self.target_vocabularies.split(","))


@dataclass(frozen=True)
class PretrainSettings:
    epochs: int = setting(10, "Maximum passes over the pooled training data.", at_least=1, at_most=MAX_EPOCHS)
    batch_size: int = setting(100, "Patients per step (Claim-PT: 100).", at_least=1, at_most=MAX_BATCH)
    learning_rate: float = setting(1e-3, "RMSprop learning rate (Claim-PT: 1e-3).", above=0, at_most=10)
    patience: int = setting(
        2, "Early stopping: epochs without tuning-loss improvement.", at_least=1, at_most=MAX_EPOCHS
    )
    seed: int = setting(0, "Random seed (initialisation and batch order).", at_least=0, at_most=MAX_SEED)
    precision: str = setting(PRECISION_AUTO, PRECISION_HELP, choices=PRECISIONS)

    def __post_init__(self) -> None:
        check_settings(self)


@dataclass(frozen=True)
class FinetuneSettings:
    """How a pretrained encoder is adapted to a task (`adaptation`):

    - "probe": fit only the task head on the frozen encoder (L2 logistic regression for binary
      tasks, `probe_epochs` of Adam otherwise);
    - "probe-then-finetune": the probe, then all layers with layer-wise learning-rate decay,
      keeping whichever scores better on the tuning cohort;
    - "finetune": Claim-PT's recipe, all layers with Adam 1e-4 from a fresh head.

    Models trained from scratch always train all layers ("finetune")."""

    adaptation: str = setting(
        "probe",
        "With a checkpoint: probe (head only on the frozen encoder), "
        "probe-then-finetune, or finetune (Claim-PT: all layers).",
        choices=ADAPTATIONS,
    )
    epochs: int = setting(
        40,
        "Maximum epochs of training all layers (early stopping on the tuning cohort).",
        at_least=1,
        at_most=MAX_EPOCHS,
    )
    batch_size: int = setting(32, "Patients per step.", at_least=1, at_most=MAX_BATCH)
    learning_rate: float = setting(1e-4, "Adam learning rate of the task head (Claim-PT: 1e-4).", above=0, at_most=10)
    layer_decay: float = setting(
        0.8, "Learning-rate factor per layer below the head (1: uniform).", at_least=0, at_most=1
    )
    gradual_unfreeze: bool = setting(False, "Unfreeze one more layer group per epoch, head first.")
    patience: int = setting(4, "Early stopping patience in epochs.", at_least=1, at_most=MAX_EPOCHS)
    seed: int = setting(0, "Random seed (cohort draw, initialisation, batch order).", at_least=0, at_most=MAX_SEED)
    probe_epochs: int = setting(
        40,
        "Adam epochs of the head-only phase for next_visit (binary tasks use logistic regression).",
        at_least=1,
        at_most=MAX_EPOCHS,
    )
    probe_learning_rate: float = setting(1e-3, "Adam learning rate of the head-only phase.", above=0, at_most=10)
    code_counts: bool = setting(
        True,
        "Binary tasks: the logistic probe also fits a linear head on log(1 + count) of each code in "
        "the input, beside the patient vector (which keeps whether codes are common, not how many); "
        "later training leaves it as fitted.",
    )
    guard: bool = setting(
        True,
        "With a checkpoint and a binary task: also fit the same network from scratch and the count "
        "baseline on the cohort, and keep the pretrained model unless the tuning patients show it "
        "clearly worse (shared_model.training.guard).",
    )

    def __post_init__(self) -> None:
        check_settings(self)
