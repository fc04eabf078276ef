"""Property tests at the site's boundary: whatever values a coordinator sends (run config, round
instructions) and whatever a policy file says, the site either refuses with one of its fixed
sentences, writing nothing to its ledger, or admits a round that keeps every promise of its
policy. No other exception leaves the boundary.

The suite runs 200 examples per property; `HYPOTHESIS_PROFILE=bulk pytest
tests/test_wire_properties.py` runs 2,000 (tests/conftest.py).
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
import typing
from pathlib import Path

from flwr.app import Context, RecordDict
from hypothesis import event, given
from hypothesis import strategies as st

from client.admission import round_instructions, run_settings, site_privacy
from client.ledger import FileLedger
from client.policy import SitePolicy, load_policy
from client.replies import SiteRefusal
from shared_model.contract.messages import RoundInstructions
from shared_model.contract.run_config import FederatedRunConfig
from shared_model.data import DataValidationError
from shared_model.model.config import ClaimTransformerConfig
from shared_model.settings import Bounds, settings_from
from shared_model.tensors.vocabulary import Vocabulary

HOSTILE = st.sampled_from(
    [
        math.nan,
        math.inf,
        -math.inf,
        -1,
        -1.0,
        -(2**63),
        0,
        0.0,
        1e-300,
        1e300,
        2**63 - 1,
        2**70,
        10**400,  # beyond any float: JSON carries it
        True,
        False,
        "",
        "1",
        "nan",
        None,
        [1],
        {"a": 1},
        b"\x00",
    ]
)


def public_sentences(config: type) -> set[str]:
    """Every sentence a SettingError about `config` may carry out of the site."""
    kinds = typing.get_type_hints(config)
    return {
        f"{f.name.replace('_', '-')} must be {f.metadata.get('bounds', Bounds()).describe(kinds[f.name])}"
        for f in dataclasses.fields(config)
    } | {f"{f.name.replace('_', '-')} must be given" for f in dataclasses.fields(config)}


FIXED_REFUSALS = (
    {f"the run config does not read: {s}" for s in public_sentences(FederatedRunConfig)}
    | {"the run config does not read: the run config has a key that is not one of its settings"}
    | {f"the round's instructions do not read: {s}" for s in public_sentences(RoundInstructions)}
    | {
        "the round's instructions do not read: the round's instructions has a key that is not one of its settings",
        "the round's instructions do not read: the model config must be a JSON object",
        "the run config's settings contradict each other",
        "the model the server describes is larger than this site's policy allows",
        "the round's vocabulary does not read",
        "the model config does not fit the round's vocabulary",
        "this site trains only with record-level DP (dp-epsilon)",
        "dp-epsilon is above this site's ceiling",
        "local epochs differ from the run's DP noise plan",
        "the run's dp-delta does not read",
        "the run's DP settings give no noise this site can calibrate",
        "the run's DP noise is below this site's floor",
        "the run's privacy budget at this site is spent",
        "this site's lifetime privacy budget would be exceeded",
    }
)
# the model config's sentences name its snake_case keys
FIXED_REFUSALS |= {
    f"the round's instructions do not read: {s.replace('-', '_')}" for s in public_sentences(ClaimTransformerConfig)
} | {"the round's instructions do not read: d_model must be divisible by n_heads (2)"}

VOCABULARY = Vocabulary(("ICD10CM/A", "ICD10CM/B", "CPT/1"), (20, 15, 12), ("ICD10CM/A", "ICD10CM/B"), (0, 1, -1))
MODEL = ClaimTransformerConfig(vocab_size=VOCABULARY.size, n_groups=VOCABULARY.n_groups, d_model=8, ffn_dim=8)

RUN_CONFIG_KEYS = sorted(FederatedRunConfig().to_run_config())
INSTRUCTION_KEYS = [f.name.replace("_", "-") for f in dataclasses.fields(RoundInstructions)]
HUGE_MODEL = dataclasses.replace(MODEL, d_model=4_096, ffn_dim=16_384, n_layers=64)


@st.composite
def coordinator_messages(draw) -> tuple[dict, dict]:
    """A run config and a round's instructions as an honest coordinator would send them (few
    enough distinct values that the noise calibration, cached per process, stays fast), then up
    to three keys of either, drawn from every key there is, made hostile, removed or added."""
    epochs, rounds = draw(st.sampled_from([1, 2])), draw(st.sampled_from([1, 3]))
    strategy = draw(st.sampled_from(["fedavg"] * 4 + ["fedprox"]))
    run_config = {
        "dp-epsilon": draw(st.sampled_from([0.0, 1.0, 4.0, 8.0])),
        "dp-delta": draw(st.sampled_from([0.0, 1e-6, 1e-4, 0.5])),
        "batch-size": draw(st.sampled_from([25, 100])),
        "local-epochs": epochs,
        "num-server-rounds": rounds,
        "strategy": strategy,
        "k-anonymity": draw(st.sampled_from([1, 11])),
    }
    instructions = {
        "server-round": draw(st.integers(1, rounds + 1)),
        "local-epochs": epochs,
        "proximal-mu": 0.01 if strategy == "fedprox" else 0.0,
        "vocabulary": VOCABULARY.to_json(),
        "model-config": draw(st.sampled_from([MODEL.to_json()] * 6 + [HUGE_MODEL.to_json()])),
    }
    for _ in range(draw(st.sampled_from([0, 0, 1, 2, 3]))):
        mapping, keys = draw(st.sampled_from([(run_config, RUN_CONFIG_KEYS), (instructions, INSTRUCTION_KEYS)]))
        action = draw(st.sampled_from(["hostile", "hostile", "missing", "extra"]))
        if action == "extra":
            mapping[draw(st.sampled_from(["extra", "adversary", "dp_epsilon", "Server-Round"]))] = draw(HOSTILE)
        elif action == "missing":
            mapping.pop(draw(st.sampled_from(keys)), None)
        else:
            mapping[draw(st.sampled_from(keys))] = draw(HOSTILE)
    return run_config, instructions


POLICIES = st.builds(
    SitePolicy,
    require_dp=st.booleans(),
    dp_epsilon=st.sampled_from([0.0, 2.0]),
    max_run_epsilon=st.sampled_from([0.0, 4.0]),
    lifetime_epsilon=st.sampled_from([0.0, 3.0, 20.0]),
    max_delta=st.sampled_from([0.0, 1e-5]),
    min_noise_multiplier=st.sampled_from([0.0, 0.5, 5.0]),
)


@st.composite
def hostile_mapping(draw, honest: dict) -> dict:
    """Honest values for some keys, hostile ones for others, some keys missing, sometimes one extra."""
    mapping = {}
    for key, values in honest.items():
        choice = draw(st.sampled_from(["honest"] * 12 + ["hostile", "missing"]))
        if choice != "missing":
            mapping[key] = draw(values if choice == "honest" else HOSTILE)
    if draw(st.integers(0, 7)) == 0:
        mapping[draw(st.sampled_from(["extra", "adversary", "dp_epsilon"]))] = draw(HOSTILE)
    return mapping


def admit(policy: SitePolicy, run_config: dict, instructions: dict, n_train: int, ledger_dir: Path):
    context = Context(
        run_id=1, node_id=1, node_config={"state-dir": str(ledger_dir)}, state=RecordDict(), run_config={}
    )
    settings_ = run_settings(run_config)
    read, _, _ = round_instructions(instructions, policy)
    return settings_, read, site_privacy(context, policy, settings_, n_train, read.server_round, read.local_epochs)


@given(policy=POLICIES, messages=coordinator_messages(), n_train=st.sampled_from([400, 2_000]))
def test_the_site_refuses_or_keeps_its_policy_whatever_the_coordinator_sends(
    policy: SitePolicy, messages: tuple[dict, dict], n_train: int
) -> None:
    run_config, instructions = messages
    with tempfile.TemporaryDirectory() as directory:
        ledger = FileLedger(Path(directory) / "privacy-ledger.jsonl")
        try:
            settings_, read, privacy = admit(policy, run_config, instructions, n_train, Path(directory))
        except SiteRefusal as refusal:
            event(f"refused: {str(refusal)[:40]}")
            assert str(refusal) in FIXED_REFUSALS, str(refusal)
            assert ledger.entries() == []  # nothing written to the ledger
            return
        # admitted: every value in range and every promise of the policy kept
        for value in (*dataclasses.astuple(settings_), *dataclasses.astuple(read)):
            assert not isinstance(value, float) or math.isfinite(value)
        assert 1 <= read.server_round and 1 <= read.local_epochs and read.proximal_mu >= 0
        event("admitted " + ("without DP" if privacy is None else "with DP"))
        if privacy is None:
            assert not policy.dp_required and policy.epsilon_for(settings_.dp_epsilon) == 0
            assert ledger.entries() == []
            return
        plan = privacy.plan
        assert math.isfinite(plan.noise_multiplier) and plan.noise_multiplier > 0
        assert plan.noise_multiplier >= policy.min_noise_multiplier
        assert 0 < plan.delta <= policy.max_delta_for(n_train)
        assert not policy.max_run_epsilon or plan.budget <= policy.max_run_epsilon
        assert privacy.epsilon <= plan.budget * (1 + 1e-6)
        assert not policy.lifetime_epsilon or ledger.epsilon(plan.delta) <= policy.lifetime_epsilon * (1 + 1e-6)
        assert len(ledger.entries()) == 1 and ledger.entries()[0].round == read.server_round


POLICY_VALUES = {
    "k_anonymity": st.sampled_from([2, 11]),
    "require_dp": st.booleans(),
    "dp_epsilon": st.sampled_from([0.0, 2.0]),
    "max_delta": st.sampled_from([0.0, 1e-5]),
    "lifetime_epsilon": st.sampled_from([0.0, 20.0]),
    "min_noise_multiplier": st.sampled_from([0.0, 0.5]),
    "max_evaluations_per_run": st.sampled_from([0, 3]),
    "share_task_counts": st.booleans(),
}


def toml_value(value) -> str | None:
    """`value` as TOML writes it (nan and inf included), or None where TOML has no such value."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, int):
        return str(value) if -(2**63) <= value < 2**63 else None
    if isinstance(value, str):
        return '"' + value + '"'
    if isinstance(value, list):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return None


@given(values=hostile_mapping(POLICY_VALUES))
def test_a_policy_file_is_read_whole_or_refused(values: dict) -> None:
    lines = [f"{key} = {text}" for key, value in values.items() if (text := toml_value(value)) is not None]
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "policy.toml"
        path.write_text("\n".join(lines) + "\n")
        try:
            policy = load_policy(path)
        except DataValidationError as error:
            assert str(path) in str(error)
            return
    for field in dataclasses.fields(policy):
        value = getattr(policy, field.name)
        assert type(value) is type(field.default), field.name
        assert field.metadata["bounds"].admits(value) and (not isinstance(value, float) or math.isfinite(value))
    assert settings_from(SitePolicy, dataclasses.asdict(policy), kebab=False) == policy
