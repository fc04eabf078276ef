"""The Claim-PT model: faithful size, masking, attention, losses, optimizer and checkpoints."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from shared_model.contract.checkpoint import CheckpointError, assign_weights, load_checkpoint, save_checkpoint
from shared_model.model.config import ClaimTransformerConfig
from shared_model.model.head_loss import log1p_unit
from shared_model.model.layers import TransformerBlock
from shared_model.model.objectives import multilabel_bce_from_indices
from shared_model.model.precision import cpu_flags, native_bfloat16, resolve_precision
from shared_model.model.transformer import (
    CP_ROW_BUCKET,
    PretrainingModel,
    TaskModel,
    build_encoder,
    layer_depths,
    parameter_table,
)
from shared_model.tensors.vocabulary import Vocabulary
from shared_model.training.fit import Progress, compile_pretraining, new_pretraining_model
from shared_model.training.optimizers import LayerwiseAdam, SparseRMSprop

V, C = 30, 10


def random_batch(rng: np.random.Generator, n: int, vocab_size: int, n_groups: int, real_visits: np.ndarray) -> dict:
    """A batch with real_visits[i] right-aligned real visits per patient."""
    used = np.arange(V)[None, :] >= (V - real_visits)[:, None]
    codes = rng.integers(2, vocab_size, (n, V, C)) * (rng.random((n, V, C)) < 0.5)
    codes[:, :, 0] = rng.integers(2, vocab_size, (n, V))
    batch = {
        "codes": np.where(used[..., None], codes, 0),
        "visit_type": np.where(used, rng.integers(1, 6, (n, V)), 0),
        "date_index": np.where(used, rng.integers(1, 367, (n, V)), 0),
        "days_before": np.where(used, rng.integers(1, 3000, (n, V)), 0),
        "age_days": np.where(used, rng.integers(0, 6000, (n, V)), 0),
        "demo": np.stack([rng.integers(0, 7, n), rng.integers(0, 3, n)], axis=1),
    }
    batch = {k: v.astype(np.int32) for k, v in batch.items()}
    groups = np.where(rng.random((n, V, 4)) < 0.5, rng.integers(0, n_groups, (n, V, 4)), -1)
    groups = np.sort(groups, axis=-1)[..., ::-1]
    targets = {
        "target_groups": _distinct(rng.integers(0, n_groups, (n, 3))).astype(np.int32),
        "visit_groups": np.where(used[..., None], _distinct(groups), -1).astype(np.int32),
    }
    return batch, targets


def _distinct(groups: np.ndarray) -> np.ndarray:
    out = np.full_like(groups, -1)
    for idx in np.ndindex(groups.shape[:-1]):
        values = sorted(set(groups[idx][groups[idx] >= 0].tolist()))
        out[idx][: len(values)] = values
    return out


@pytest.fixture(scope="module")
def config() -> ClaimTransformerConfig:
    return ClaimTransformerConfig(vocab_size=60, n_groups=12, d_model=16, ffn_dim=16, patient_dim=16, n_heads=2)


def test_faithful_default_has_claim_pt_parameter_count() -> None:
    faithful = ClaimTransformerConfig(vocab_size=49_836, n_groups=3_357)
    total = sum(n for _, _, n in parameter_table(faithful))
    assert abs(total - 5_770_000) / 5_770_000 < 0.02, total
    assert abs(faithful.parameters - total) / total < 0.02  # the estimate a site checks before building a model


def test_config_round_trip_and_validation(config: ClaimTransformerConfig) -> None:
    assert ClaimTransformerConfig.from_json(config.to_json()) == config
    with pytest.raises(ValueError, match="divisible"):
        ClaimTransformerConfig(vocab_size=10, n_groups=2, d_model=10, n_heads=3)
    with pytest.raises(ValueError, match="time_encoding"):
        ClaimTransformerConfig(vocab_size=10, n_groups=2, time_encoding="hourly")
    with pytest.raises(ValueError, match="must be one of the model config's keys"):
        ClaimTransformerConfig.from_dict({**config.to_dict(), "layers": 3})


@pytest.mark.parametrize("options", [{}, {"time_encoding": "days_before+age", "pre_layer_norm": True, "n_layers": 2}])
def test_padding_never_changes_outputs(config: ClaimTransformerConfig, options: dict) -> None:
    cfg = ClaimTransformerConfig.from_dict({**config.to_dict(), **options})
    keras.utils.set_random_seed(1)
    encoder = build_encoder(cfg)
    rng = np.random.default_rng(0)
    batch, _ = random_batch(rng, 4, cfg.vocab_size, cfg.n_groups, np.array([3, 1, 7, 30]))
    reference = encoder(batch)
    noisy = {k: v.copy() for k, v in batch.items()}
    padded = batch["visit_type"] == 0
    noisy["date_index"][padded] = rng.integers(1, 367, padded.sum())
    noisy["days_before"][padded] = rng.integers(1, 999, padded.sum())
    noisy["age_days"][padded] = rng.integers(1, 999, padded.sum())
    # padding rows of the embedding tables must not matter either
    embedding = encoder.get_layer("visit_embedding").code_embedding
    table = embedding.embeddings.numpy()
    table[0] = 5.0
    embedding.embeddings.assign(table)
    changed = encoder(noisy)
    np.testing.assert_allclose(changed["patient"], reference["patient"], atol=1e-5)
    real = batch["visit_type"] > 0
    np.testing.assert_allclose(changed["visits"].numpy()[real], reference["visits"].numpy()[real], atol=1e-5)
    # the same patient in a batch with more or fewer padded slots gives the same vector
    single = {k: v[2:3] for k, v in batch.items()}
    np.testing.assert_allclose(encoder(single)["patient"][0], reference["patient"][2], atol=1e-5)


@pytest.mark.parametrize("pre_layer_norm", [False, True])
def test_the_encoders_declared_output_shapes_are_those_it_computes(
    config: ClaimTransformerConfig, pre_layer_norm: bool
) -> None:
    """The layers state their output shapes instead of being traced for them (shared_model.model.layers)."""
    encoder = build_encoder(ClaimTransformerConfig.from_dict({**config.to_dict(), "pre_layer_norm": pre_layer_norm}))
    batch, _ = random_batch(np.random.default_rng(2), 3, config.vocab_size, config.n_groups, np.array([2, 5, 30]))
    computed = encoder(batch)
    for name, declared in encoder.output.items():
        assert (3, *declared.shape[1:]) == tuple(computed[name].shape), name


def test_attention_rows_sum_to_one_and_ignore_padding(config: ClaimTransformerConfig) -> None:
    encoder = build_encoder(config)
    batch, _ = random_batch(np.random.default_rng(1), 3, config.vocab_size, config.n_groups, np.array([2, 5, 30]))
    scores = encoder(batch)["attention_0"].numpy()
    assert scores.shape == (3, config.n_heads, V + 1, V + 1)
    np.testing.assert_allclose(scores.sum(-1), 1.0, atol=1e-5)
    key_valid = np.concatenate([np.ones((3, 1), bool), batch["visit_type"] > 0], axis=1)
    assert np.abs(scores * ~key_valid[:, None, None, :]).max() == 0.0


@pytest.mark.parametrize("real_visits", [[1, 4, 9, 30, 12], [30] * 9], ids=["one-bucket", "two-buckets"])
def test_sparse_loss_equals_dense_masked_reference(config: ClaimTransformerConfig, real_visits: list[int]) -> None:
    """The fast loss (CP head only on real visits, padded to a row bucket and fused by XLA;
    targets as indices) equals the plain one: dense multi-hot targets over all 30 slots with
    padding masked; same loss and gradients."""
    model = PretrainingModel(config)
    compile_pretraining(model, 1e-3)
    real_visits = np.array(real_visits)
    assert (real_visits.sum() > CP_ROW_BUCKET) == (len(real_visits) == 9)
    x, y = random_batch(np.random.default_rng(2), len(real_visits), config.vocab_size, config.n_groups, real_visits)

    def dense_reference():
        out = model(x, training=True)
        nvp_dense = tf.reduce_max(tf.one_hot(y["target_groups"], config.n_groups), axis=-2)
        nvp = tf.reduce_mean(keras.losses.binary_crossentropy(nvp_dense, out["nvp"], from_logits=True))
        cp_logits = model.cp_head(out["visits"])  # all slots, padding included
        cp_dense = tf.reduce_max(tf.one_hot(y["visit_groups"], config.n_groups), axis=-2)
        per_slot = keras.losses.binary_crossentropy(cp_dense, cp_logits, from_logits=True)
        mask = tf.cast(x["visit_type"] > 0, per_slot.dtype)
        return nvp + tf.reduce_sum(per_slot * mask) / tf.reduce_sum(mask)

    with tf.GradientTape(persistent=True) as tape:
        fast = model.compute_loss(x=x, y=y, y_pred=model(x, training=True))
        reference = dense_reference()
    assert float(fast) == pytest.approx(float(reference), rel=1e-5)
    for g_fast, g_ref in zip(
        tape.gradient(fast, model.trainable_variables), tape.gradient(reference, model.trainable_variables), strict=True
    ):
        np.testing.assert_allclose(tf.convert_to_tensor(g_fast), tf.convert_to_tensor(g_ref), atol=1e-6)


def test_visit_code_sums_emit_gradient_rows_for_real_codes_only(config: ClaimTransformerConfig) -> None:
    """Each visit's code sum equals the masked sum of Keras' Embedding lookups over its slots, gated
    or not, and the table's gradient is row-sparse with one row per real code, summing to the
    gradient of the plain masked computation."""
    rng = np.random.default_rng(6)
    x, _ = random_batch(rng, 5, config.vocab_size, config.n_groups, np.array([1, 4, 9, 30, 12]))
    layer = build_encoder(config).get_layer("visit_embedding")
    table = layer.code_embedding.embeddings
    weights = tf.constant(rng.normal(size=(*x["codes"].shape[:2], config.d_model)), tf.float32)
    for gate in (None, tf.constant(rng.uniform(0.5, 2.0, x["codes"].shape), tf.float32)):
        present = tf.cast(x["codes"] > 0, tf.float32) * (1.0 if gate is None else gate)
        with tf.GradientTape(persistent=True) as tape:
            fast = layer.summed_code_vectors(x["codes"], gate)
            plain = tf.reduce_sum(layer.code_embedding(x["codes"]) * present[..., None], axis=2)
            fast_loss, plain_loss = tf.reduce_sum(fast * weights), tf.reduce_sum(plain * weights)
        np.testing.assert_allclose(fast.numpy(), plain.numpy(), atol=1e-6)
        fast_grad, plain_grad = tape.gradient(fast_loss, table.value), tape.gradient(plain_loss, table.value)
        assert isinstance(fast_grad, tf.IndexedSlices)
        assert sorted(fast_grad.indices.numpy().tolist()) == sorted(x["codes"][x["codes"] > 0].tolist())
        np.testing.assert_allclose(tf.convert_to_tensor(fast_grad), tf.convert_to_tensor(plain_grad), atol=1e-5)


def test_sparse_rmsprop_equals_keras_rmsprop_on_an_embedding(config: ClaimTransformerConfig) -> None:
    """Row-sparse embedding updates (with codes repeated within a batch) give Keras' RMSprop
    weights; a dense step that skipped the decay of untouched rows would not."""
    x, y = random_batch(np.random.default_rng(3), 40, config.vocab_size, config.n_groups, np.arange(40) % 30 + 1)
    x["codes"][:, :, 1] = x["codes"][:, :, 0]  # the same code twice in a visit: duplicate gradient rows
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(10)

    def trained(optimizer: keras.optimizers.Optimizer) -> list[np.ndarray]:
        keras.utils.set_random_seed(5)
        model = PretrainingModel(config)
        model.compile(optimizer=optimizer)
        model.fit(data, epochs=3, verbose=0)
        return model.get_weights()

    sparse, stock = trained(SparseRMSprop(1e-2)), trained(keras.optimizers.RMSprop(1e-2))
    for a, b in zip(sparse, stock, strict=True):
        np.testing.assert_allclose(a, b, atol=2e-5)
    assert isinstance(new_pretraining_model(config, seed=0).optimizer, SparseRMSprop)


def test_progress_reports_within_an_epoch(config: ClaimTransformerConfig, caplog: pytest.LogCaptureFixture) -> None:
    x, y = random_batch(np.random.default_rng(4), 30, config.vocab_size, config.n_groups, np.arange(30) % 30 + 1)
    model = new_pretraining_model(config, seed=0)
    with caplog.at_level(logging.INFO, logger="shared_model.training.fit"):
        model.fit(
            tf.data.Dataset.from_tensor_slices((x, y)).batch(10),
            epochs=1,
            verbose=0,
            callbacks=[Progress(steps_per_epoch=3, interval_seconds=0.0)],
        )
    steps = [r.getMessage() for r in caplog.records if "step" in r.getMessage()]
    assert steps and steps[-1].startswith("epoch 1: step 3/3")
    assert any(r.getMessage().startswith("epoch 1: cp_loss=") for r in caplog.records)


def test_multilabel_bce_matches_keras_for_arbitrary_targets() -> None:
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(6, 9)).astype(np.float32)
    targets = np.array([[0, 3, -1], [8, -1, -1], [-1, -1, -1], [1, 2, 4], [5, -1, -1], [7, 6, 0]], dtype=np.int32)
    dense = np.zeros((6, 9), np.float32)
    for i, row in enumerate(targets):
        dense[i, row[row >= 0]] = 1
    np.testing.assert_allclose(
        multilabel_bce_from_indices(logits, targets),
        keras.losses.binary_crossentropy(dense, logits, from_logits=True),
        rtol=1e-5,
    )


def test_layerwise_adam_freezes_and_decays(config: ClaimTransformerConfig) -> None:
    encoder = build_encoder(config)
    model = TaskModel(encoder, "binary", code_counts=True)
    fitted_by_the_probe = np.random.default_rng(3).normal(size=model.count_head.kernel.shape).astype(np.float32)
    model.count_head.set_weights([fitted_by_the_probe])
    depths = layer_depths(model, config.n_layers)
    assert all(d == 0 for p, d in depths.items() if "task_head" in p)
    assert max(depths.values()) == 2 + config.n_layers
    optimizer = LayerwiseAdam(depths, decay=0.5, unfrozen_depth=0, learning_rate=0.01)
    model.compile(optimizer=optimizer)
    x, _ = random_batch(np.random.default_rng(4), 8, config.vocab_size, config.n_groups, np.full(8, 5))
    labels = np.array([0, 1] * 4, np.float32)
    before = {v.path: v.numpy().copy() for v in model.trainable_variables}
    model.fit(x, labels, epochs=1, batch_size=8, verbose=0)

    def moved() -> set[str]:
        now = {v.path: v.numpy() for v in model.trainable_variables}
        return {p for p, w in before.items() if not np.allclose(w, now[p])}

    assert moved() and all(depths[p] == 0 for p in moved()), moved()
    optimizer.unfrozen_depth.assign(100)
    model.fit(x, labels, epochs=1, batch_size=8, verbose=0)
    assert any(depths[p] == max(depths.values()) for p in moved())
    np.testing.assert_array_equal(model.count_head.get_weights()[0], fitted_by_the_probe)  # no step moves it


def test_the_probe_reads_how_often_a_code_occurs(config: ClaimTransformerConfig) -> None:
    """The outcome is how many times one code occurred. An attention-pooled patient vector keeps
    whether it is common among a patient's visits, not how many there were; the probe's count head
    (log 1 + count of each code, layers.CodeCounts) keeps it."""
    from shared_model.evaluation.metrics import auroc
    from shared_model.model.transformer import TASK_BINARY
    from shared_model.training.fit import logistic_probe, predict_task

    rng = np.random.default_rng(11)
    arrays, _ = random_batch(rng, 700, config.vocab_size, config.n_groups, rng.integers(1, V + 1, 700))
    occurrences = (arrays["codes"] == 7).sum(axis=(1, 2))
    counts = TaskModel(build_encoder(config), TASK_BINARY, code_counts=True).code_counts(arrays["codes"]).numpy()
    np.testing.assert_allclose(counts[:, 7], np.log1p(occurrences), rtol=1e-6)
    assert (counts[:, 0] == 0).all()  # padding counts nothing
    arrays |= {
        "label": (occurrences >= np.median(occurrences)).astype(np.float32),
        "subject_id": np.arange(700),
        "prediction_day": np.zeros(700, int),
    }
    train, tuning, held_out = (
        {k: v[part] for k, v in arrays.items()} for part in (slice(0, 400), slice(400, 500), slice(500, 700))
    )
    held_out_auroc = {}
    for with_counts in (False, True):
        model = TaskModel(build_encoder(config), TASK_BINARY, code_counts=with_counts)
        logistic_probe(model, train, tuning, seed=0)
        held_out_auroc[with_counts] = auroc(held_out["label"], predict_task(model, held_out, "label"))
    assert held_out_auroc[True] > 0.9 and held_out_auroc[True] > held_out_auroc[False] + 0.1, held_out_auroc


def _vocab(n_codes: int, n_groups: int) -> Vocabulary:
    codes = tuple(f"ICD10CM/A{i:02d}" for i in range(n_codes))
    return Vocabulary(
        codes,
        tuple([1] * n_codes),
        tuple(f"ICD10CM/G{g}" for g in range(n_groups)),
        tuple(i % n_groups for i in range(n_codes)),
    )


def test_checkpoint_round_trip_gives_identical_predictions(tmp_path: Path, config: ClaimTransformerConfig) -> None:
    keras.utils.set_random_seed(5)
    model = PretrainingModel(config)
    vocab = _vocab(config.vocab_size - 2, config.n_groups)
    save_checkpoint(tmp_path / "ckpt", model, config, vocab, extra={"round": 3})
    checkpoint = load_checkpoint(tmp_path / "ckpt")
    assert checkpoint.config == config and checkpoint.vocabulary == vocab and checkpoint.manifest["round"] == 3
    keras.utils.set_random_seed(99)
    restored = PretrainingModel(checkpoint.config)
    assign_weights(restored, checkpoint)
    x, _ = random_batch(np.random.default_rng(6), 4, config.vocab_size, config.n_groups, np.array([1, 2, 3, 30]))
    np.testing.assert_array_equal(model(x)["nvp"], restored(x)["nvp"])
    manifest = json.loads((tmp_path / "ckpt" / "manifest.json").read_text())
    assert set(manifest["files"]) == {"weights.npz", "vocabulary.json", "config.json"}


@pytest.mark.parametrize("victim", ["weights.npz", "vocabulary.json", "config.json"])
def test_checkpoint_with_a_flipped_byte_is_refused(tmp_path: Path, config: ClaimTransformerConfig, victim: str) -> None:
    save_checkpoint(tmp_path / "ckpt", PretrainingModel(config), config, _vocab(config.vocab_size - 2, config.n_groups))
    path = tmp_path / "ckpt" / victim
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=f"{victim}: sha256"):
        load_checkpoint(tmp_path / "ckpt")


def test_checkpoint_for_another_architecture_is_refused(tmp_path: Path, config: ClaimTransformerConfig) -> None:
    save_checkpoint(tmp_path / "ckpt", PretrainingModel(config), config, _vocab(config.vocab_size - 2, config.n_groups))
    other = ClaimTransformerConfig.from_dict({**config.to_dict(), "n_layers": 2})
    with pytest.raises(CheckpointError, match="do not match"):
        assign_weights(PretrainingModel(other), load_checkpoint(tmp_path / "ckpt"))


def test_models_share_the_compiled_head_loss_but_each_computes_with_its_own_weights(
    config: ClaimTransformerConfig,
) -> None:
    """The XLA-fused head + loss is one function for every model (shared_model.model.transformer): a second
    model's compiled loss must read the second model's heads, not those it was first traced with."""
    x, y = random_batch(np.random.default_rng(4), 4, config.vocab_size, config.n_groups, np.array([3, 5, 7, 30]))
    first, second = PretrainingModel(config), PretrainingModel(config)
    second.nvp_head.kernel.assign(first.nvp_head.kernel.numpy() + 1.0)
    second.cp_head.kernel.assign(first.cp_head.kernel.numpy() - 1.0)
    for model in (first, second):
        model.compile(optimizer="sgd")
        compiled = model.evaluate(tf.data.Dataset.from_tensors((x, y)), verbose=0, return_dict=True)["loss"]
        eager = float(model.compute_loss(x, y, model(x, training=False), training=False))
        assert compiled == pytest.approx(eager, rel=1e-5)


def test_sparse_rmsprop_mixes_sparse_and_dense_embedding_gradients() -> None:
    """DP-SGD hands the embedding a dense gradient, plain steps a sparse one: both give Keras' update."""
    rng = np.random.default_rng(0)
    shape = tf.constant([8, 4])
    steps = [
        tf.IndexedSlices(tf.constant(rng.normal(size=(3, 4)), tf.float32), tf.constant([1, 5, 1]), shape),
        tf.IndexedSlices(tf.constant(rng.normal(size=(2, 4)), tf.float32), tf.constant([2, 7]), shape),
        tf.constant(rng.normal(size=(8, 4)), tf.float32),
        tf.IndexedSlices(tf.constant(rng.normal(size=(2, 4)), tf.float32), tf.constant([5, 6]), shape),
    ]
    results = []
    for optimizer in (SparseRMSprop(0.1), keras.optimizers.RMSprop(0.1)):
        table = keras.Variable(np.ones((8, 4), np.float32), name="embeddings")
        for gradient in steps:
            optimizer.apply_gradients([(gradient, table)])
        results.append((table.numpy(), [v.numpy() for v in optimizer.variables if "velocity" in v.path][0]))
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-5)
    np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-5)


def test_a_cohort_without_positives_gets_its_rate_not_a_random_head(config: ClaimTransformerConfig) -> None:
    """The logistic probe cannot fit one class: the head then predicts that class's rate for
    every patient (as the count-feature baselines do), so its Brier score is not a coin flip's."""
    from shared_model.model.transformer import TASK_BINARY, TaskModel, build_encoder
    from shared_model.training.fit import logistic_probe, predict_task

    rng = np.random.default_rng(2)
    arrays, _ = random_batch(rng, 40, config.vocab_size, config.n_groups, rng.integers(1, 6, 40))
    arrays |= {"label": np.zeros(40, np.float32), "subject_id": np.arange(40), "prediction_day": np.zeros(40, int)}
    model = TaskModel(build_encoder(config), TASK_BINARY, 1)
    logistic_probe(model, arrays, arrays, seed=0)
    probabilities = 1 / (1 + np.exp(-predict_task(model, arrays, "label")))
    assert np.allclose(probabilities, 1e-4, rtol=1e-3)


def test_the_heads_log1p_polynomial_is_log1p_to_float32_rounding() -> None:
    """The fused head's softplus uses a polynomial for log1p on [0, 1] (shared_model.model.head_loss)."""
    x = np.linspace(0.0, 1.0, 200_001, dtype=np.float32)
    got = log1p_unit(tf.constant(x)).numpy()
    assert got[0] == 0.0
    assert np.abs(got - np.log1p(x.astype(np.float64))).max() <= 2e-7


def test_bfloat16_computes_near_float32_and_keeps_float32_weights(
    tmp_path: Path, config: ClaimTransformerConfig
) -> None:
    """The same initial weights in both precisions (bfloat16 only changes how the heads' matmuls
    compute); weights, optimizer state and the served logits stay float32; loss and gradients
    differ by bfloat16's rounding and no more; the checkpoint's manifest records the precision."""
    x, y = random_batch(np.random.default_rng(7), 9, config.vocab_size, config.n_groups, np.array([30] * 9))
    results = {}
    for precision in ("float32", "bfloat16"):
        model = new_pretraining_model(config, seed=11, precision=precision)
        assert {v.dtype for v in [*model.weights, *model.optimizer.variables]} <= {"float32", "int64"}
        with tf.GradientTape() as tape:
            loss = model.compute_loss(x=x, y=y, y_pred=model(x, training=True))
        gradients = [tf.convert_to_tensor(g).numpy() for g in tape.gradient(loss, model.trainable_variables)]
        results[precision] = (model.get_weights(), float(loss), gradients, model.predict_step((x,)))
        save_checkpoint(tmp_path / precision, model, config, _vocab(config.vocab_size - 2, config.n_groups))
        assert load_checkpoint(tmp_path / precision).manifest["precision"] == precision
    (w32, loss32, g32, nvp32), (w16, loss16, g16, nvp16) = results["float32"], results["bfloat16"]
    assert all(np.array_equal(a, b) for a, b in zip(w32, w16, strict=True))
    assert nvp32.dtype == nvp16.dtype == tf.float32
    assert loss16 != loss32 and loss16 == pytest.approx(loss32, rel=1e-2)
    for a, b in zip(g32, g16, strict=True):
        assert np.linalg.norm(a - b) <= 0.05 * np.linalg.norm(a) + 1e-6


def test_auto_precision_reads_only_what_the_machine_says_it_has(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16\n\nprocessor\t: 1\nflags\t: fpu\n")
    assert cpu_flags(cpuinfo) == {"fpu", "avx2", "avx512f", "avx512_bf16"}
    assert cpu_flags(tmp_path / "missing") == frozenset()
    assert native_bfloat16(frozenset({"avx512_bf16"}), gpu=False)
    assert native_bfloat16(frozenset({"amx_bf16", "amx_tile"}), gpu=False)
    assert not native_bfloat16(frozenset({"avx2", "avx512f"}), gpu=False)
    assert native_bfloat16(frozenset(), gpu=True)
    assert resolve_precision("float32") == "float32" and resolve_precision("bfloat16") == "bfloat16"
    assert resolve_precision("auto") == ("bfloat16" if native_bfloat16() else "float32")
    with pytest.raises(ValueError, match="precision"):
        resolve_precision("float16")


@pytest.mark.parametrize("every_token", [False, True], ids=["real-tokens", "every-token"])
@pytest.mark.parametrize("pre_layer_norm", [False, True])
def test_a_block_computes_keras_attention_on_every_real_token(pre_layer_norm: bool, every_token: bool) -> None:
    """The block runs only real tokens (layers.TransformerBlock), or every slot for DP-SGD's
    vectorised per-patient gradients: on every real token its output, its attention weights and
    its weights' gradients are those of the plain computation over all slots with Keras'
    MultiHeadAttention, whose weights it uses."""
    d_model, heads, tokens = 16, 2, 9
    block = TransformerBlock(d_model, heads, 12, pre_layer_norm=pre_layer_norm)
    block.build((None, tokens, d_model))
    rng = np.random.default_rng(3)
    x = tf.constant(rng.normal(size=(4, tokens, d_model)).astype(np.float32))
    valid = np.arange(tokens)[None, :] < np.array([[1], [4], [9], [6]])
    mask = tf.constant(np.broadcast_to(valid[:, None, :], (4, tokens, tokens)))
    weight = tf.constant(rng.normal(size=(4, tokens, d_model)).astype(np.float32) * valid[..., None])

    def plain():
        h = block.norm_attention(x) if pre_layer_norm else x
        attended, scores = block.attention(h, h, attention_mask=mask, return_attention_scores=True)
        y = x + attended
        y = y if pre_layer_norm else block.norm_attention(y)
        h = block.norm_ffn(y) if pre_layer_norm else y
        y = y + block.ffn_out(block.ffn_in(h))
        return (y if pre_layer_norm else block.norm_ffn(y)), scores

    results = []
    for compute in (lambda: block(x, mask, every_token=every_token), plain):
        with tf.GradientTape() as tape:
            y, scores = compute()
            loss = tf.reduce_sum(y * weight)
        results.append((y.numpy(), scores.numpy(), tape.gradient(loss, block.trainable_variables)))
    (y, scores, gradients), (y_ref, scores_ref, gradients_ref) = results
    np.testing.assert_allclose(y[valid], y_ref[valid], atol=1e-5)
    assert every_token or np.abs(y[~valid]).max() == 0.0
    query_valid = np.broadcast_to(valid[:, None, :, None], scores.shape)
    np.testing.assert_allclose(scores[query_valid], scores_ref[query_valid], atol=1e-6)
    for got, expected in zip(gradients, gradients_ref, strict=True):
        np.testing.assert_allclose(got, expected, atol=1e-5)
