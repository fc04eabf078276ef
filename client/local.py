"""What a site computes, independent of Flower: k-anonymised code counts, local training and
evaluation of the shared model on the site's own tensorised data (never sent anywhere)."""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass

import keras
import numpy as np

from shared_model.contract.run_config import local_seed
from shared_model.contract.site_summary import OwnAurocRecipe
from shared_model.data import MedsDataset, read_meds
from shared_model.model.config import ClaimTransformerConfig
from shared_model.model.objectives import ProximalTerm
from shared_model.model.transformer import PretrainingModel
from shared_model.tensors.pipeline import make_dataset
from shared_model.tensors.tasks import NEXT_VISIT, k_anonymous_train_code_counts, task_arrays, train_patients
from shared_model.tensors.tensorize import Arrays
from shared_model.tensors.vocabulary import Vocabulary
from shared_model.training.fit import (
    PRETRAIN_TARGETS,
    PretrainSettings,
    compile_pretraining,
    evaluate_nvp,
    fit_pretraining,
    seed_round,
)
from shared_model.training.own_auroc import measure_own_auroc
from shared_model.training.privacy import DPSGD, DPSettings, SitePrivacyPlan

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=4)
def load_site(path: str) -> MedsDataset:
    """The site's validated dataset, read once per process (Flower calls the app per message)."""
    return read_meds(path)


@functools.lru_cache(maxsize=8)
def own_auroc(path: str, task: str, recipe: OwnAurocRecipe, k: int) -> float | None:
    """The AUROC the site reaches alone on `task`, as it may release it (None: not at `k`);
    measured once per process: asking again costs the site nothing."""
    log.info("measuring the site's own AUROC on %s (%d seeds)", task, len(recipe.seeds))
    return measure_own_auroc(load_site(path), task, recipe, k)


@functools.lru_cache(maxsize=4)
def vocabulary_of(vocabulary_json: str) -> Vocabulary:
    """The round's vocabulary, parsed (and checked: Vocabulary.from_json) once per process."""
    return Vocabulary.from_json(vocabulary_json)


@functools.lru_cache(maxsize=4)
def site_samples(path: str, vocabulary_json: str, k: int) -> dict[str, Arrays]:
    """The site's next-visit samples under the server's vocabulary, restricted to the codes this
    site itself has seen in >= k patients (the others become UNK): a server that slips a guessed
    rare code into the vocabulary learns nothing from whether its embedding row moves."""
    dataset = load_site(path)
    own = k_anonymous_code_counts(dataset, k).codes
    return task_arrays(dataset, NEXT_VISIT, vocabulary_of(vocabulary_json).restricted_to(own))


@dataclass(frozen=True)
class CodeCounts:
    """Patient counts of codes seen in at least k train-split patients, their parent codes, and
    the number of train-split patients (which caps the site's FedAvg weight at the server)."""

    codes: list[str]
    counts: list[int]
    parents: list[str]
    patients: int


def k_anonymous_code_counts(dataset: MedsDataset, k: int) -> CodeCounts:
    counts = k_anonymous_train_code_counts(dataset, k)
    parent_of = {
        c: p[0]
        for c, p in zip(dataset.codes["code"], dataset.codes["parent_codes"], strict=True)
        if p is not None and len(p)
    }
    codes = [str(c) for c in counts.index]
    return CodeCounts(
        codes,
        [int(n) for n in counts.to_numpy()],
        [str(parent_of.get(c, "")) for c in codes],
        train_patients(dataset),
    )


RELEASED_DECIMALS = 3  # losses and Recall@k leave the site rounded: each query tells less


def released(value: float) -> float:
    return round(float(value), RELEASED_DECIMALS)


@dataclass(frozen=True)
class LocalResult:
    weights: list[np.ndarray]
    num_examples: int
    metrics: dict[str, float]
    optimizer_state: list[np.ndarray] | None = None  # stays on the site (Flower's context.state)


@functools.lru_cache(maxsize=1)
def _compiled_model(config_json: str, learning_rate: float, precision: str) -> PretrainingModel:
    """One compiled model per process, reused every round: no retracing and nothing accumulates
    in TF's graph state however many rounds run in one process."""
    keras.backend.clear_session()
    model = PretrainingModel(ClaimTransformerConfig.from_json(config_json), precision)
    compile_pretraining(model, learning_rate)
    return model


def _optimizer_slots(model: PretrainingModel) -> list:
    """The optimizer's state variables (step count, RMSprop accumulators; built at compile)."""
    return [v for v in model.optimizer.variables if v.name != "learning_rate"]


def _start_round(model: PretrainingModel, weights: list[np.ndarray], optimizer_state: list[np.ndarray] | None) -> None:
    """Global weights in; the site's optimizer state from its last round, or zeros (a fresh
    RMSprop, whose first steps are about 3x the learning rate while its averages warm up)."""
    model.set_weights(weights)
    slots = _optimizer_slots(model)
    if optimizer_state is not None and [s.shape for s in optimizer_state] != [tuple(v.shape) for v in slots]:
        log.warning("stored optimizer state does not fit the model; starting this round with a fresh optimizer")
        optimizer_state = None
    for index, variable in enumerate(slots):
        value = optimizer_state[index] if optimizer_state is not None else np.zeros(variable.shape)
        variable.assign(np.asarray(value, dtype=variable.dtype))


def trainable_part(model: PretrainingModel, weights: list[np.ndarray]) -> list[np.ndarray]:
    """Of `weights` (one array per model.weights), those of the trainable variables, in their order."""
    by_path = {variable.path: value for variable, value in zip(model.weights, weights, strict=True)}
    return [by_path[variable.path] for variable in model.trainable_variables]


@dataclass(frozen=True)
class LocalPrivacy:
    """Record-level DP for one round of local training: the site's plan, DP-SGD's clip norm, the
    private rounds the site had trained before this one and the epsilon spent once it is done."""

    plan: SitePrivacyPlan
    clip_norm: float
    embedding_share: float
    rounds_done: int
    epsilon: float
    noise_seed: int  # from the site's OS entropy: the server can neither know nor replay the noise


def train_locally(
    weights: list[np.ndarray],
    config: ClaimTransformerConfig,
    samples: dict[str, Arrays],
    *,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
    server_round: int,
    key: int,
    proximal_mu: float = 0.0,
    optimizer_state: list[np.ndarray] | None = None,
    privacy: LocalPrivacy | None = None,
    precision: str = "float32",
) -> LocalResult:
    """`epochs` passes over the site's train split, starting from the global weights (and from
    `optimizer_state`, this site's optimizer state after its previous round, when given); with
    `privacy`, DP-SGD on Poisson-sampled batches (an epoch is then 1 / q steps). `precision` is
    the run's (float32 or bfloat16), the same at every site."""
    round_seed = local_seed(seed, server_round, key)
    model = _compiled_model(config.to_json(), learning_rate, precision)
    seed_round(model, round_seed)
    _start_round(model, weights, optimizer_state)
    if proximal_mu > 0 or model.proximal is not None:  # once set, the compiled step keeps the term (mu may be 0)
        if model.proximal is None:
            model.use_proximal(ProximalTerm(model.trainable_variables))
        model.proximal.anchor_at(trainable_part(model, weights), proximal_mu)
    n_train = len(samples["train"]["subject_id"])
    if privacy is not None:
        settings = DPSettings(
            privacy.clip_norm,
            privacy.plan.noise_multiplier,
            privacy.plan.sampling_rate * n_train,
            privacy.embedding_share,
        )
        step = model.privacy or model.last_privacy
        if step is None or not step.reconfigure(settings, privacy.noise_seed):
            step = DPSGD(model, settings, privacy.noise_seed)
        model.use_privacy(step)
    else:
        model.use_privacy(None)
    started = time.perf_counter()
    history = fit_pretraining(
        model,
        [samples["train"]],
        None,
        PretrainSettings(
            epochs=epochs,
            batch_size=batch_size,
            learning_rate=learning_rate,
            seed=privacy.noise_seed if privacy is not None else round_seed,
        ),
        early_stopping=False,
        poisson_rate=privacy.plan.sampling_rate if privacy is not None else 0.0,
    )
    metrics = {"train-seconds": round(time.perf_counter() - started, 1)}
    if privacy is None:  # under DP the training loss is an un-noised function of the records: not sent
        metrics.update(
            {
                "train-loss": released(history.history["loss"][-1]),
                "train-nvp-loss": released(history.history["nvp_loss"][-1]),
                "train-cp-loss": released(history.history["cp_loss"][-1]),
            }
        )
    return LocalResult(
        [np.asarray(w) for w in model.get_weights()], n_train, metrics, [np.asarray(v) for v in _optimizer_slots(model)]
    )


def evaluate_locally(
    weights: list[np.ndarray],
    config: ClaimTransformerConfig,
    samples: dict[str, Arrays],
    learning_rate: float = 1e-3,
    precision: str = "float32",
) -> LocalResult:
    """Loss and NVP Recall@k of the global model on the site's held-out split."""
    started = time.perf_counter()
    model = _compiled_model(config.to_json(), learning_rate, precision)
    model.set_weights(weights)
    held_out = samples["held_out"]
    scores = model.evaluate(
        make_dataset([held_out], target=PRETRAIN_TARGETS, batch_size=256, shuffle=False), verbose=0, return_dict=True
    )
    metrics = {
        "eval-loss": released(scores["loss"]),
        **{f"eval-{k}": released(v) for k, v in evaluate_nvp(model, [held_out]).items()},
        "eval-seconds": round(time.perf_counter() - started, 1),
    }
    return LocalResult([], len(held_out["subject_id"]), metrics)
