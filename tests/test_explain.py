"""The attention playground's numbers: extracted weights are the transformer's attention, and
code attributions are gradient x input on the code embeddings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from shared_model.contract.checkpoint import KIND_TASK, load_checkpoint, save_checkpoint
from shared_model.evaluation.explain import ExplainedModel, explain, restore_model
from shared_model.model.config import ClaimTransformerConfig
from shared_model.model.transformer import PretrainingModel, TaskModel, build_encoder, encoder_forward
from shared_model.tensors.vocabulary import Vocabulary
from tests.test_model import V, random_batch


@pytest.fixture(scope="module")
def two_layer() -> tuple[ClaimTransformerConfig, PretrainingModel, dict]:
    config = ClaimTransformerConfig(
        vocab_size=50, n_groups=9, d_model=16, ffn_dim=16, patient_dim=16, n_heads=2, n_layers=2
    )
    model = PretrainingModel(config)
    batch, _ = random_batch(np.random.default_rng(5), 4, config.vocab_size, config.n_groups, np.array([1, 4, 12, 30]))
    return config, model, batch


def manual_attention(block, x: np.ndarray, key_valid: np.ndarray) -> np.ndarray:
    """softmax(Q K^T / sqrt(d_k)) from the layer's own query/key projections, padded keys masked."""
    mha = block.attention
    wq, bq = (np.asarray(w) for w in mha._query_dense.weights)
    wk, bk = (np.asarray(w) for w in mha._key_dense.weights)
    q = np.einsum("btd,dhk->bthk", x, wq) + bq
    k = np.einsum("btd,dhk->bthk", x, wk) + bk
    logits = np.einsum("bqhk,bthk->bhqt", q, k) / np.sqrt(q.shape[-1])
    logits = np.where(key_valid[:, None, None, :], logits, -np.inf)
    logits -= logits.max(-1, keepdims=True)
    weights = np.exp(logits)
    return weights / weights.sum(-1, keepdims=True)


def test_extracted_weights_are_the_attention(two_layer) -> None:
    config, model, batch = two_layer
    explained = ExplainedModel(config, model.encoder, model.nvp_head, "next_visit")
    result = explain(explained, batch)
    encoder = model.encoder
    x = np.concatenate(
        [
            np.asarray(encoder.get_layer("demographic_token")(batch["demo"])),
            np.asarray(
                encoder.get_layer("visit_embedding")(
                    batch["codes"], batch["visit_type"], batch["date_index"], batch["days_before"], batch["age_days"]
                )
            ),
        ],
        axis=1,
    )
    key_valid = np.concatenate([np.ones((4, 1), bool), batch["visit_type"] > 0], axis=1)
    mask = key_valid[:, None, :] & np.ones((4, V + 1, 1), bool)
    for layer in range(config.n_layers):
        block = encoder.get_layer(f"block_{layer}")
        expected = manual_attention(block, x, key_valid)
        real_queries = np.broadcast_to(key_valid[:, None, :, None], expected.shape)  # a padded query means nothing
        np.testing.assert_allclose(result.attention[layer][real_queries], expected[real_queries], atol=1e-5)
        assert np.abs(result.attention[layer] * ~key_valid[:, None, None, :]).max() == 0.0
        np.testing.assert_allclose(result.attention[layer].sum(-1), 1.0, atol=1e-5)
        x = np.asarray(block(x, mask)[0])
    # a patient with one real visit: the demographic token and that visit share all the weight
    assert np.count_nonzero(result.attention[0][0, 0, 0]) == 2


def test_code_attribution_is_gradient_times_input(two_layer) -> None:
    config, model, batch = two_layer
    explained = ExplainedModel(config, model.encoder, model.nvp_head, "next_visit")
    result = explain(explained, batch, output_index=3)
    assert np.all(result.code_attribution[batch["codes"] == 0] == 0.0)
    assert np.abs(result.code_attribution).max() > 0

    inputs = {k: tf.convert_to_tensor(batch[k].astype(np.int32)) for k in batch}
    ones = tf.ones(batch["codes"].shape, tf.float32)

    def logit_and_jvp(tangent: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The logit and its forward-mode derivative along `tangent` in gate space: exact, and
        computed independently of the reverse-mode tape `explain` uses (float32 finite differences
        are not accurate enough through two layer norms)."""
        with tf.autodiff.ForwardAccumulator(ones, tf.constant(tangent, tf.float32)) as accumulator:
            out = encoder_forward(model.encoder.get_layer, config, inputs, code_gate=ones)
            logit = model.nvp_head(out["patient"])[:, 3]
        return logit.numpy(), accumulator.jvp(logit).numpy()

    slots = np.argwhere(batch["codes"] > 0)
    for patient, visit, slot in slots[np.random.default_rng(0).choice(len(slots), 5, replace=False)]:
        tangent = np.zeros(batch["codes"].shape)
        tangent[patient, visit, slot] = 1.0
        logit, derivative = logit_and_jvp(tangent)
        np.testing.assert_allclose(logit, result.logit, atol=1e-5)
        assert result.code_attribution[patient, visit, slot] == pytest.approx(derivative[patient], rel=1e-3, abs=1e-7)
        assert np.all(np.delete(derivative, patient) == 0.0)  # a patient's codes move its own logit only
    # summed over a patient's codes: the derivative of scaling all its codes together
    _, along_all = logit_and_jvp(np.ones(batch["codes"].shape))
    np.testing.assert_allclose(result.code_attribution.sum(axis=(1, 2)), along_all, rtol=1e-3, atol=1e-6)


def test_pretraining_and_task_checkpoints_are_explained(tmp_path: Path) -> None:
    config = ClaimTransformerConfig(vocab_size=40, n_groups=6, d_model=16, ffn_dim=16, patient_dim=16)
    vocabulary = Vocabulary(
        tuple(f"ICD10CM/A{i:02d}" for i in range(38)),
        tuple([20] * 38),
        tuple(f"ICD10CM/G{i}" for i in range(6)),
        tuple(i % 6 for i in range(38)),
    )
    batch, _ = random_batch(np.random.default_rng(2), 3, config.vocab_size, config.n_groups, np.array([3, 8, 30]))
    save_checkpoint(tmp_path / "pre", PretrainingModel(config), config, vocabulary)
    task_model = TaskModel(build_encoder(config), "binary", 1, code_counts=True)
    count_weights = np.random.default_rng(4).normal(size=(config.vocab_size, 1)).astype(np.float32)
    task_model.count_head.set_weights([count_weights])
    save_checkpoint(
        tmp_path / "task",
        task_model,
        config,
        vocabulary,
        kind=KIND_TASK,
        extra={"task": "asthma", "task_kind": "binary", "n_outputs": 1, "code_counts": True},
    )
    pretrained = restore_model(load_checkpoint(tmp_path / "pre"))
    assert pretrained.task == "next_visit"
    assert explain(pretrained, batch).output_index.max() < config.n_groups
    task = restore_model(load_checkpoint(tmp_path / "task"))
    result = explain(task, batch)
    assert task.task == "asthma" and (result.output_index == 0).all()
    np.testing.assert_allclose(result.logit, np.asarray(task_model(batch))[:, 0], atol=1e-5)
    # with the patient-vector head silenced, each occurrence of a code is credited its count
    # head weight over (1 + its count): the derivative of w log(1 + count) along each occurrence
    task.head.set_weights([np.zeros_like(w) for w in task.head.get_weights()])
    attribution = explain(task, batch).code_attribution
    codes = batch["codes"]
    occurrences = np.stack([np.bincount(row.ravel(), minlength=config.vocab_size) for row in codes])
    counts = np.take_along_axis(occurrences, codes.reshape(len(codes), -1), 1).reshape(codes.shape)
    np.testing.assert_allclose(attribution, np.where(codes > 0, count_weights[codes, 0] / (1 + counts), 0), atol=1e-5)


def test_attention_and_embed_commands_write_their_outputs(fed_sites: list[Path], tmp_path: Path) -> None:
    import base64

    import pandas as pd
    from typer.testing import CliRunner

    from shared_model.data import read_meds
    from shared_model.tensors.tasks import training_vocabulary
    from simulations.cli.app import app

    vocabulary = training_vocabulary([read_meds(p) for p in fed_sites])
    config = ClaimTransformerConfig(
        vocab_size=vocabulary.size, n_groups=vocabulary.n_groups, d_model=16, patient_dim=16, ffn_dim=16
    )
    save_checkpoint(tmp_path / "ckpt", PretrainingModel(config), config, vocabulary)
    runner = CliRunner()
    result = runner.invoke(
        app,
        [
            "attention",
            "--checkpoint",
            str(tmp_path / "ckpt"),
            "--data",
            str(fed_sites[0]),
            "--out",
            str(tmp_path / "att"),
            "--sample",
            "6",
            "--render",
            "2",
        ],
    )
    assert result.exit_code == 0, result.output
    pngs = sorted((tmp_path / "att").glob("*.png"))
    assert len(pngs) == 4 and len(pd.read_csv(tmp_path / "att" / "patients.csv")) == 6
    page = (tmp_path / "att" / "attention.html").read_text()
    for png in pngs:  # every picture is embedded, so the page stands alone
        assert base64.b64encode(png.read_bytes()).decode() in page
    patient = int(pd.read_csv(tmp_path / "att" / "patients.csv")["patient"].iloc[0])
    result = runner.invoke(
        app,
        [
            "attention",
            "--checkpoint",
            str(tmp_path / "ckpt"),
            "--data",
            str(fed_sites[0]),
            "--out",
            str(tmp_path / "one"),
            "--patient",
            str(patient),
            "--group",
            vocabulary.groups[0],
        ],
    )
    assert result.exit_code == 0 and (tmp_path / "one" / f"codes-{patient}.png").exists()
    result = runner.invoke(
        app,
        [
            "attention",
            "--checkpoint",
            str(tmp_path / "ckpt"),
            "--data",
            str(fed_sites[0]),
            "--out",
            str(tmp_path / "bad"),
            "--patient",
            "123",
        ],
    )
    assert result.exit_code == 2 and "subject_id" in result.output and not (tmp_path / "bad").exists()

    result = runner.invoke(
        app,
        [
            "embed",
            "--checkpoint",
            str(tmp_path / "ckpt"),
            "--data",
            str(fed_sites[0]),
            "--data",
            str(fed_sites[1]),
            "--label",
            "asthma",
            "--out",
            str(tmp_path / "emb"),
        ],
    )
    assert result.exit_code == 0, result.output
    table = pd.read_parquet(tmp_path / "emb" / "embeddings.parquet")
    assert set(table["site"]) == {fed_sites[0].name, fed_sites[1].name}
    assert table["subject_id"].is_unique and table.filter(like="e0").shape[1] == 16
    assert set(table["subject_id"]) <= set(np.concatenate([read_meds(p).subject_ids for p in fed_sites[:2]]))
    assert table["asthma"].sum() > 0 and (tmp_path / "emb" / "projection.png").stat().st_size > 10_000
