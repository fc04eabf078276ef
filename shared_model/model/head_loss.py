"""A dense head and its multi-label binary cross-entropy in one step: the NVP and CP heads'
training loss, the largest cost of a pretraining step (docs/performance.md).

For rows x, a kernel W and bias b over G groups, the logits z = x W + b and, per row, the loss
(sum_g softplus(z_g) - sum_{g in targets} z_g) / G (shared_model.model.objectives). Done plainly, the
(rows x groups) logits make several round trips to memory. Here:

- the three matmuls (the logits, and the kernel's and the rows' gradients) run in TensorFlow's
  oneDNN kernels, in the precision asked for (bfloat16 where the hardware has it,
  shared_model.model.precision); XLA's own CPU dots are no faster in float32 and gain nothing from
  bfloat16;
- everything between them is one XLA-compiled pass over the logits each way: the loss's sum of
  softplus (and the targets' logits, gathered) in the forward pass; in the backward pass
  d loss / d z = weight * (sigmoid(z) - target) / G, written in the matmuls' dtype with the
  targets scattered into it, and its column sums, the bias gradient. One function for both passes
  would share one exp, and XLA then splits it into many passes; its log1p costs twice its exp:
  softplus here is relu(z) + log1p(exp(-|z|)) with log1p a polynomial on [0, 1] (within 2e-7 of
  it, `log1p_unit`).

The same loss and gradients as the plain computation to float rounding (tests/test_model.py).
"""

from __future__ import annotations

import tensorflow as tf

from shared_model.model.objectives import target_logit_sum

# log1p(x) / x on [0, 1]: Chebyshev interpolant of degree 9 as monomial coefficients (float32
# Horner: within 1.1e-7 of log1p absolute, 1.8e-7 relative).
_LOG1P_OVER_X = (
    1.0,
    -0.49999892711639404,
    0.33329710364341736,
    -0.24951615929603577,
    0.1966327428817749,
    -0.1526966691017151,
    0.10543623566627502,
    -0.05637361481785774,
    0.019542528316378593,
    -0.0031760570127516985,
)


def log1p_unit(x: tf.Tensor) -> tf.Tensor:
    """log(1 + x) for x in [0, 1], as a polynomial (exactly 0 at 0)."""
    acc = tf.fill(tf.shape(x), tf.constant(_LOG1P_OVER_X[-1], x.dtype))
    for coefficient in _LOG1P_OVER_X[-2::-1]:
        acc = acc * x + coefficient
    return acc * x


def dense_multilabel_bce_sum(kernel, bias, inputs, target_indices, weight, matmul_dtype=tf.float32):
    """sum_i weight_i * multilabel BCE of (inputs_i @ kernel + bias) against target_indices_i (-1:
    padding), differentiable in the float32 kernel, bias and inputs. Rows should be padded to a
    handful of counts (the model's row buckets): XLA compiles each pass once per shape."""

    @tf.custom_gradient
    def head_loss(kernel, bias, inputs):
        inputs_m, kernel_m = tf.cast(inputs, matmul_dtype), tf.cast(kernel, matmul_dtype)
        logits = tf.matmul(inputs_m, kernel_m)
        loss = _loss_pass(logits, bias, target_indices, weight)

        def gradient(upstream):
            d_logits, d_bias = _gradient_pass(logits, bias, target_indices, weight)
            d_kernel = tf.matmul(inputs_m, d_logits, transpose_a=True)
            d_inputs = tf.matmul(d_logits, kernel_m, transpose_b=True)
            return tf.cast(d_kernel, tf.float32) * upstream, d_bias * upstream, tf.cast(d_inputs, tf.float32) * upstream

        return loss, gradient

    return head_loss(kernel, bias, inputs)


@tf.function(jit_compile=True)
def _loss_pass(logits, bias, target_indices, weight):
    """sum_i weight_i * (sum_g softplus(z_ig) - sum_{g in targets_i} z_ig) / G, z = logits + bias
    in float32."""
    z = tf.cast(logits, tf.float32) + bias
    softplus = tf.nn.relu(z) + log1p_unit(tf.exp(-tf.abs(z)))
    positive = target_logit_sum(z, target_indices)
    n_groups = tf.cast(tf.shape(z)[-1], z.dtype)
    return tf.reduce_sum((tf.reduce_sum(softplus, axis=-1) - positive) * weight) / n_groups


@tf.function(jit_compile=True)
def _gradient_pass(logits, bias, target_indices, weight):
    """d loss / d logits = weight * (sigmoid(z) - target) / G in the logits' dtype, and its sum
    over rows (d loss / d bias, float32), z = logits + bias in float32."""
    z = tf.cast(logits, tf.float32) + bias
    row_scale = weight / tf.cast(tf.shape(z)[-1], z.dtype)
    rows = tf.broadcast_to(tf.range(tf.shape(z)[0])[:, None], tf.shape(target_indices))
    at_targets = tf.stack([rows, tf.maximum(target_indices, 0)], axis=-1)
    on_targets = tf.where(target_indices >= 0, tf.broadcast_to(row_scale[:, None], tf.shape(target_indices)), 0.0)
    d_logits = tf.tensor_scatter_nd_sub(
        tf.cast(tf.math.sigmoid(z) * row_scale[:, None], logits.dtype), at_targets, tf.cast(on_targets, logits.dtype)
    )
    return d_logits, tf.reduce_sum(tf.cast(d_logits, tf.float32), axis=0)
