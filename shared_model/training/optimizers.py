"""Optimizers: RMSprop with row-sparse embedding updates (pretraining), and Adam with layer-wise
learning-rate decay and gradual unfreezing (discriminative fine-tuning)."""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops


class SparseRMSprop(keras.optimizers.RMSprop):
    """Keras' RMSprop, with the code embedding's gradient (tf.IndexedSlices: the ~1,500 rows a
    batch touches out of 50,000) applied to those rows only instead of densified.

    Same update as keras.optimizers.RMSprop (momentum 0, not centered) to float rounding, tested:
    every accumulator decays by rho; the touched rows add (1 - rho) * the sum of their
    occurrences' squared gradients (Keras squares an IndexedSlices per occurrence) and move by
    lr * g / sqrt(v + eps); untouched rows get a zero gradient, hence no move.

    The decay of every accumulator runs as one XLA kernel in place: once a table has had sparse
    updates, TensorFlow copies it on every plain read, which made `v * rho` three passes over
    20 MB instead of one. The dense variables are updated together in one XLA-compiled function
    (`_rmsprop_in_place`), not by Keras' ten-odd TensorFlow operations for each of them."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.__dict__["_decay_in_place"] = tf.function(_scale_in_place, jit_compile=True)
        self.__dict__["_dense_in_place"] = tf.function(_rmsprop_in_place, jit_compile=True)

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        if self.momentum > 0 or self.centered:
            return super()._backend_update_step(grads, trainable_variables, learning_rate)
        dense = []
        for gradient, variable in zip(grads, trainable_variables, strict=True):
            if isinstance(gradient, tf.IndexedSlices):
                self.update_step(gradient, variable, learning_rate)
            else:
                dense.append((gradient, variable, self._velocities[self._get_variable_index(variable)]))
        if dense:
            self._dense_in_place(
                [v.value for _, v, _ in dense],
                [velocity.value for _, _, velocity in dense],
                [g for g, _, _ in dense],
                tf.cast(learning_rate, tf.float32),
                tf.constant(self.rho, tf.float32),
                tf.constant(self.epsilon, tf.float32),
            )

    def update_step(self, gradient, variable, learning_rate):
        if not isinstance(gradient, tf.IndexedSlices) or self.momentum > 0 or self.centered:
            return super().update_step(gradient, variable, learning_rate)
        rows, position = tf.unique(gradient.indices)
        n_rows = tf.shape(rows)[0]
        both = tf.concat([gradient.values, tf.square(gradient.values)], axis=1)  # one pass over the occurrences
        summed, squares = tf.split(tf.math.unsorted_segment_sum(both, position, n_rows), 2, axis=1)
        velocity = self._velocities[self._get_variable_index(variable)]
        self._decay_in_place(velocity.value, tf.constant(self.rho, velocity.dtype))
        self.assign_add(velocity, tf.IndexedSlices((1 - self.rho) * squares, rows))
        step = tf.cast(learning_rate, variable.dtype) * summed / tf.sqrt(tf.gather(velocity.value, rows) + self.epsilon)
        self.assign_sub(variable, tf.IndexedSlices(step, rows))


def _scale_in_place(variable: tf.Variable, factor: tf.Tensor) -> None:
    variable.assign(variable.read_value() * factor)


def _rmsprop_in_place(variables: list, velocities: list, gradients: list, learning_rate, rho, epsilon) -> None:
    """Keras' RMSprop update (momentum 0, not centered) of every variable, in place."""
    for variable, velocity, gradient in zip(variables, velocities, gradients, strict=True):
        updated = rho * velocity.read_value() + (1 - rho) * tf.square(gradient)
        velocity.assign(updated)
        variable.assign_sub(learning_rate * gradient / tf.sqrt(updated + epsilon))


class LayerwiseAdam(keras.optimizers.Adam):
    """Variable at depth d (0 = task head) learns at lr * decay**d, and only once d <= unfrozen_depth.

    Frozen variables get zero gradients, so their Adam moments stay zero until unfrozen.
    """

    def __init__(self, depths: dict[str, int], decay: float = 1.0, unfrozen_depth: int = 10**6, **kwargs):
        super().__init__(**kwargs)
        self.depths = dict(depths)
        self.decay = float(decay)
        self.unfrozen_depth = keras.Variable(int(unfrozen_depth), dtype="int32", trainable=False, name="unfrozen_depth")

    def build(self, var_list):
        super().build(var_list)
        self._depth_by_index = [self.depths.get(v.path, 0) for v in var_list]

    def update_step(self, gradient, variable, learning_rate):
        depth = self._depth_by_index[self._get_variable_index(variable)]
        active = ops.cast(depth <= self.unfrozen_depth, gradient.dtype)
        scale = ops.cast(self.decay**depth, learning_rate.dtype if hasattr(learning_rate, "dtype") else "float32")
        super().update_step(gradient * active, variable, learning_rate * scale)

    def get_config(self):
        return {
            **super().get_config(),
            "depths": self.depths,
            "decay": self.decay,
            "unfrozen_depth": int(self.unfrozen_depth.numpy()),
        }


class GradualUnfreezing(keras.callbacks.Callback):
    """Unfreeze one more depth level at the end of every epoch (ULMFiT-style)."""

    def __init__(self, optimizer: LayerwiseAdam):
        super().__init__()
        self.optimizer_ = optimizer

    def on_epoch_end(self, epoch, logs=None):
        self.optimizer_.unfrozen_depth.assign(epoch + 1)
