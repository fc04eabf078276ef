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
    n_groups = ops.shape(logits)[-1]
    valid = target_indices >= 0
    picked = ops.take_along_axis(logits, ops.maximum(target_indices, 0), axis=-1)
    positive = ops.sum(ops.where(valid, picked, ops.zeros_like(picked)), axis=-1)
    return (ops.sum(ops.softplus(logits), axis=-1) - positive) / ops.cast(n_groups, logits.dtype)


def binary_bce_from_logits(logits, labels):
    """Per-sample binary cross-entropy for a single logit per sample."""
    logits = ops.reshape(logits, (-1,))
    labels = ops.cast(ops.reshape(labels, (-1,)), logits.dtype)
    return ops.softplus(logits) - labels * logits


def dense_multilabel_bce_sum(kernel, bias, inputs, target_indices, weight):
    """sum_i weight_i * multilabel_bce_from_indices(inputs_i @ kernel + bias, targets_i): a dense
    head and its loss, written to be wrapped in tf.function(jit_compile=True) so XLA fuses them and
    the (rows x groups) logits never make a round trip to memory between matmul, softplus and sum
    (PretrainingModel.category_loss; compiled once per input shape)."""
    logits = tf.matmul(inputs, kernel) + bias
    return tf.reduce_sum(multilabel_bce_from_indices(logits, target_indices) * weight)
