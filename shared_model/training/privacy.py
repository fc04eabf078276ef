"""Record-level differential privacy for a site's local training: DP-SGD and its accounting.

DP-SGD (Abadi et al. 2016): every patient's gradient is clipped to L2 norm `clip_norm`, the
clipped gradients are summed, Gaussian noise of standard deviation `noise_multiplier * clip_norm`
is added to every coordinate, and the sum is divided by the expected batch size. Batches are
Poisson samples (each patient independently with probability q), the sampling the accountant
assumes; dp-accounting's RDP accountant (default: fast, and an upper bound) or PLD accountant
(tighter, but calibrating noise with it takes minutes) turns (q, noise multiplier, steps) into
epsilon at delta.

No maintained DP-SGD library runs beside TF 2.21 / Keras 3 (tensorflow-privacy 0.9 pins
numpy ~= 1.21 and tensorflow-probability 0.22), so the step is written here, vectorised with
tf.vectorized_map. The code embedding (up to 50,000 x 100) is never materialised per patient:
each patient's gradient with respect to the code vectors it looked up is its embedding gradient
row by row, and its squared norm is sum_{p,q: same code} <g_p, g_q> (a code repeated across a
patient's visits adds up before the norm is taken).

A privately trained patient's loss is its NVP loss plus the mean CP loss over its own visits, so
that each patient's contribution is self-contained (the non-private loss averages CP over all the
batch's visits, which couples patients).
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass

import dp_accounting
import tensorflow as tf
from dp_accounting import pld, rdp

from shared_model.settings import ACCOUNTANTS

log = logging.getLogger(__name__)
NOISE_FLOOR = 0.1  # the least noise multiplier calibrated (the accountants' search starts here)
RDP_ORDERS = tuple([1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64)) + [128, 256, 512])


class PrivacyBudgetExceeded(RuntimeError):
    """A site refuses to train: the next round would spend more epsilon than its budget."""


@dataclass(frozen=True)
class DPSettings:
    """One site's DP-SGD parameters (`expected_batch_size` = q x n divides the noisy sum).

    `embedding_share` > 0 clips in two groups (per-layer clipping, McMahan et al. 2018): the code
    embedding's part of a patient's gradient to clip_norm * sqrt(share), the rest to
    clip_norm * sqrt(1 - share). A patient's whole contribution stays within clip_norm, so the
    noise and the accounting are unchanged; what changes is how the bound is spent. With one flat
    bound the dense layers take most of it and the embedding's rows stay below the noise."""

    clip_norm: float
    noise_multiplier: float
    expected_batch_size: float
    embedding_share: float = 0.0

    def __post_init__(self) -> None:
        if self.clip_norm <= 0 or self.noise_multiplier < 0 or self.expected_batch_size <= 0:
            raise ValueError("DP-SGD needs clip_norm > 0, noise_multiplier >= 0 and expected_batch_size > 0")
        if not 0.0 <= self.embedding_share < 1.0:
            raise ValueError(f"embedding_share must be in [0, 1), got {self.embedding_share}")


# --- the step -------------------------------------------------------------------------------------


class DPSGD:
    """DP-SGD gradients for one PretrainingModel: the per-patient part runs in one XLA-compiled
    function (tf.vectorized_map under TF's graph optimiser with oneDNN crashes intermittently in
    the attention projections; XLA never sees those rewrites, and it is faster). Batches are
    padded to a multiple of BATCH_BUCKET with zero-weight patients, so Poisson batches of varying
    size compile a handful of shapes."""

    BATCH_BUCKET = 32

    def __init__(self, model, settings: DPSettings, seed: int) -> None:
        self.model, self.settings = model, settings
        self.noise = tf.random.Generator.from_seed(seed)
        # the noise's scale and the divisor are variables: another site or round of the same
        # clipping reuses the compiled step (reconfigure) instead of compiling it again
        self._stddev = tf.Variable(settings.noise_multiplier * settings.clip_norm, trainable=False, dtype=tf.float32)
        self._expected_batch = tf.Variable(settings.expected_batch_size, trainable=False, dtype=tf.float32)
        self._clipped_sum = tf.function(self._clipped_sum_of, jit_compile=True)

    def reconfigure(self, settings: DPSettings, seed: int) -> bool:
        """Take `settings` and a fresh noise seed, keeping the compiled step, when the clipping (all
        the compiled step depends on) is the same; False (nothing changed) when it is not."""
        if (settings.clip_norm, settings.embedding_share) != (self.settings.clip_norm, self.settings.embedding_share):
            return False
        self.settings = settings
        self._stddev.assign(settings.noise_multiplier * settings.clip_norm)
        self._expected_batch.assign(settings.expected_batch_size)
        self.noise.reset_from_seed(seed)
        return True

    def gradients(self, inputs: dict, targets: dict) -> tuple[list[tf.Tensor], tf.Tensor, tf.Tensor]:
        """(noisy mean gradient per trainable variable, per-patient losses, per-patient norms
        before clipping). The code embedding's gradient comes back dense: noise goes on every row,
        touched or not, or the set of codes in the batch would leak."""
        count = tf.shape(inputs["codes"])[0]
        padding = tf.where(
            count == 0, self.BATCH_BUCKET, -count % self.BATCH_BUCKET
        )  # an empty Poisson draw: noise only

        def pad(value: tf.Tensor, fill: int) -> tf.Tensor:
            return tf.pad(value, [[0, padding]] + [[0, 0]] * (len(value.shape) - 1), constant_values=fill)

        weight = tf.cast(tf.range(count + padding) < count, tf.float32)
        sums, losses, norms = self._clipped_sum(
            {k: pad(v, 0) for k, v in inputs.items()}, {k: pad(v, -1) for k, v in targets.items()}, weight
        )
        gradients = [
            (total + self.noise.normal(variable.shape, stddev=self._stddev)) / self._expected_batch
            for total, variable in zip(sums, self.model.trainable_variables, strict=True)
        ]
        return gradients, losses[:count], norms[:count]

    def _clipped_sum_of(self, inputs: dict, targets: dict, weight: tf.Tensor):
        model = self.model
        table = code_embedding_table(model)
        dense_variables = [v for v in model.trainable_variables if v is not table]
        losses, grads = tf.vectorized_map(
            lambda sample: _one_patient(model, table, dense_variables, *sample),
            (inputs, targets),
            fallback_to_while_loop=False,
        )
        dense_grads, row_grads = grads[:-1], grads[-1]
        codes = tf.reshape(inputs["codes"], (tf.shape(row_grads)[0], -1))
        row_grads = tf.reshape(row_grads, (tf.shape(codes)[0], tf.shape(codes)[1], -1))
        dense_squared = sum(tf.reduce_sum(tf.reshape(tf.square(g), (tf.shape(g)[0], -1)), axis=1) for g in dense_grads)
        embedding_squared = embedding_squared_norms(row_grads, codes)
        norms = tf.sqrt(dense_squared + embedding_squared)
        dense_scale, embedding_scale = self._clip_scales(dense_squared, embedding_squared, norms)
        sums = {
            id(v): tf.tensordot(dense_scale * weight, g, axes=[[0], [0]])
            for v, g in zip(dense_variables, dense_grads, strict=True)
        }
        sums[id(table)] = tf.math.unsorted_segment_sum(
            tf.reshape(row_grads * (embedding_scale * weight)[:, None, None], (-1, table.shape[1])),
            tf.reshape(codes, (-1,)),
            table.shape[0],
        )
        return [sums[id(v)] for v in model.trainable_variables], losses, norms

    def _clip_scales(self, dense_squared: tf.Tensor, embedding_squared: tf.Tensor, norms: tf.Tensor):
        """Per patient, the factors for its dense and its embedding gradient: one flat bound, or
        one bound per group (see DPSettings.embedding_share)."""
        clip, share = self.settings.clip_norm, self.settings.embedding_share
        if share == 0.0:
            flat = tf.minimum(1.0, clip / tf.maximum(norms, 1e-12))
            return flat, flat
        return (
            tf.minimum(1.0, clip * math.sqrt(1.0 - share) / tf.maximum(tf.sqrt(dense_squared), 1e-12)),
            tf.minimum(1.0, clip * math.sqrt(share) / tf.maximum(tf.sqrt(embedding_squared), 1e-12)),
        )


def _one_patient(model, table, dense_variables, inputs: dict, targets: dict):
    inputs = {name: value[None] for name, value in inputs.items()}
    targets = {name: value[None] for name, value in targets.items()}
    with tf.GradientTape() as tape:
        code_vectors = tf.gather(table, inputs["codes"])
        tape.watch(code_vectors)
        loss = model.patient_loss(inputs, targets, code_vectors)
    gradients = tape.gradient(loss, [*dense_variables, code_vectors])
    gradients = [
        tf.zeros_like(v) if g is None else tf.convert_to_tensor(g)
        for v, g in zip([*dense_variables, code_vectors], gradients, strict=True)
    ]
    gradients[-1] = gradients[-1][0]
    return loss, gradients


def embedding_squared_norms(row_grads: tf.Tensor, codes: tf.Tensor) -> tf.Tensor:
    """Per patient, the squared norm of its embedding-table gradient from the gradients of the
    code vectors it looked up (B, P, d) and their codes (B, P; 0 = padding)."""
    gram = tf.einsum("bpd,bqd->bpq", row_grads, row_grads)
    same = tf.logical_and(tf.equal(codes[:, :, None], codes[:, None, :]), (codes > 0)[:, :, None])
    return tf.reduce_sum(gram * tf.cast(same, gram.dtype), axis=[1, 2])


def code_embedding_table(model) -> tf.Variable:
    return model.encoder.get_layer("visit_embedding").code_embedding.embeddings


# --- accounting -----------------------------------------------------------------------------------


def default_delta(n_patients: int) -> float:
    """delta = 1 / n^1.1: below 1/n, the probability of one patient's record being released in the
    clear must be smaller than any single patient's share of the data."""
    return float(n_patients) ** -1.1


def _accountant(kind: str):
    if kind == "pld":
        return pld.PLDAccountant()
    if kind == "rdp":
        return rdp.RdpAccountant(list(RDP_ORDERS))
    raise ValueError(f"accountant must be one of {ACCOUNTANTS}, got {kind!r}")


def _event(sampling_rate: float, noise_multiplier: float) -> dp_accounting.DpEvent:
    gaussian = dp_accounting.GaussianDpEvent(noise_multiplier)
    return gaussian if sampling_rate >= 1.0 else dp_accounting.PoissonSampledDpEvent(sampling_rate, gaussian)


def epsilon_spent(
    sampling_rate: float, noise_multiplier: float, steps: int, delta: float, accountant: str = "rdp"
) -> float:
    """Epsilon at `delta` after `steps` Poisson-sampled Gaussian steps (inf without noise)."""
    if steps <= 0:
        return 0.0
    if not noise_multiplier > 0:  # no noise, or none that means anything (NaN): no guarantee
        return math.inf
    ledger = _accountant(accountant)
    ledger.compose(_event(sampling_rate, noise_multiplier), int(steps))
    return float(ledger.get_epsilon(delta))


def epsilon_of_rounds(mechanisms: list[tuple[float, float, int]], delta: float) -> float:
    """Epsilon at `delta` of differently parameterised Poisson-sampled Gaussian steps composed,
    each given as (sampling rate, noise multiplier, steps): a site's rounds over several runs.
    RDP accountant (an upper bound; it composes heterogeneous steps exactly as they ran)."""
    mechanisms = [m for m in mechanisms if m[2] > 0]
    if not mechanisms:
        return 0.0
    if not all(noise > 0 for _, noise, _ in mechanisms):
        return math.inf
    ledger = _accountant("rdp")
    for sampling_rate, noise, steps in mechanisms:
        ledger.compose(_event(sampling_rate, noise), int(steps))
    return float(ledger.get_epsilon(delta))


def noise_for_budget(
    target_epsilon: float, sampling_rate: float, steps: int, delta: float, accountant: str = "rdp"
) -> float:
    """The smallest noise multiplier (at least NOISE_FLOOR) whose `steps` spend at most
    `target_epsilon` at `delta`. Targets the floor already meets (epsilon in the hundreds and up:
    no meaningful guarantee) get the floor and spend less than asked. A target, rate or delta out
    of range (NaN and inf included) is refused: no target ever means "no noise"."""
    if not (0 < target_epsilon < math.inf and 0 < sampling_rate <= 1 and 0 < delta < 1 and steps >= 1):
        raise ValueError("DP-SGD calibration needs epsilon > 0 finite, a sampling rate in (0, 1], delta in (0, 1)")
    if epsilon_spent(sampling_rate, NOISE_FLOOR, steps, delta, accountant) <= target_epsilon:
        return NOISE_FLOOR
    noise = dp_accounting.calibrate_dp_mechanism(
        lambda: _accountant(accountant),
        lambda z: dp_accounting.SelfComposedDpEvent(_event(sampling_rate, z), int(steps)),
        target_epsilon,
        delta,
        dp_accounting.LowerEndpointAndGuess(0.1, 1.0),
        tol=1e-3,
    )
    return float(noise)


@dataclass(frozen=True)
class SitePrivacyPlan:
    """What a site fixes before its first private round: sampling rate, steps per round, noise,
    delta; and its budget, checked before every round."""

    n_patients: int
    sampling_rate: float
    steps_per_round: int
    noise_multiplier: float
    delta: float
    budget: float
    accountant: str = "rdp"

    def epsilon_after(self, rounds: int) -> float:
        return epsilon_spent(
            self.sampling_rate, self.noise_multiplier, rounds * self.steps_per_round, self.delta, self.accountant
        )

    def check_round(self, rounds_done: int) -> float:
        """Epsilon after one more round; raises PrivacyBudgetExceeded if it is over the budget."""
        after = self.epsilon_after(rounds_done + 1)
        if not after <= self.budget * (1 + 1e-6):
            raise PrivacyBudgetExceeded(
                f"round {rounds_done + 1} would bring epsilon to {after:.3f} at delta {self.delta:.2g}, over this "
                f"site's budget of {self.budget:g}: refusing to train"
            )
        return after


@functools.lru_cache(maxsize=8)  # the same inputs every round: calibrate once per process
def plan_site_privacy(
    n_patients: int,
    batch_size: int,
    local_epochs: int,
    planned_rounds: int,
    target_epsilon: float,
    *,
    delta: float = 0.0,
    accountant: str = "rdp",
) -> SitePrivacyPlan:
    """Calibrate the noise so that `planned_rounds` rounds of `local_epochs` epochs spend exactly
    `target_epsilon` (expected batch `batch_size`), which is also the run's budget (a site's own
    lifetime budget is its ledger's: client.ledger)."""
    sampling_rate = min(1.0, batch_size / max(n_patients, 1))
    steps_per_round = local_epochs * math.ceil(1 / sampling_rate)
    delta = delta or default_delta(n_patients)
    noise = noise_for_budget(target_epsilon, sampling_rate, planned_rounds * steps_per_round, delta, accountant)
    plan = SitePrivacyPlan(n_patients, sampling_rate, steps_per_round, noise, delta, target_epsilon, accountant)
    log.info(
        "DP-SGD: n=%d, q=%.4f, %d steps/round, noise multiplier %.3f for epsilon %.3g at delta %.2g over %d rounds",
        n_patients,
        sampling_rate,
        steps_per_round,
        noise,
        target_epsilon,
        delta,
        planned_rounds,
    )
    return plan
