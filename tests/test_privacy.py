"""DP-SGD (per-patient clipping, Gaussian noise) and its accounting, checked against independent
computations: a per-patient gradient loop, the Gaussian mechanism's exact privacy curve."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf
from scipy.optimize import brentq
from scipy.stats import kurtosis, norm

from shared_model.model.config import ClaimTransformerConfig
from shared_model.model.transformer import PretrainingModel
from shared_model.training.privacy import (
    DPSGD,
    NOISE_FLOOR,
    DPSettings,
    PrivacyBudgetExceeded,
    code_embedding_table,
    epsilon_spent,
    noise_for_budget,
    plan_site_privacy,
)
from tests.test_model import random_batch

N_PATIENTS = 6


def model_and_batch(precision: str = "float32"):
    config = ClaimTransformerConfig(vocab_size=40, n_groups=12, d_model=16, ffn_dim=16, patient_dim=16, n_heads=2)
    tf.keras.utils.set_random_seed(3)
    model = PretrainingModel(config, precision)
    rng = np.random.default_rng(0)
    inputs, targets = random_batch(rng, N_PATIENTS, config.vocab_size, config.n_groups, np.array([30, 12, 5, 1, 20, 8]))
    inputs = {k: tf.constant(v) for k, v in inputs.items()}
    targets = {k: tf.constant(v) for k, v in targets.items()}
    return model, inputs, targets


@pytest.fixture(scope="module")
def setup():
    return model_and_batch()


def per_patient_reference(model, inputs, targets) -> list[list[np.ndarray]]:
    """Each patient's full gradient (embedding table included, dense), one patient at a time."""
    out = []
    for i in range(N_PATIENTS):
        one_in = {k: v[i : i + 1] for k, v in inputs.items()}
        one_target = {k: v[i : i + 1] for k, v in targets.items()}
        with tf.GradientTape() as tape:
            loss = model.patient_loss(one_in, one_target)
        grads = tape.gradient(loss, model.trainable_variables)
        out.append(
            [
                tf.convert_to_tensor(g).numpy() if g is not None else np.zeros(v.shape)
                for g, v in zip(grads, model.trainable_variables, strict=True)
            ]
        )
    return out


def _norm(grads: list[np.ndarray]) -> float:
    return float(np.sqrt(sum(np.sum(g.astype(np.float64) ** 2) for g in grads)))


def test_codes_repeat_across_visits_in_the_test_batch(setup) -> None:
    _, inputs, _ = setup  # otherwise the duplicate-aware embedding norm would go untested
    codes = inputs["codes"].numpy().reshape(N_PATIENTS, -1)
    assert any(len(set(row[row > 0])) < np.count_nonzero(row) for row in codes)


def test_per_patient_norms_and_clipping_match_a_per_patient_loop(setup) -> None:
    model, inputs, targets = setup
    reference = per_patient_reference(model, inputs, targets)
    norms = np.array([_norm(g) for g in reference])
    clip = float(np.median(norms))  # half the patients are clipped, half are not
    settings = DPSettings(clip_norm=clip, noise_multiplier=0.0, expected_batch_size=4.0)
    gradients, _, got_norms = DPSGD(model, settings, seed=0).gradients(inputs, targets)
    np.testing.assert_allclose(got_norms.numpy(), norms, rtol=1e-4)
    expected = [
        sum(min(1.0, clip / n) * g[j] for g, n in zip(reference, norms, strict=True)) / 4.0
        for j in range(len(model.trainable_variables))
    ]
    for got, want in zip(gradients, expected, strict=True):
        np.testing.assert_allclose(got.numpy(), want, atol=1e-6)


def test_group_clipping_bounds_the_embedding_and_the_rest_separately(setup) -> None:
    model, inputs, targets = setup
    reference = per_patient_reference(model, inputs, targets)
    table_index = [v is code_embedding_table(model) for v in model.trainable_variables].index(True)
    embedding = np.array([np.linalg.norm(g[table_index]) for g in reference])
    dense = np.array([_norm([x for j, x in enumerate(g) if j != table_index]) for g in reference])
    clip, share = float(np.median(np.hypot(embedding, dense))), 0.3
    bounds = clip * math.sqrt(share), clip * math.sqrt(1 - share)
    assert (embedding > bounds[0]).any() and (embedding < bounds[0]).any()  # the bounds bite for some patients only
    gradients, _, _ = DPSGD(model, DPSettings(clip, 0.0, 4.0, embedding_share=share), seed=0).gradients(inputs, targets)
    factors = [(min(1.0, bounds[0] / e), min(1.0, bounds[1] / d)) for e, d in zip(embedding, dense, strict=True)]
    for j, got in enumerate(gradients):
        want = sum(f[0 if j == table_index else 1] * g[j] for g, f in zip(reference, factors, strict=True)) / 4.0
        np.testing.assert_allclose(got.numpy(), want, atol=1e-6)
    one_at_a_time = DPSGD(model, DPSettings(clip, 0.0, 1.0, embedding_share=share), seed=0)  # compiled once
    for i in range(N_PATIENTS):  # a patient's whole contribution stays within the one bound
        alone, _, _ = one_at_a_time.gradients(
            {k: v[i : i + 1] for k, v in inputs.items()}, {k: v[i : i + 1] for k, v in targets.items()}
        )
        assert _norm([g.numpy() for g in alone]) <= clip * (1 + 1e-5)


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_every_patients_contribution_is_clipped_to_the_bound(setup, precision: str) -> None:
    """In either precision: whatever the model computes in, the gradients DP-SGD clips, their
    norms and the noise are float32, and every clipped contribution is within the bound (to
    float32 rounding of the scaling)."""
    model, inputs, targets = setup if precision == "float32" else model_and_batch(precision)
    clip = 1e-3  # far below every patient's gradient norm
    step = DPSGD(model, DPSettings(clip, 0.0, 1.0), seed=0)
    for i in range(N_PATIENTS):
        one_in = {k: v[i : i + 1] for k, v in inputs.items()}
        one_target = {k: v[i : i + 1] for k, v in targets.items()}
        gradients, _, norms = step.gradients(one_in, one_target)
        assert norms.dtype == tf.float32 and {g.dtype for g in gradients} == {tf.float32}
        assert float(norms[0]) > clip
        assert _norm([g.numpy() for g in gradients]) <= clip * (1 + 1e-6)
        assert _norm([g.numpy() for g in gradients]) == pytest.approx(clip, rel=1e-4)


def test_a_reconfigured_step_is_a_fresh_step_with_the_new_settings(setup) -> None:
    """Another site (or round) of the same clipping reuses the compiled step with its own noise,
    batch and seed: the gradients are those of a step built for them."""
    model, inputs, targets = setup
    step = DPSGD(model, DPSettings(0.5, 1.0, 4.0, embedding_share=0.5), seed=1)
    step.gradients(inputs, targets)
    assert step.reconfigure(DPSettings(0.5, 2.0, 8.0, embedding_share=0.5), seed=7)
    fresh = DPSGD(model, DPSettings(0.5, 2.0, 8.0, embedding_share=0.5), seed=7)
    for got, expected in zip(step.gradients(inputs, targets)[0], fresh.gradients(inputs, targets)[0], strict=True):
        np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-5, atol=1e-7)
    assert not step.reconfigure(DPSettings(0.25, 2.0, 8.0, embedding_share=0.5), seed=7)  # other clipping: a new step


def test_noise_has_the_configured_scale_on_every_coordinate(setup) -> None:
    model, inputs, targets = setup
    clip, multiplier, batch = 0.5, 1.3, 4.0
    clean, _, _ = DPSGD(model, DPSettings(clip, 0.0, batch), seed=1).gradients(inputs, targets)
    noisy, _, _ = DPSGD(model, DPSettings(clip, multiplier, batch), seed=1).gradients(inputs, targets)
    residual = np.concatenate([(n - c).numpy().ravel() for n, c in zip(noisy, clean, strict=True)]).astype(np.float64)
    expected = multiplier * clip / batch
    assert residual.size > 5_000
    tolerance = 4 * expected / math.sqrt(2 * residual.size)  # 4 standard errors of a sample std
    assert abs(residual.std() - expected) < tolerance
    assert abs(residual.mean()) < 4 * expected / math.sqrt(residual.size)
    assert abs(kurtosis(residual)) < 0.2  # Gaussian, not uniform (-1.2) or Laplace (3)
    table = code_embedding_table(model)
    untouched = np.setdiff1d(np.arange(table.shape[0]), inputs["codes"].numpy())
    index = [v is table for v in model.trainable_variables].index(True)
    assert np.all((noisy[index] - clean[index]).numpy()[untouched] != 0)  # untouched rows are noised too


def gaussian_mechanism_epsilon(mu: float, delta: float) -> float:
    """Exact epsilon of a Gaussian mechanism with sensitivity / sigma = mu (Balle & Wang 2018,
    Theorem 8): delta(eps) = Phi(-eps/mu + mu/2) - e^eps Phi(-eps/mu - mu/2)."""

    def excess(eps: float) -> float:
        return norm.cdf(-eps / mu + mu / 2) - math.exp(eps) * norm.cdf(-eps / mu - mu / 2) - delta

    return brentq(excess, 0.0, 100.0)


@pytest.mark.parametrize(("sigma", "steps"), [(4.0, 10), (1.0, 1), (10.0, 300)])
def test_accountant_matches_the_exact_gaussian_mechanism(sigma: float, steps: int) -> None:
    # without sampling, `steps` Gaussian releases compose to one with mu = sqrt(steps) / sigma
    delta = 1e-5
    exact = gaussian_mechanism_epsilon(math.sqrt(steps) / sigma, delta)
    assert epsilon_spent(1.0, sigma, steps, delta, "pld") == pytest.approx(exact, rel=0.01)
    assert epsilon_spent(1.0, sigma, steps, delta, "rdp") >= exact  # RDP is an upper bound


def test_sampling_amplifies_and_noise_is_calibrated_to_the_target() -> None:
    delta = 1e-6
    assert (
        epsilon_spent(0.01, 1.0, 500, delta) < epsilon_spent(0.1, 1.0, 500, delta) < epsilon_spent(1.0, 1.0, 500, delta)
    )
    for target in (1.0, 8.0):
        sigma = noise_for_budget(target, 0.01, 2_000, delta)
        assert epsilon_spent(0.01, sigma, 2_000, delta) == pytest.approx(target, rel=0.01)
    assert epsilon_spent(0.01, 0.0, 10, delta) == math.inf
    for target in (math.inf, math.nan, 0.0, -1.0):  # no target means "no noise"
        with pytest.raises(ValueError):
            noise_for_budget(target, 0.01, 10, delta)


def test_a_site_refuses_to_train_past_its_budget() -> None:
    plan = plan_site_privacy(5_000, 100, local_epochs=1, planned_rounds=3, target_epsilon=2.0)
    assert plan.delta == pytest.approx(5_000**-1.1) and plan.steps_per_round == 50
    spent = [plan.check_round(done) for done in range(3)]
    assert spent[0] < spent[1] < spent[2] == pytest.approx(2.0, rel=0.01)
    with pytest.raises(PrivacyBudgetExceeded, match="budget of 2"):
        plan.check_round(3)


def test_an_empty_poisson_batch_is_pure_noise(setup) -> None:
    model, inputs, targets = setup
    empty_in = {k: v[:0] for k, v in inputs.items()}
    empty_target = {k: v[:0] for k, v in targets.items()}
    gradients, losses, _ = DPSGD(model, DPSettings(1.0, 2.0, 10.0), seed=0).gradients(empty_in, empty_target)
    assert losses.shape[0] == 0
    values = np.concatenate([g.numpy().ravel() for g in gradients])
    assert values.std() == pytest.approx(2.0 * 1.0 / 10.0, rel=0.05)


def test_a_target_beyond_the_noise_floor_gets_the_floor() -> None:
    assert noise_for_budget(1e4, 0.02, 200, 1e-5) == NOISE_FLOOR
    assert epsilon_spent(0.02, NOISE_FLOOR, 200, 1e-5) < 1e4
