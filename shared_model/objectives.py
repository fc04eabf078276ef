"""Losses computed from sparse target indices, never from dense multi-hot arrays.

For logits z and a multi-hot target y over G groups, mean binary cross-entropy is
(sum_g softplus(z_g) - sum_{g: y_g = 1} z_g) / G, so only the logits at the target indices
are gathered: identical mathematics to Keras' dense `binary_crossentropy(from_logits=True)`.
"""

from __future__ import annotations

import tensorflow as tf
from keras import ops


def multilabel_bce_from_indices(logits, target_indices):
    """Mean over groups of binary cross-entropy; `target_indices` (..., K) are distinct group ids,
    -1 for padding. Returns one loss per leading position (...)."""
    n_groups = ops.cast(ops.shape(logits)[-1], logits.dtype)
    return (ops.sum(ops.softplus(logits), axis=-1) - target_logit_sum(logits, target_indices)) / n_groups


def target_logit_sum(logits, target_indices):
    """sum_{g in targets} logit_g per leading position; -1 targets (padding) add nothing."""
    picked = ops.take_along_axis(logits, ops.maximum(target_indices, 0), axis=-1)
    return ops.sum(ops.where(target_indices >= 0, picked, ops.zeros_like(picked)), axis=-1)


def binary_bce_from_logits(logits, labels):
    """Per-sample binary cross-entropy for a single logit per sample."""
    logits = ops.reshape(logits, (-1,))
    labels = ops.cast(ops.reshape(labels, (-1,)), logits.dtype)
    return ops.softplus(logits) - labels * logits


def dense_multilabel_bce_sum(kernel, bias, inputs, target_indices, weight):
    """sum_i weight_i * multilabel_bce_from_indices(inputs_i @ kernel + bias, targets_i): a dense
    head and its loss, written to be wrapped in tf.function(jit_compile=True) so XLA fuses them and
    the (rows x groups) logits never make a round trip to memory between matmul, softplus and sum
    (PretrainingModel's NVP and CP losses; compiled once per input shape).

    The gradient is written out rather than derived by autodiff: d loss / d logit is
    weight * (sigmoid(logit) - target) / groups, and the sigmoid comes almost free from the
    exp(-|logit|) the stable softplus already computes. Autodiff would evaluate softplus' own
    derivative in a second pass over the rows x groups logits: on 2 cores the CP head's forward and
    backward pass at the paper's sizes takes ~30 ms instead of ~34 ms this way (the same loss and
    gradients to float rounding, tests/test_model.py)."""

    @tf.custom_gradient
    def head_loss(kernel, bias, inputs):
        logits = tf.matmul(inputs, kernel) + bias
        n_groups = tf.cast(tf.shape(logits)[-1], logits.dtype)
        exp_neg_abs = tf.exp(-tf.abs(logits))
        softplus = tf.nn.relu(logits) + tf.math.log1p(exp_neg_abs)  # log(1 + e^z) without overflow
        positive = target_logit_sum(logits, target_indices)
        loss = tf.reduce_sum((tf.reduce_sum(softplus, axis=-1) - positive) / n_groups * weight)
        sigmoid = tf.where(logits >= 0, tf.ones_like(exp_neg_abs), exp_neg_abs) / (1.0 + exp_neg_abs)

        def gradient(upstream):
            row_scale = upstream * weight / n_groups
            rows = tf.broadcast_to(tf.range(tf.shape(logits)[0])[:, None], tf.shape(target_indices))
            at_targets = tf.stack([rows, tf.maximum(target_indices, 0)], axis=-1)
            on_targets = tf.where(
                target_indices >= 0, tf.broadcast_to(row_scale[:, None], tf.shape(target_indices)), 0.0
            )
            d_logits = tf.tensor_scatter_nd_sub(sigmoid * row_scale[:, None], at_targets, on_targets)
            return (
                tf.matmul(inputs, d_logits, transpose_a=True),
                tf.reduce_sum(d_logits, axis=0),
                tf.matmul(d_logits, kernel, transpose_b=True),
            )

        return loss, gradient

    return head_loss(kernel, bias, inputs)


class ProximalTerm:
    """FedProx's mu / 2 * ||w - w_global||^2 over the trainable weights (Li et al. 2020), the term a
    site adds to its local loss. mu and the anchor live in variables, so a compiled training step
    takes a new anchor every round without retracing."""

    def __init__(self, variables: list) -> None:
        self.mu = tf.Variable(0.0, trainable=False)
        self.anchors = [tf.Variable(tf.zeros(v.shape), trainable=False) for v in variables]

    def anchor_at(self, values: list, mu: float) -> None:
        """This round's global weights (one array per trainable variable) and mu."""
        self.mu.assign(float(mu))
        for anchor, value in zip(self.anchors, values, strict=True):
            anchor.assign(value)

    def __call__(self, variables: list):
        distance = sum(ops.sum(ops.square(v - a)) for v, a in zip(variables, self.anchors, strict=True))
        return self.mu / 2 * distance
