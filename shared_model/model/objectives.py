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
