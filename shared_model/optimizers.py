"""Optimizers: RMSprop with row-sparse embedding updates (pretraining), and Adam with layer-wise
learning-rate decay and gradual unfreezing (discriminative fine-tuning)."""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops


class SparseRMSprop(keras.optimizers.RMSprop):
    """Keras' RMSprop, with an embedding's gradient (tf.IndexedSlices: the ~1,500 rows a batch
    touches out of 50,000) applied to those rows only, decay included.

    Same update as keras.optimizers.RMSprop (momentum 0, not centered) to float rounding, tested.
    Keras decays every accumulator row by rho every step; here an embedding row's accumulator is
    brought up to date only when the row is next touched (rho ** steps missed, counted per row in
    `decays`), which spares a pass over the whole 5M-entry table per step. Its touched rows add
    (1 - rho) * the sum of their occurrences' squared gradients (Keras squares an IndexedSlices per
    occurrence) and move by lr * g / sqrt(v + eps); untouched rows do not move. Call
    `bring_up_to_date()` before reading the accumulators (the client's kept optimizer state)."""

    def build(self, var_list):
        super().build(var_list)
        # per embedding row: how many steps' decays its accumulator holds
        self._decays = {self._get_variable_index(v): self.add_variable((v.shape[0],), dtype="int64", name="decays")
                        for v in var_list if _is_embedding(v)}

    def update_step(self, gradient, variable, learning_rate):
        index = self._get_variable_index(variable)
        if self.momentum > 0 or self.centered or index not in self._decays:
            return super().update_step(gradient, variable, learning_rate)
        velocity, decays = self._velocities[index], self._decays[index]
        done = tf.cast(self.iterations, "int64") + 1  # steps whose decay the accumulators hold after this one
        if not isinstance(gradient, tf.IndexedSlices):
            self._catch_up(velocity, decays, done - 1)
            super().update_step(gradient, variable, learning_rate)
            self.assign(decays, tf.fill(tf.shape(decays), done))
            return
        rows, position = tf.unique(gradient.indices)
        n_rows = tf.shape(rows)[0]
        summed = tf.math.unsorted_segment_sum(gradient.values, position, n_rows)
        squares = tf.math.unsorted_segment_sum(tf.square(gradient.values), position, n_rows)
        missed = tf.cast(done - tf.gather(decays.value, rows), variable.dtype)
        updated = tf.gather(velocity.value, rows) * tf.pow(tf.cast(self.rho, variable.dtype), missed)[:, None] \
            + (1 - self.rho) * squares
        self.assign(velocity, tf.IndexedSlices(updated, rows))
        self.assign(decays, tf.IndexedSlices(tf.fill([n_rows], done), rows))
        step = tf.cast(learning_rate, variable.dtype) * summed / tf.sqrt(updated + self.epsilon)
        self.assign_sub(variable, tf.IndexedSlices(step, rows))

    def _catch_up(self, velocity, decays, steps) -> None:
        missed = tf.cast(steps - decays.value, velocity.dtype)
        velocity.assign(velocity.value * tf.pow(tf.cast(self.rho, velocity.dtype), missed)[:, None])
        decays.assign(tf.fill(tf.shape(decays), tf.cast(steps, "int64")))

    def bring_up_to_date(self) -> None:
        """Apply every embedding row's pending decays: the accumulators then equal Keras'."""
        if self.built:
            for index, decays in self._decays.items():
                self._catch_up(self._velocities[index], decays, tf.cast(self.iterations, "int64"))


def _is_embedding(variable) -> bool:
    return len(variable.shape) == 2 and variable.name == "embeddings"


class LayerwiseAdam(keras.optimizers.Adam):
    """Variable at depth d (0 = task head) learns at lr * decay**d, and only once d <= unfrozen_depth.

    Frozen variables get zero gradients, so their Adam moments stay zero until unfrozen.
    """

    def __init__(self, depths: dict[str, int], decay: float = 1.0, unfrozen_depth: int = 10**6, **kwargs):
        super().__init__(**kwargs)
        self.depths = dict(depths)
        self.decay = float(decay)
        self.unfrozen_depth = keras.Variable(int(unfrozen_depth), dtype="int32", trainable=False,
                                             name="unfrozen_depth")

    def build(self, var_list):
        super().build(var_list)
        self._depth_by_index = [self.depths.get(v.path, 0) for v in var_list]

    def update_step(self, gradient, variable, learning_rate):
        depth = self._depth_by_index[self._get_variable_index(variable)]
        active = ops.cast(depth <= self.unfrozen_depth, gradient.dtype)
        scale = ops.cast(self.decay**depth, learning_rate.dtype if hasattr(learning_rate, "dtype") else "float32")
        super().update_step(gradient * active, variable, learning_rate * scale)

    def get_config(self):
        return {**super().get_config(), "depths": self.depths, "decay": self.decay,
                "unfrozen_depth": int(self.unfrozen_depth.numpy())}


class GradualUnfreezing(keras.callbacks.Callback):
    """Unfreeze one more depth level at the end of every epoch (ULMFiT-style)."""

    def __init__(self, optimizer: LayerwiseAdam):
        super().__init__()
        self.optimizer_ = optimizer

    def on_epoch_end(self, epoch, logs=None):
        self.optimizer_.unfrozen_depth.assign(epoch + 1)
