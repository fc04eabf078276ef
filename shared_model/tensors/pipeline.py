"""The tf.data input pipeline: batches from in-memory or memory-mapped sample arrays.

Parts (shards) are loaded one at a time, in a seeded random order each epoch, and mixed through
a shuffle buffer; everything after the shard load runs in TensorFlow's C++ runtime, so the
training step is never starved by Python on a 2-core machine.

tf.data's autotuning is off: its background model thread sleeps in growing intervals and an
iterator's destructor waits for it, which cost up to 1.9 s at the end of every epoch (Keras
makes one iterator per epoch): 37% of a 3,000-patient pretraining epoch, and it hit every
small fine-tuning epoch too. A fixed prefetch of two batches keeps the step fed just as well.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from shared_model.tensors.tensorize import MODEL_INPUTS, Arrays, Layout, field_shape

SHUFFLE_BUFFER = 50_000
PREFETCH_BATCHES = 2


def _dtype(name: str) -> tf.DType:
    return tf.float32 if name == "label" else tf.int32


def make_dataset(
    parts: Sequence[Arrays],
    *,
    target: str | tuple[str, ...],
    batch_size: int,
    shuffle: bool,
    seed: int = 0,
    layout: Layout = Layout(),
) -> tf.data.Dataset:
    """(inputs, targets) batches; a shuffled dataset draws a new, seeded order every epoch."""
    fields = _fields(target)
    total = total_samples(parts)

    def load(index: np.int64) -> list[np.ndarray]:
        part = parts[int(index)]
        return [np.asarray(part[name]).astype(_dtype(name).as_numpy_dtype) for name in fields]

    def part_samples(index: tf.Tensor) -> tf.data.Dataset:
        tensors = tf.numpy_function(load, [index], [_dtype(name) for name in fields], stateful=False)
        return tf.data.Dataset.from_tensor_slices(_columns(tensors, fields, layout))

    order = tf.data.Dataset.range(len(parts))
    if shuffle:
        order = order.shuffle(len(parts), seed=seed, reshuffle_each_iteration=True)
    data = order.flat_map(part_samples)
    if shuffle:
        data = data.shuffle(min(max(total, 1), SHUFFLE_BUFFER), seed=seed, reshuffle_each_iteration=True)
    data = data.batch(batch_size).apply(tf.data.experimental.assert_cardinality(-(-total // batch_size)))
    return _finish(data, target)


def poisson_dataset(
    parts: Sequence[Arrays], *, target: str | tuple[str, ...], rate: float, seed: int = 0, layout: Layout = Layout()
) -> tf.data.Dataset:
    """DP-SGD's batches: every step takes each sample independently with probability `rate`
    (Poisson sampling, what the privacy accountant assumes), so batch sizes vary around
    rate x n; an epoch is ceil(1 / rate) steps. Every epoch draws anew, from `seed`."""
    if not 0 < rate <= 1:
        raise ValueError(f"sampling rate must be in (0, 1], got {rate}")
    fields = _fields(target)
    arrays = {
        name: np.concatenate([np.asarray(p[name]) for p in parts]).astype(_dtype(name).as_numpy_dtype)
        for name in fields
    }
    total = total_samples(parts)
    steps = math.ceil(1 / rate)

    def draw(step_seed: np.int64) -> list[np.ndarray]:
        rows = np.flatnonzero(np.random.default_rng(int(step_seed) & (2**63 - 1)).random(total) < rate)
        return [arrays[name][rows] for name in fields]

    def step(step_seed: tf.Tensor) -> dict[str, tf.Tensor]:
        tensors = tf.numpy_function(draw, [step_seed], [_dtype(name) for name in fields], stateful=False)
        return _columns(tensors, fields, layout)

    data = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).take(steps).map(step)
    return _finish(data.apply(tf.data.experimental.assert_cardinality(steps)), target)


def _fields(target: str | tuple[str, ...]) -> tuple[str, ...]:
    return (*MODEL_INPUTS, *((target,) if isinstance(target, str) else target))


def _columns(tensors: list[tf.Tensor], fields: tuple[str, ...], layout: Layout) -> dict[str, tf.Tensor]:
    """numpy_function outputs as named columns with their static shapes back."""
    return {
        name: tf.ensure_shape(t, (None, *field_shape(name, layout))) for name, t in zip(fields, tensors, strict=True)
    }


def _finish(data: tf.data.Dataset, target: str | tuple[str, ...]) -> tf.data.Dataset:
    """(inputs, targets) pairs, prefetched, autotuning off (see the module docstring)."""

    def split(batch: dict[str, tf.Tensor]):
        inputs = {name: batch[name] for name in MODEL_INPUTS}
        if isinstance(target, str):
            return inputs, batch[target]
        return inputs, {name: batch[name] for name in target}

    options = tf.data.Options()
    options.autotune.enabled = False
    return data.map(split).prefetch(PREFETCH_BATCHES).with_options(options)


def total_samples(parts: Sequence[Arrays]) -> int:
    return sum(len(p["subject_id"]) for p in parts)
