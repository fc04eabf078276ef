"""Where a pretraining step's milliseconds go: each part of the real step timed on its own, at the
paper's sizes, forward and backward (`claimpt bench` writes it as the step profile).

Each part is a compiled function over one fixed batch, called `calls` times after a warm-up; its
median is reported. The parts are those of `PretrainingModel.train_step`: the input pipeline, the
visit embedding (code lookup and per-visit sum), the transformer block, the patient vector, the
fused NVP and CP heads with their losses, and the optimizer's update. The whole step is timed the
same way; what the parts leave of it is the rest of the encoder (the demographic token, masks,
the patient vector) and the cost of running a graph of several hundred small operations."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np


def _median_ms(work: Callable[[], Any], calls: int) -> float:
    import tensorflow as tf

    work()
    work()
    seconds = []
    for _ in range(calls):
        started = time.perf_counter()
        for tensor in tf.nest.flatten(work(), expand_composites=True):
            np.asarray(tensor)  # waits for every result
        seconds.append(time.perf_counter() - started)
    return round(1000 * statistics.median(seconds), 2)


def profile_step(model, train, calls: int = 30) -> dict[str, float]:
    """Milliseconds per batch of each part of `model`'s pretraining step on `train`'s first batch
    (`model` compiled by `training.compile_pretraining`)."""
    import tensorflow as tf

    x, y = next(iter(train))
    encoder, config = model.encoder, model.model_config
    embedding = encoder.get_layer("visit_embedding")
    block = encoder.get_layer("block_0")
    valid = x["visit_type"] > 0
    outputs = encoder(x, training=True)
    visits, patients = tf.constant(outputs["visits"]), tf.constant(outputs["patient"])
    tokens = tf.random.stateless_normal((visits.shape[0], visits.shape[1] + 1, config.d_model), seed=(0, 1))
    token_valid = tf.concat([tf.ones_like(valid[:, :1]), valid], axis=1)
    attention_mask = tf.logical_and(tf.ones_like(token_valid[:, :, None]), token_valid[:, None, :])

    def gradients_of(loss_fn: Callable[[], tf.Tensor], variables, extra=()) -> tf.function:
        @tf.function
        def run():
            with tf.GradientTape() as tape:
                tape.watch(list(extra))
                loss = loss_fn()
            return tape.gradient(loss, [*variables, *extra])  # all of them: unused ones would not run

        return run

    def weighted(*tensors):
        return sum(tf.reduce_sum(t * tf.cast(i + 1, t.dtype)) for i, t in enumerate(tensors))

    def embed():
        return weighted(embedding(x["codes"], x["visit_type"], x["date_index"], x["days_before"], x["age_days"]))

    parts = {
        "input pipeline (next batch)": lambda: next(batches)[0]["codes"],
        "visit embedding": gradients_of(embed, embedding.trainable_variables),
        "transformer block": gradients_of(
            lambda: weighted(*block(tokens, attention_mask, training=True)), block.trainable_variables, (tokens,)
        ),
        "NVP head + loss": gradients_of(
            lambda: model.next_visit_loss(patients, y["target_groups"]),
            model.nvp_head.trainable_variables,
            (patients,),
        ),
        "CP head + loss": gradients_of(
            lambda: model.category_loss(visits, valid, y["visit_groups"]),
            model.cp_head.trainable_variables,
            (visits,),
        ),
    }
    code_table = embedding.code_embedding.embeddings.path
    touched = 1_500  # about the real codes of a batch
    gradients = [
        tf.IndexedSlices(tf.ones((touched, config.d_model)), tf.range(touched) * 7)
        if v.path == code_table
        else tf.zeros_like(v)
        for v in model.trainable_variables
    ]

    @tf.function
    def optimizer_update():
        model.optimizer.apply_gradients(zip(gradients, model.trainable_variables, strict=True))
        return model.optimizer.iterations

    parts["optimizer update"] = optimizer_update

    @tf.function
    def whole_step():
        return model.train_step((x, y))["loss"]

    parts["whole step"] = whole_step
    batches = iter(train.repeat())
    return {name: _median_ms(work, calls) for name, work in parts.items()}
