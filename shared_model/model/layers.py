"""Keras layers of the Claim-PT transformer: one class per concept, each round-trips get_config.

Each layer builds its sublayers and states its output shape itself: otherwise Keras builds a layer
by tracing its `call` on symbolic inputs, and traces it again for the output shape, every time an
encoder is made (most of the time it takes to make one). The initial weights are the same either
way: each initializer draws its seed when its layer is made, not when it is built."""

from __future__ import annotations

import math

import keras
import tensorflow as tf
from keras import ops

from shared_model.tensors.tensorize import N_AGE_BUCKETS, N_SEX, N_VISIT_TYPES

DAYS_BEFORE_BUCKETS = 18  # 0 padding, then log2 buckets of days before the prediction time
AGE_MONTH_BUCKETS = 242  # 0 padding, then months of age 0..239, 240 = older


class VisitEmbedding(keras.layers.Layer):
    """A visit vector = masked sum of its code embeddings + time embedding + visit-type embedding."""

    def __init__(self, vocab_size: int, d_model: int, time_encoding: str = "day_of_year", **kwargs):
        super().__init__(**kwargs)
        self.vocab_size, self.d_model, self.time_encoding = vocab_size, d_model, time_encoding
        self.code_embedding = keras.layers.Embedding(vocab_size, d_model, name="code_embedding")
        self.type_embedding = keras.layers.Embedding(N_VISIT_TYPES, d_model, name="visit_type_embedding")
        if time_encoding == "day_of_year":
            self.date_embedding = keras.layers.Embedding(367, d_model, name="date_embedding")
        else:
            self.days_before_embedding = keras.layers.Embedding(
                DAYS_BEFORE_BUCKETS, d_model, name="days_before_embedding"
            )
            self.age_embedding = keras.layers.Embedding(AGE_MONTH_BUCKETS, d_model, name="age_embedding")

    def build(self, codes_shape):
        self.code_embedding.build()
        self.type_embedding.build()
        if self.time_encoding == "day_of_year":
            self.date_embedding.build()
        else:
            self.days_before_embedding.build()
            self.age_embedding.build()

    def compute_output_shape(self, codes_shape):
        return (*codes_shape[:2], self.d_model)

    def call(self, codes, visit_type, date_index, days_before, age_days, code_gate=None, code_vectors=None):
        """`code_gate` (B, V, C), 1 by default, scales each code's embedding: the derivative of an
        output with respect to it is gradient x input on that code (the attention playground).
        `code_vectors` (B, V, C, d), the looked-up code embeddings when given: their gradient is
        the embedding table's per-example gradient, row by row (DP-SGD, shared_model.training.privacy)."""
        if code_vectors is None:
            visits = self.summed_code_vectors(codes, code_gate)
        else:  # DP-SGD differentiates one patient's vectors slot by slot
            visits = ops.sum(code_vectors * ops.expand_dims(ops.cast(codes > 0, code_vectors.dtype), -1), axis=2)
        visits = visits + self.type_embedding(visit_type)
        if self.time_encoding == "day_of_year":
            return visits + self.date_embedding(date_index)
        valid = visit_type > 0
        log_days = ops.floor(ops.log(ops.maximum(ops.cast(days_before, "float32"), 1.0)) / ops.log(2.0))
        day_bucket = ops.where(valid, ops.minimum(ops.cast(log_days, "int32") + 1, DAYS_BEFORE_BUCKETS - 1), 0)
        months = ops.cast(ops.cast(age_days, "float32") / 30.4375, "int32")
        age_bucket = ops.where(valid, ops.minimum(months, AGE_MONTH_BUCKETS - 2) + 1, 0)
        return visits + self.days_before_embedding(day_bucket) + self.age_embedding(age_bucket)

    def summed_code_vectors(self, codes, code_gate=None):
        """Each visit's sum of its real codes' embeddings (B, V, d), each scaled by `code_gate`.

        Only real codes are looked up (the table read in place, not copied) and summed per visit,
        so the table's gradient (tf.IndexedSlices) has one row per real code rather than one per
        slot, padding included: on paper-shaped batches ~3.5x fewer rows for the optimizer to
        sum, with the same sums (a padded slot's gradient is zero), and no (B, V, C, d) tensor."""
        if not self.code_embedding.built:
            self.code_embedding.build()
        real = tf.where(codes > 0)
        vectors = tf.gather(self.code_embedding.embeddings.value, tf.gather_nd(codes, real))
        if code_gate is not None:
            vectors = vectors * tf.cast(tf.gather_nd(code_gate, real), vectors.dtype)[:, None]
        n_visits = codes.shape[1]
        visit = real[:, 0] * n_visits + real[:, 1]
        summed = tf.math.unsorted_segment_sum(vectors, visit, tf.cast(tf.shape(codes)[0], tf.int64) * n_visits)
        return tf.reshape(summed, [-1, n_visits, self.d_model])

    def get_config(self):
        return {
            **super().get_config(),
            "vocab_size": self.vocab_size,
            "d_model": self.d_model,
            "time_encoding": self.time_encoding,
        }


class DemographicToken(keras.layers.Layer):
    """Token 0 of the sequence: age-bucket embedding + sex embedding."""

    def __init__(self, d_model: int, **kwargs):
        super().__init__(**kwargs)
        self.d_model = d_model
        self.age_embedding = keras.layers.Embedding(N_AGE_BUCKETS, d_model, name="age_bucket_embedding")
        self.sex_embedding = keras.layers.Embedding(N_SEX, d_model, name="sex_embedding")

    def build(self, demo_shape):
        self.age_embedding.build()
        self.sex_embedding.build()

    def compute_output_shape(self, demo_shape):
        return (demo_shape[0], 1, self.d_model)

    def call(self, demo):
        token = self.age_embedding(demo[:, 0]) + self.sex_embedding(demo[:, 1])
        return ops.expand_dims(token, 1)

    def get_config(self):
        return {**super().get_config(), "d_model": self.d_model}


class CodeCounts(keras.layers.Layer):
    """log(1 + how often each vocabulary code occurs in a patient's input): (B, vocab_size).

    The patient vector is a softmax-weighted average over visits, which keeps whether a code is
    common among a patient's visits but not how many there were; a task head reading these counts
    beside it keeps both (wide and deep). Padding (code 0) counts nothing. `code_gate` (B, V, C)
    weights each occurrence, so that the attention playground's gradient x input covers this path
    too. No weights: a checkpoint holds only the head's columns for it."""

    def __init__(self, vocab_size: int, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size = vocab_size

    def compute_output_shape(self, codes_shape):
        return (codes_shape[0], self.vocab_size)

    def call(self, codes, code_gate=None):
        batch = ops.shape(codes)[0]
        codes = ops.reshape(codes, (batch, -1))
        present = ops.cast(codes > 0, "float32")
        weight = present if code_gate is None else present * ops.reshape(code_gate, (batch, -1))
        segment = codes + ops.arange(batch, dtype=codes.dtype)[:, None] * self.vocab_size
        counts = tf.math.unsorted_segment_sum(
            ops.reshape(weight, (-1,)), ops.reshape(segment, (-1,)), batch * self.vocab_size
        )
        return ops.log1p(ops.reshape(counts, (batch, self.vocab_size)))

    def get_config(self):
        return {**super().get_config(), "vocab_size": self.vocab_size}


class TransformerBlock(keras.layers.Layer):
    """Self-attention + feed-forward, post-LN (Claim-PT) or pre-LN; returns the attention weights."""

    def __init__(
        self, d_model: int, n_heads: int, ffn_dim: int, dropout: float = 0.0, pre_layer_norm: bool = False, **kwargs
    ):
        super().__init__(**kwargs)
        self.d_model, self.n_heads, self.ffn_dim = d_model, n_heads, ffn_dim
        self.dropout_rate, self.pre_layer_norm = dropout, pre_layer_norm
        self.attention = keras.layers.MultiHeadAttention(n_heads, d_model // n_heads, dropout=dropout, name="attention")
        self.ffn_in = keras.layers.Dense(ffn_dim, activation="relu", name="ffn_in")
        self.ffn_out = keras.layers.Dense(d_model, name="ffn_out")
        self.norm_attention = keras.layers.LayerNormalization(epsilon=1e-6, name="norm_attention")
        self.norm_ffn = keras.layers.LayerNormalization(epsilon=1e-6, name="norm_ffn")
        self.dropout = keras.layers.Dropout(dropout)

    def build(self, x_shape):
        self.attention.build(x_shape, x_shape)
        self.norm_attention.build(x_shape)
        self.ffn_in.build(x_shape)
        self.ffn_out.build((*x_shape[:-1], self.ffn_dim))
        self.norm_ffn.build(x_shape)

    def compute_output_shape(self, x_shape):
        """The block's output and its attention weights (batch, heads, tokens, tokens)."""
        return x_shape, (x_shape[0], self.n_heads, x_shape[1], x_shape[1])

    def call(self, x, attention_mask, training=None, every_token=False):
        """`attention_mask`: (batch, tokens, tokens) booleans, each row the same (which tokens are
        real); padded keys get zero weight.

        Only real tokens are computed: about half of a batch's slots are padding, and a padded
        token's output is never read (the CP head takes real visits, the patient vector token 0,
        the next layer masks padded keys). So the projections, the feed-forward network and the
        norms run on the real tokens' rows as flat matmuls, and only the scores, which need the
        (batch, tokens) layout, see padding. A padded slot's output is 0, and the scores of a
        padded query are uniform over the real keys. The mathematics of Keras' MultiHeadAttention
        on every real token (tests/test_model.py), whose layer holds the weights.

        `every_token` computes the padded slots too, as rows of the same matmuls: DP-SGD's
        per-patient gradients run under tf.vectorized_map, which cannot vectorise the gather of a
        varying number of real tokens."""
        shape = tf.shape(x, out_type=tf.int64)
        real = None if every_token else tf.where(attention_mask[:, 0, :])  # (rows, 2): each real token
        rows = _to_rows(x, real)
        h = self.norm_attention(rows) if self.pre_layer_norm else rows
        attended, scores = self._attend(h, real, shape, attention_mask, training)
        rows = rows + self.dropout(attended, training=training)
        if not self.pre_layer_norm:
            rows = self.norm_attention(rows)
        h = self.norm_ffn(rows) if self.pre_layer_norm else rows
        rows = rows + self.dropout(self.ffn_out(self.ffn_in(h)), training=training)
        if not self.pre_layer_norm:
            rows = self.norm_ffn(rows)
        return _to_layout(rows, real, shape), scores

    def _attend(self, rows, real, shape, attention_mask, training):
        """Multi-head self-attention of the tokens' rows (rows, d), the real ones at `real` (None:
        every slot): (its output rows, the attention weights (batch, heads, tokens, tokens))."""
        mha, heads, key_dim = self.attention, self.n_heads, self.d_model // self.n_heads
        per_token = tf.concat([shape[:2], [heads, key_dim]], axis=0)

        def project(dense: keras.layers.Layer) -> tf.Tensor:  # EinsumDense (d, heads, key_dim) as one matmul
            flat = ops.matmul(rows, ops.reshape(dense.kernel, (self.d_model, heads * key_dim)))
            flat = ops.reshape(flat + ops.reshape(dense.bias, (heads * key_dim,)), (-1, heads, key_dim))
            return _to_layout(flat, real, per_token)

        query = project(mha.query_dense) * (1.0 / math.sqrt(key_dim))
        key, value = project(mha.key_dense), project(mha.value_dense)
        scores = tf.einsum("bthk,bshk->bhts", query, key)
        keys = attention_mask[:, None, :, :]
        scores = tf.where(keys, tf.nn.softmax(tf.where(keys, scores, -1e9), axis=-1), 0.0)
        weights = self.dropout(scores, training=training)  # the attention's dropout, at the same rate
        attended = tf.einsum("bhts,bshk->bthk", weights, value)
        flat = ops.reshape(_to_rows(attended, real), (-1, heads * key_dim))
        output = mha.output_dense
        return ops.matmul(flat, ops.reshape(output.kernel, (heads * key_dim, self.d_model))) + output.bias, scores

    def get_config(self):
        return {
            **super().get_config(),
            "d_model": self.d_model,
            "n_heads": self.n_heads,
            "ffn_dim": self.ffn_dim,
            "dropout": self.dropout_rate,
            "pre_layer_norm": self.pre_layer_norm,
        }


def _to_rows(tensor: tf.Tensor, real: tf.Tensor | None) -> tf.Tensor:
    """(batch, tokens, ...) -> the rows of the real tokens (every slot's where `real` is None)."""
    if real is None:
        return tf.reshape(tensor, tf.concat([[-1], tf.shape(tensor)[2:]], axis=0))
    return tf.gather_nd(tensor, real)


def _to_layout(rows: tf.Tensor, real: tf.Tensor | None, shape: tf.Tensor) -> tf.Tensor:
    """The inverse of _to_rows: rows back to (batch, tokens, ...), padded slots 0 (or computed)."""
    if real is None:
        return tf.reshape(rows, shape)
    return tf.scatter_nd(real, rows, shape)
