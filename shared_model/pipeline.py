"""The tf.data input pipeline: batches from in-memory or memory-mapped sample arrays."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import tensorflow as tf

from shared_model.tensorize import MODEL_INPUTS, Layout, field_shape

Arrays = dict[str, np.ndarray]


def _batches(parts: Sequence[Arrays], batch_size: int, rng: np.random.Generator | None,
             fields: Sequence[str]) -> Iterator[dict[str, np.ndarray]]:
    order = rng.permutation(len(parts)) if rng is not None else np.arange(len(parts))
    for part_index in order:
        part = parts[part_index]
        n = len(part["subject_id"])
        rows = rng.permutation(n) if rng is not None else np.arange(n)
        for start in range(0, n, batch_size):
            take = np.sort(rows[start : start + batch_size])  # sorted reads are faster on memory maps
            yield {name: np.asarray(part[name][take]).astype(np.int32 if name != "label" else np.float32)
                   for name in fields}


def make_dataset(parts: Sequence[Arrays], *, target: str | tuple[str, ...], batch_size: int, shuffle: bool,
                 seed: int = 0, layout: Layout = Layout()) -> tf.data.Dataset:
    """(inputs, targets) batches; a shuffled dataset draws a new, seeded order every epoch."""
    targets = (target,) if isinstance(target, str) else tuple(target)
    fields = (*MODEL_INPUTS, *targets)
    epoch = [0]

    def generate() -> Iterator[dict[str, np.ndarray]]:
        rng = np.random.default_rng([seed, epoch[0]]) if shuffle else None
        epoch[0] += 1
        yield from _batches(parts, batch_size, rng, fields)

    signature = {name: tf.TensorSpec((None, *field_shape(name, layout)),
                                     tf.float32 if name == "label" else tf.int32) for name in fields}
    data = tf.data.Dataset.from_generator(generate, output_signature=signature)

    def split(batch: dict[str, tf.Tensor]):
        inputs = {name: batch[name] for name in MODEL_INPUTS}
        if isinstance(target, str):
            return inputs, batch[target]
        return inputs, {name: batch[name] for name in targets}

    n_batches = sum(-(-len(p["subject_id"]) // batch_size) for p in parts)
    data = data.apply(tf.data.experimental.assert_cardinality(n_batches))
    return data.map(split, num_parallel_calls=1).prefetch(2)


def total_samples(parts: Sequence[Arrays]) -> int:
    return sum(len(p["subject_id"]) for p in parts)


