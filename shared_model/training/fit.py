"""Pretraining (NVP + CP, RMSprop) and fine-tuning (task head, layer-wise Adam) with Keras fit."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import scipy.sparse as sp
import tensorflow as tf
from sklearn.linear_model import LogisticRegression
from tensorflow.python.eager import context as tf_context

from shared_model.evaluation.metrics import auroc, recall_at_k
from shared_model.model.config import ClaimTransformerConfig
from shared_model.model.precision import resolve_precision
from shared_model.model.transformer import TASK_BINARY, HeadOnly, PretrainingModel, TaskModel, layer_depths, task_loss
from shared_model.settings import ADAPTATIONS, FinetuneSettings, PretrainSettings
from shared_model.tensors.pipeline import make_dataset, poisson_dataset, total_samples
from shared_model.tensors.tensorize import Arrays
from shared_model.training.model_selection import choose_c
from shared_model.training.optimizers import GradualUnfreezing, LayerwiseAdam, SparseRMSprop

log = logging.getLogger(__name__)
PRETRAIN_TARGETS = ("target_groups", "visit_groups")
# Batches per compiled call: Keras' per-step Python overhead (about 10 ms on 2 cores) is paid once
# per 10 batches. Same batches, same order, bit-identical weights; fit +30%, predict about 2x.
STEPS_PER_EXECUTION = 10
PROBE_C = (0.001, 0.01, 0.1, 1.0, 10.0)  # candidate inverse L2 strengths of the logistic probe


PROCESS_SEED = 0  # TensorFlow's global seed while a long-lived model trains round after round


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow and make TF kernels deterministic: same seed, same weights."""
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def seed_round(model: keras.Model, seed: int) -> None:
    """Seed one more round of training of an already compiled model, whatever this process ran before.

    Not seed_everything: tf.random.set_seed empties TensorFlow's kernel cache, and the next fit
    then rebuilds its whole compiled step (1-2 s per round even for a tiny model). So TensorFlow's
    global seed is set to PROCESS_SEED once per process, the round's random ops take explicit
    seeds from `seed` (data order, Poisson sampling; DP noise has its own generator), and the
    model's dropout seed generators restart from `seed`.
    """
    random.seed(seed)
    np.random.seed(seed)
    if tf_context.global_seed() != PROCESS_SEED:
        tf.random.set_seed(PROCESS_SEED)
    tf.config.experimental.enable_op_determinism()
    generators = [g for layer in model._flatten_layers() for g in getattr(layer, "_seed_generators", [])]
    for index, generator in enumerate(generators):
        generator.state.assign(np.array([(seed * 7919 + index) % 2**31, 0], dtype=generator.state.dtype))


def new_pretraining_model(
    config: ClaimTransformerConfig, seed: int, learning_rate: float = 1e-3, precision: str = "float32"
) -> PretrainingModel:
    """A fresh, compiled pretraining model computing in `precision` (float32 or bfloat16)."""
    seed_everything(seed)
    model = PretrainingModel(config, precision)
    compile_pretraining(model, learning_rate)
    return model


def compile_pretraining(model: PretrainingModel, learning_rate: float) -> None:
    """The one pretraining compile (central, each federated site, the benchmark): RMSprop,
    applying the embedding's sparse gradient to the touched rows only (SparseRMSprop)."""
    compile_built(model, SparseRMSprop(learning_rate), steps_per_execution=STEPS_PER_EXECUTION)


def compile_built(model: keras.Model, optimizer: keras.optimizers.Optimizer, **options: Any) -> None:
    """`model.compile`, then the optimizer's slots created at once: Keras would create them while
    tracing the first train step, and TensorFlow traces a step that creates variables twice (on a
    small fine-tuning, the second trace is a third of its time).

    Never XLA for the whole step (Keras' default on a GPU): the step has data-dependent shapes
    (real visits, real codes), and its heaviest parts are compiled on their own
    (shared_model.model.head_loss)."""
    model.compile(optimizer=optimizer, jit_compile=False, **options)
    optimizer.build(model.trainable_variables)


class Progress(keras.callbacks.Callback):
    """Logs every epoch's metrics, and within an epoch where it stands at most every
    `interval_seconds` (an epoch over a million patients takes ~12 minutes)."""

    def __init__(self, steps_per_epoch: int | None = None, interval_seconds: float = 60.0) -> None:
        super().__init__()
        self.steps_per_epoch, self.interval_seconds = steps_per_epoch, interval_seconds

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch, self.started = epoch, time.perf_counter()
        self.last_report = self.started

    def on_train_batch_end(self, batch, logs=None):
        now = time.perf_counter()
        if now - self.last_report >= self.interval_seconds:
            self.last_report = now
            step, total = batch + 1, ""
            if self.steps_per_epoch:  # Keras reports the last step of a 10-step execution, even past the end
                step, total = min(step, self.steps_per_epoch), f"/{self.steps_per_epoch}"
            log.info(
                "epoch %d: step %d%s, %.0f s, loss %.4f",
                self.epoch + 1,
                step,
                total,
                now - self.started,
                (logs or {}).get("loss", float("nan")),
            )

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        log.info("epoch %d: %s", epoch + 1, ", ".join(f"{k}={v:.4f}" for k, v in sorted(logs.items())))


class HeldOutRecall(keras.callbacks.Callback):
    """Adds the held-out NVP Recall@k after every epoch to the logs (`held_out_recall@k`), so a
    central run's learning curve can be drawn next to a federated run's per-round evaluation.
    Only reported: early stopping still watches the tuning loss."""

    def __init__(self, held_out: Sequence[Arrays], ks: Sequence[int] = (5, 10, 30)) -> None:
        super().__init__()
        self.held_out, self.ks = list(held_out), tuple(ks)

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            for name, value in evaluate_nvp(self.model, self.held_out, self.ks).items():
                logs[f"held_out_{name}"] = value


def fit_pretraining(
    model: PretrainingModel,
    train: Sequence[Arrays],
    tuning: Sequence[Arrays] | None,
    settings: PretrainSettings,
    *,
    early_stopping: bool = True,
    verbose: int = 0,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    poisson_rate: float = 0.0,
) -> keras.callbacks.History:
    """Train NVP + CP; with `tuning` and early stopping, keep the best epoch's weights.
    `poisson_rate` > 0: Poisson-sampled batches at that rate (DP-SGD) instead of shuffled ones."""
    if poisson_rate:
        train_data = poisson_dataset(train, target=PRETRAIN_TARGETS, rate=poisson_rate, seed=settings.seed)
    else:
        train_data = make_dataset(
            train, target=PRETRAIN_TARGETS, batch_size=settings.batch_size, shuffle=True, seed=settings.seed
        )
    val_data = None
    callbacks = [*callbacks, Progress(steps_per_epoch=int(train_data.cardinality()))]  # asserted by both datasets
    if tuning and total_samples(tuning):
        val_data = make_dataset(tuning, target=PRETRAIN_TARGETS, batch_size=256, shuffle=False)
        if early_stopping:
            callbacks.append(
                keras.callbacks.EarlyStopping(monitor="val_loss", patience=settings.patience, restore_best_weights=True)
            )
    return model.fit(
        train_data,
        validation_data=val_data,
        epochs=settings.epochs,
        callbacks=callbacks,
        verbose=verbose,
        shuffle=False,
    )


def pretrain(
    config: ClaimTransformerConfig,
    train: Sequence[Arrays],
    tuning: Sequence[Arrays] | None,
    settings: PretrainSettings = PretrainSettings(),
    verbose: int = 0,
    callbacks: Sequence[keras.callbacks.Callback] = (),
) -> tuple[PretrainingModel, dict]:
    model = new_pretraining_model(config, settings.seed, settings.learning_rate, resolve_precision(settings.precision))
    history = fit_pretraining(model, train, tuning, settings, verbose=verbose, callbacks=callbacks)
    return model, history.history


def predict_batches(model: keras.Model, data: tf.data.Dataset) -> np.ndarray:
    """`model.predict` over (inputs, targets) batches. Data of one batch is scored by calling the
    model's predict step directly, as Keras advises for small inputs: `predict` traces a graph for
    every new model (and again for a second batch shape), which costs more than a small set's
    forward pass."""
    if int(data.cardinality()) == 1:
        inputs, _ = next(iter(data))
        return keras.ops.convert_to_numpy(model.predict_step((inputs,)))
    return model.predict(data, verbose=0)


def predict_nvp(model: PretrainingModel, parts: Sequence[Arrays], batch_size: int = 512) -> np.ndarray:
    return predict_batches(model, make_dataset(parts, target="target_groups", batch_size=batch_size, shuffle=False))


def evaluate_nvp(model: PretrainingModel, parts: Sequence[Arrays], ks: Sequence[int] = (5, 10, 30)) -> dict[str, float]:
    targets = np.concatenate([p["target_groups"] for p in parts])
    return recall_at_k(targets, predict_nvp(model, parts), ks)


def finetune(
    encoder: keras.Model,
    kind: str,
    n_outputs: int,
    train: Arrays,
    tuning: Arrays,
    target: str,
    settings: FinetuneSettings,
    n_layers: int,
    *,
    pretrained: bool = True,
    verbose: int = 0,
) -> TaskModel:
    """Fit a task head (and the encoder, discriminatively) with early stopping on `tuning`."""
    model = TaskModel(encoder, kind, n_outputs, code_counts=settings.code_counts and kind == TASK_BINARY)
    depths = layer_depths(model, n_layers)
    train_data = make_dataset([train], target=target, batch_size=settings.batch_size, shuffle=True, seed=settings.seed)
    val_data = make_dataset([tuning], target=target, batch_size=256, shuffle=False)

    def fit(optimizer: LayerwiseAdam, epochs: int, gradual: bool) -> None:
        compile_built(model, optimizer)
        callbacks: list[keras.callbacks.Callback] = [
            keras.callbacks.EarlyStopping(monitor="val_loss", patience=settings.patience, restore_best_weights=True)
        ]
        if gradual:
            callbacks.append(GradualUnfreezing(optimizer))
        model.fit(
            train_data, validation_data=val_data, epochs=epochs, callbacks=callbacks, verbose=verbose, shuffle=False
        )

    def tuning_score() -> float:
        """Higher is better: AUROC for binary tasks (the reported metric), else minus the loss."""
        if kind == TASK_BINARY:
            return auroc(tuning["label"], predict_task(model, tuning, target))
        return -float(task_loss(kind, predict_task(model, tuning, target), tuning[target]))

    if settings.adaptation not in ADAPTATIONS:
        raise ValueError(f"adaptation must be one of {ADAPTATIONS}, got {settings.adaptation!r}")
    adaptation = settings.adaptation if pretrained else "finetune"
    best_score, best_weights = -float("inf"), None
    if adaptation in ("probe", "probe-then-finetune"):
        if kind == TASK_BINARY:
            logistic_probe(model, train, tuning, settings.seed)
        else:
            head_probe(model, train, tuning, target, settings)
        best_score, best_weights = tuning_score(), model.get_weights()
    if adaptation in ("finetune", "probe-then-finetune"):
        fit(
            LayerwiseAdam(
                depths,
                decay=settings.layer_decay,
                unfrozen_depth=0 if settings.gradual_unfreeze else 10**6,
                learning_rate=settings.learning_rate,
            ),
            settings.epochs,
            gradual=settings.gradual_unfreeze,
        )
        score = tuning_score()
        if best_weights is not None and not score > best_score:
            log.info(
                "fine-tuning all layers did not beat the probe on the tuning set (%.4f vs %.4f): keeping the probe",
                score,
                best_score,
            )
            model.set_weights(best_weights)
    return model


def patient_vectors(encoder: keras.Model, arrays: Arrays, batch_size: int = 512) -> np.ndarray:
    data = make_dataset([arrays], target="label", batch_size=batch_size, shuffle=False)
    return np.concatenate([encoder(x, training=False)["patient"].numpy() for x, _ in data])


def code_counts(model: TaskModel, arrays: Arrays, batch_size: int = 512) -> sp.csr_matrix:
    """The count head's inputs for each sample, (N, vocabulary), sparse: a patient's input holds a
    few percent of the vocabulary, and the solver's time and the memory follow the nonzeros."""
    codes = arrays["codes"].astype(np.int32)
    batches = (model.code_counts(codes[i : i + batch_size]).numpy() for i in range(0, len(codes), batch_size))
    return sp.vstack([sp.csr_matrix(batch) for batch in batches], format="csr")


def logistic_probe(model: TaskModel, train: Arrays, tuning: Arrays, seed: int) -> float:
    """Fit the binary head (and the count head) as one L2 logistic regression on the frozen
    encoder's patient vectors (and the code counts), with scikit-learn, C chosen by
    cross-validation (model_selection.choose_c); returns the tuning AUROC. A strong, cheap start
    for small cohorts."""

    def features(arrays: Arrays) -> np.ndarray | sp.csr_matrix:
        vectors = patient_vectors(model.encoder, arrays)
        if model.code_counts is None:
            return vectors
        return sp.hstack([sp.csr_matrix(vectors), code_counts(model, arrays)], format="csr")  # dense: 10x slower

    x_train, x_tuning = features(train), features(tuning)
    y_train, y_tuning = train["label"] > 0.5, tuning["label"] > 0.5
    kernel, bias = model.head.get_weights()
    if y_train.min() == y_train.max():
        # one class only (no positive in a tiny cohort): predict its rate for everyone, as the
        # count-feature baselines do, rather than leave a random head's probabilities
        rate = np.clip(y_train.mean(), 1e-4, 1 - 1e-4)
        model.head.set_weights([np.zeros_like(kernel), np.full_like(bias, np.log(rate / (1 - rate)))])
        return float("nan")

    def make_probe(c: float) -> LogisticRegression:
        return LogisticRegression(C=c, max_iter=5000, random_state=seed)

    c = choose_c(make_probe, PROBE_C, x_train, y_train, x_tuning, y_tuning, seed)
    probe = make_probe(c).fit(x_train, y_train)
    weights = probe.coef_.T.astype(kernel.dtype)
    model.head.set_weights([weights[: len(kernel)], probe.intercept_.astype(bias.dtype)])
    if model.count_head is not None:
        model.count_head.set_weights([weights[len(kernel) :]])
    return auroc(y_tuning, probe.decision_function(x_tuning))


def head_probe(model: TaskModel, train: Arrays, tuning: Arrays, target: str, settings: FinetuneSettings) -> None:
    """Train only the head with Adam on frozen patient vectors, computed once (early stopping on
    the tuning loss). Same objective as fitting the TaskModel with the encoder frozen."""
    head = HeadOnly(model.head, model.kind)
    compile_built(head, keras.optimizers.Adam(settings.probe_learning_rate))
    head.fit(
        patient_vectors(model.encoder, train),
        train[target],
        batch_size=settings.batch_size,
        epochs=settings.probe_epochs,
        shuffle=True,
        verbose=0,
        validation_data=(patient_vectors(model.encoder, tuning), tuning[target]),
        callbacks=[
            keras.callbacks.EarlyStopping(monitor="val_loss", patience=settings.patience, restore_best_weights=True)
        ],
    )


def predict_task(model: TaskModel, arrays: Arrays, target: str, batch_size: int = 512) -> np.ndarray:
    logits = predict_batches(model, make_dataset([arrays], target=target, batch_size=batch_size, shuffle=False))
    return logits[:, 0] if model.kind == TASK_BINARY else logits
