"""The Claim-PT transformer: the one place models are built (docs/architecture.md §3).

`build_encoder` maps the tensor layout to a patient vector (token 0 through Dense(patient_dim))
and contextual visit vectors. `PretrainingModel` adds the NVP and CP heads; `TaskModel` adds a
task head to a (pretrained or fresh) encoder.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import keras
import tensorflow as tf
from keras import ops

from shared_model.model.config import ClaimTransformerConfig
from shared_model.model.head_loss import dense_multilabel_bce_sum
from shared_model.model.layers import CodeCounts, DemographicToken, TransformerBlock, VisitEmbedding
from shared_model.model.objectives import ProximalTerm, binary_bce_from_logits, multilabel_bce_from_indices
from shared_model.settings import FIXED_PRECISIONS
from shared_model.tensors.tensorize import MODEL_INPUTS

if TYPE_CHECKING:  # DP-SGD (training) drives the model's step; the model does not import it
    from shared_model.training.privacy import DPSGD

TASK_BINARY = "binary"
TASK_MULTILABEL = "multilabel"
CP_ROW_BUCKET = 256  # real visits per batch are padded to a multiple of this for the fused CP loss
NVP_ROW_BUCKET = 128  # and the patients of a batch (100 by default; last and validation batches vary)


def model_inputs(config: ClaimTransformerConfig) -> dict[str, keras.KerasTensor]:
    v, c = config.max_visits, config.max_codes
    shapes = {
        "codes": (v, c),
        "visit_type": (v,),
        "date_index": (v,),
        "days_before": (v,),
        "age_days": (v,),
        "demo": (2,),
    }
    return {name: keras.Input(shape=shapes[name], dtype="int32", name=name) for name in MODEL_INPUTS}


def build_encoder(config: ClaimTransformerConfig) -> keras.Model:
    """Functional encoder: outputs `patient` (B, patient_dim), `visits` (B, V, d) and
    `attention_<i>` (B, heads, 1+V, 1+V) for each layer."""
    created: dict[str, keras.layers.Layer] = {}

    def layer(name: str) -> keras.layers.Layer:
        if name not in created:
            created[name] = _new_layer(config, name)
        return created[name]

    inputs = model_inputs(config)
    return keras.Model(inputs, encoder_forward(layer, config, inputs), name="claim_encoder")


def _new_layer(config: ClaimTransformerConfig, name: str) -> keras.layers.Layer:
    if name == "visit_embedding":
        return VisitEmbedding(config.vocab_size, config.d_model, config.time_encoding, name=name)
    if name == "demographic_token":
        return DemographicToken(config.d_model, name=name)
    if name == "embedding_dropout":
        return keras.layers.Dropout(config.dropout, name=name)
    if name.startswith("block_"):
        return TransformerBlock(
            config.d_model, config.n_heads, config.ffn_dim, config.dropout, config.pre_layer_norm, name=name
        )
    if name == "final_norm":
        return keras.layers.LayerNormalization(epsilon=1e-6, name=name)
    if name == "patient_vector":
        return keras.layers.Dense(config.patient_dim, activation="tanh", name=name)
    raise KeyError(name)


def encoder_forward(
    layer, config: ClaimTransformerConfig, inputs: dict, *, code_gate=None, code_vectors=None, training=None
) -> dict:
    """The encoder's computation, written once: `build_encoder` runs it on symbolic inputs (with
    `layer` creating each named layer), the attention playground runs it eagerly on a built
    encoder's layers (`layer = encoder.get_layer`) with a `code_gate` to differentiate, DP-SGD
    with the looked-up `code_vectors` to differentiate."""
    visits = layer("visit_embedding")(
        inputs["codes"],
        inputs["visit_type"],
        inputs["date_index"],
        inputs["days_before"],
        inputs["age_days"],
        code_gate=code_gate,
        code_vectors=code_vectors,
    )
    demo = layer("demographic_token")(inputs["demo"])
    x = ops.concatenate([demo, visits], axis=1)
    token_valid = ops.concatenate([ops.ones_like(inputs["visit_type"][:, :1]), inputs["visit_type"]], axis=1) > 0
    attention_mask = ops.logical_and(ops.ones_like(token_valid[:, :, None]), token_valid[:, None, :])
    if config.dropout:
        x = layer("embedding_dropout")(x, training=training)
    outputs = {}
    for i in range(config.n_layers):
        x, scores = layer(f"block_{i}")(x, attention_mask, training=training, every_token=code_vectors is not None)
        outputs[f"attention_{i}"] = scores
    if config.pre_layer_norm:
        x = layer("final_norm")(x)
    token_0, visits = ops.split(x, [1], axis=1)  # a split's gradient is a concat, a slice's a padded copy
    outputs["patient"] = layer("patient_vector")(ops.squeeze(token_0, axis=1))
    outputs["visits"] = visits
    return outputs


class PretrainingModel(keras.Model):
    """Encoder + next-visit prediction (NVP) + per-visit category prediction (CP) heads.

    The CP head runs only on real (unpadded) visits, fused with its loss (shared_model.model.head_loss),
    and both losses use sparse targets: the same loss as the dense all-slots masked computation at
    a fraction of the cost (tests/test_model.py checks loss and gradients).

    `precision` (float32 or bfloat16, shared_model.model.precision) is that of the training heads'
    matmuls, three quarters of a step's arithmetic at the paper's sizes. The encoder, the served
    NVP logits, the weights and everything else stay float32: on a CPU without AMX, TensorFlow's
    bfloat16 elementwise kernels made a bfloat16 encoder slower, not faster (docs/performance.md).
    """

    def __init__(self, config: ClaimTransformerConfig, precision: str = "float32", **kwargs):
        super().__init__(name=kwargs.pop("name", "pretraining_model"), **kwargs)
        if precision not in FIXED_PRECISIONS:
            raise ValueError(f"precision must be one of {FIXED_PRECISIONS}, got {precision!r}")
        self.model_config, self.precision = config, precision
        self.encoder = build_encoder(config)
        self.nvp_head = group_head(config.n_groups, "nvp_head")
        self.cp_head = group_head(config.n_groups, "cp_head")
        self.nvp_head.build((None, config.patient_dim))
        self.cp_head.build((None, config.d_model))
        self.nvp_loss = keras.metrics.Mean(name="nvp_loss")
        self.cp_loss = keras.metrics.Mean(name="cp_loss")
        # What federated training adds to the step, as explicit objects (plain Python objects: Keras
        # does not track them, so their variables never become part of model.weights):
        self.proximal: ProximalTerm | None = None  # FedProx's term, added to the loss
        self.privacy: DPSGD | None = None  # DP-SGD's noisy clipped gradients replace the plain ones
        self.last_privacy: DPSGD | None = None  # the last one used, kept while training without

    def use_proximal(self, proximal: ProximalTerm) -> None:
        """Add FedProx's term to the loss from the next fit on (the compiled step keeps it, with
        whatever mu and anchor it is given)."""
        if proximal is not self.proximal:
            self.proximal = proximal
            self.train_function = None  # the loss changes: Keras traces the step again

    def use_privacy(self, privacy: DPSGD | None) -> None:
        """Train with DP-SGD's gradients (or, with None, plain ones) from the next fit on. The last
        DP-SGD step is kept in `last_privacy`: a simulation whose sites take turns with and without
        DP reconfigures it (DPSGD.reconfigure) instead of compiling a new one every round."""
        if privacy is not self.privacy:
            self.last_privacy = self.privacy or self.last_privacy
            self.privacy = privacy
            self.train_function = None  # the step changes: Keras traces it again

    def train_step(self, data):
        if self.privacy is None:
            return super().train_step(data)
        x, y = data[0], data[1]
        gradients, losses, _ = self.privacy.gradients(x, y)
        self.optimizer.apply_gradients(zip(gradients, self.trainable_variables, strict=True))
        self._loss_tracker.update_state(ops.mean(losses), sample_weight=ops.shape(losses)[0])
        return self.get_metrics_result()

    def call(self, inputs, training=False):
        encoded = self.encoder(inputs, training=training)
        return {"nvp": self.nvp_head(encoded["patient"]), "patient": encoded["patient"], "visits": encoded["visits"]}

    def predict_step(self, data):
        """Inference returns the NVP logits only (what a deployed model serves)."""
        x = data[0] if isinstance(data, tuple) else data
        return self(x, training=False)["nvp"]

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        nvp = self.next_visit_loss(y_pred["patient"], y["target_groups"])
        cp = self.category_loss(y_pred["visits"], x["visit_type"] > 0, y["visit_groups"])
        self.nvp_loss.update_state(nvp)
        self.cp_loss.update_state(cp)
        loss = self.model_config.nvp_weight * nvp + self.model_config.cp_weight * cp
        if self.proximal is not None and training:
            loss = loss + self.proximal(self.trainable_variables)
        return loss

    def patient_loss(self, inputs: dict, targets: dict, code_vectors=None):
        """One patient's loss (a batch axis of 1), self-contained for DP-SGD's per-patient
        gradients: NVP + the mean CP loss over this patient's real visits."""
        encoded = encoder_forward(
            self.encoder.get_layer, self.model_config, inputs, code_vectors=code_vectors, training=True
        )
        nvp = multilabel_bce_from_indices(self.nvp_head(encoded["patient"]), targets["target_groups"])[0]
        per_visit = multilabel_bce_from_indices(self.cp_head(encoded["visits"]), targets["visit_groups"])[0]
        valid = ops.cast(inputs["visit_type"][0] > 0, per_visit.dtype)
        cp = ops.sum(per_visit * valid) / ops.maximum(ops.sum(valid), 1.0)
        return self.model_config.nvp_weight * nvp + self.model_config.cp_weight * cp

    def next_visit_loss(self, patients, target_groups):
        """Mean NVP loss, its head fused with the loss like the CP head's (the training loss does
        not use the `nvp` logits `call` returns for inference)."""
        return _mean_head_loss(self.nvp_head, patients, target_groups, NVP_ROW_BUCKET, self.precision)

    def category_loss(self, visits, valid, visit_groups):
        """Mean CP loss over real visits only (padded slots skip the head's cost entirely)."""
        return _mean_head_loss(
            self.cp_head,
            tf.boolean_mask(visits, valid),
            tf.boolean_mask(visit_groups, valid),
            CP_ROW_BUCKET,
            self.precision,
        )


def group_head(n_groups: int, name: str) -> keras.layers.Dense:
    """A head of one logit per target group whose bias starts at log(1 / n_groups): a row holds a
    few of many groups, so every group starts rare. From a bias of 0 (probability 0.5 for every
    group) the fastest way down the loss is through the encoder, not the slowly moving bias: it
    drives every patient vector into tanh's saturated corner, one point for all patients, where
    nothing can move them again (measured on CoreBEHRT's example data, docs/results/any-meds.md).

    Its logits (what a deployed model serves) are float32 whatever the model's precision."""
    return keras.layers.Dense(n_groups, name=name, bias_initializer=keras.initializers.Constant(-math.log(n_groups)))


def _mean_head_loss(head: keras.layers.Dense, rows, target_groups, bucket: int, precision: str):
    """The mean over `rows` of the head + its loss (shared_model.model.head_loss), its matmuls in
    `precision`. The rows are padded with zero-weight rows to a multiple of `bucket`, so XLA
    sees a handful of shapes, not one per batch."""
    count = tf.shape(rows)[0]
    padding = -count % bucket
    weight = tf.cast(tf.range(count + padding) < count, tf.float32)
    total = dense_multilabel_bce_sum(
        head.kernel.value,
        head.bias.value,
        tf.pad(rows, [[0, padding], [0, 0]]),
        tf.pad(target_groups, [[0, padding], [0, 0]], constant_values=-1),
        weight,
        tf.dtypes.as_dtype(precision),
    )
    return total / tf.maximum(tf.cast(count, total.dtype), 1.0)


class TaskModel(keras.Model):
    """An encoder with a task head: one logit (binary outcome) or one per group (next visit).

    With `code_counts` a second, linear head reads the input's code counts (layers.CodeCounts)
    and adds to the logits: the attention-pooled patient vector keeps whether codes are common
    among a patient's visits but not how many there were, and a linear model on counts is the
    strongest baseline on small cohorts. Its weights are the logistic probe's (L2, its strength
    chosen by cross-validation) and no gradient step changes them: Adam moves every one of
    thousands of sparse count weights by the same step, which fits the training cohort's noise
    within an epoch. A model that never runs the probe (from scratch, Claim-PT's recipe) keeps
    them at zero, so it is the plain network."""

    def __init__(self, encoder: keras.Model, kind: str, n_outputs: int = 1, *, code_counts: bool = False, **kwargs):
        super().__init__(name=kwargs.pop("name", "task_model"), **kwargs)
        if kind not in (TASK_BINARY, TASK_MULTILABEL):
            raise ValueError(f"unknown task kind {kind!r}")
        self.kind = kind
        self.encoder = encoder
        self.precision = "float32"  # a task head's matmuls are small: fine-tuning is float32
        self.head = keras.layers.Dense(n_outputs, name="task_head")
        self.head.build((None, encoder.output["patient"].shape[-1]))
        self.code_counts = self.count_head = None
        if code_counts:
            self.code_counts = CodeCounts(encoder.get_layer("visit_embedding").vocab_size)
            self.count_head = keras.layers.Dense(
                n_outputs, use_bias=False, kernel_initializer="zeros", trainable=False, name="count_head"
            )
            self.count_head.build((None, self.code_counts.vocab_size))

    def logits(self, inputs: dict, patient, code_gate=None):
        """The head's output for these patient vectors (and the inputs' code counts)."""
        logits = self.head(patient)
        if self.code_counts is not None:
            logits = logits + self.count_head(self.code_counts(inputs["codes"], code_gate))
        return logits

    def call(self, inputs, training=False):
        return self.logits(inputs, self.encoder(inputs, training=training)["patient"])

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        return task_loss(self.kind, y_pred, y)


def task_loss(kind: str, logits, targets):
    """Mean task loss: binary cross-entropy on one logit, or multi-label over group indices."""
    if kind == TASK_BINARY:
        return ops.mean(binary_bce_from_logits(logits, targets))
    return ops.mean(multilabel_bce_from_indices(logits, targets))


class HeadOnly(keras.Model):
    """A task head trained on precomputed patient vectors: the probe of a frozen encoder without
    running the encoder every epoch. It shares the head layer with its TaskModel."""

    def __init__(self, head: keras.layers.Dense, kind: str, **kwargs):
        super().__init__(name=kwargs.pop("name", "head_only"), **kwargs)
        self.head, self.kind = head, kind

    def call(self, inputs, training=False):
        return self.head(inputs)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        return task_loss(self.kind, y_pred, y)


def layer_depths(model: keras.Model, n_layers: int) -> dict[str, int]:
    """Depth of each trainable variable from the output: task head 0, patient vector 1,
    transformer blocks top to bottom, embeddings last (for discriminative fine-tuning)."""
    depths = {}
    for variable in model.trainable_variables:
        path = variable.path
        if "task_head" in path or "nvp_head" in path or "cp_head" in path:
            depth = 0
        elif "patient_vector" in path or "final_norm" in path:
            depth = 1
        elif "block_" in path:
            index = int(path.split("block_")[1].split("/")[0])
            depth = 2 + (n_layers - 1 - index)
        else:
            depth = 2 + n_layers
        depths[path] = depth
    return depths


def parameter_table(config: ClaimTransformerConfig) -> list[tuple[str, str, int]]:
    """(layer, output shape, parameters) rows of the pretraining model built from `config`."""
    model = PretrainingModel(config)
    rows = []
    for layer in model.encoder.layers:
        if layer.count_params():
            rows.append((layer.name, type(layer).__name__, layer.count_params()))
    rows.append(("nvp_head", "Dense", model.nvp_head.count_params()))
    rows.append(("cp_head", "Dense", model.cp_head.count_params()))
    return rows
