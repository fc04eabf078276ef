"""What the model attends to and which codes drive an output (docs/architecture.md §3, attention playground).

Attention: the real per-layer, per-head softmax weights of the transformer's self-attention,
(patients, heads, 1 + visits, 1 + visits), token 0 being the demographic token. Padded visits
get exactly zero weight. Attribution: gradient x input of one output logit on every code's
embedding, computed as the derivative with respect to a per-code gate at 1 (the encoder's own
computation, `encoder_forward`, runs with the gate; nothing is re-implemented here).
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from shared_model.contract.checkpoint import KIND_PRETRAINING, Checkpoint, assign_weights
from shared_model.model.config import ClaimTransformerConfig
from shared_model.model.transformer import PretrainingModel, TaskModel, build_encoder, encoder_forward
from shared_model.tensors.tasks import NEXT_VISIT
from shared_model.tensors.tensorize import MODEL_INPUTS, Arrays


@dataclass(frozen=True)
class ExplainedModel:
    """An encoder and the output head whose logits are explained."""

    config: ClaimTransformerConfig
    encoder: keras.Model
    head: keras.layers.Dense
    task: str  # next_visit for a pretrained checkpoint (its NVP head), else the fine-tuned task
    task_model: TaskModel | None = None  # a fine-tuned checkpoint's, whose head may read code counts too

    def logits(self, inputs: dict, patient, code_gate=None):
        if self.task_model is None:
            return self.head(patient)
        return self.task_model.logits(inputs, patient, code_gate)


def restore_model(checkpoint: Checkpoint) -> ExplainedModel:
    """The model a pretraining or fine-tuned (task) checkpoint holds, weights assigned."""
    config = checkpoint.config
    if checkpoint.kind == KIND_PRETRAINING:
        model = PretrainingModel(config)
        assign_weights(model, checkpoint)
        return ExplainedModel(config, model.encoder, model.nvp_head, NEXT_VISIT)
    manifest = checkpoint.manifest
    task_model = TaskModel(
        build_encoder(config),
        manifest["task_kind"],
        int(manifest["n_outputs"]),
        code_counts=manifest.get("code_counts") is True,  # absent: made before code counts existed
    )
    assign_weights(task_model, checkpoint)
    return ExplainedModel(config, task_model.encoder, task_model.head, str(manifest["task"]), task_model)


@dataclass(frozen=True)
class Explanation:
    attention: list[np.ndarray]  # per layer: (N, heads, 1 + V, 1 + V)
    code_attribution: np.ndarray  # (N, V, C): gradient x input of the explained logit; 0 on padding
    output_index: np.ndarray  # (N,) which output logit was explained
    logit: np.ndarray  # (N,) its value
    patient: np.ndarray  # (N, patient_dim) patient vectors


def explain(
    model: ExplainedModel, arrays: Arrays, *, output_index: int | None = None, batch_size: int = 128
) -> Explanation:
    """Attention and code attributions for every sample in `arrays`. The explained output is
    `output_index` when given, else each patient's highest logit (one logit for a binary task)."""
    n = len(arrays["codes"])
    if n == 0:
        raise ValueError("no samples to explain")
    attention: list[list[np.ndarray]] = [[] for _ in range(model.config.n_layers)]
    parts: dict[str, list[np.ndarray]] = {"attribution": [], "index": [], "logit": [], "patient": []}
    for start in range(0, n, batch_size):
        batch = {k: tf.convert_to_tensor(arrays[k][start : start + batch_size].astype(np.int32)) for k in MODEL_INPUTS}
        gate = tf.ones(tf.shape(batch["codes"]), tf.float32)
        with tf.GradientTape() as tape:
            tape.watch(gate)
            outputs = encoder_forward(model.encoder.get_layer, model.config, batch, code_gate=gate, training=False)
            logits = model.logits(batch, outputs["patient"], gate)
            index = (
                tf.fill([tf.shape(logits)[0]], output_index)
                if output_index is not None
                else tf.argmax(logits, axis=-1, output_type=tf.int32)
            )
            chosen = tf.gather(logits, index, axis=1, batch_dims=1)
        gradient = tape.gradient(chosen, gate)  # each sample's logit depends on its own codes only
        present = tf.cast(batch["codes"] > 0, tf.float32)
        parts["attribution"].append((gradient * present).numpy())
        parts["index"].append(index.numpy())
        parts["logit"].append(chosen.numpy())
        parts["patient"].append(outputs["patient"].numpy())
        for layer in range(model.config.n_layers):
            attention[layer].append(outputs[f"attention_{layer}"].numpy())
    return Explanation(
        [np.concatenate(a) for a in attention],
        np.concatenate(parts["attribution"]),
        np.concatenate(parts["index"]),
        np.concatenate(parts["logit"]),
        np.concatenate(parts["patient"]),
    )


def patient_vectors(model: ExplainedModel, arrays: Arrays, *, batch_size: int = 512) -> np.ndarray:
    """The encoder's patient embedding (the vector every head reads) for each sample."""
    inputs = {k: arrays[k].astype(np.int32) for k in MODEL_INPUTS}
    return np.asarray(model.encoder.predict(inputs, batch_size=batch_size, verbose=0)["patient"])
