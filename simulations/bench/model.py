"""Model, tensorisation, attention, scale and federated-round figures for `claimpt bench`, at the
paper's sizes (docs/performance.md)."""

from __future__ import annotations

import importlib.util
import json
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from shared_model.data import DataValidationError
from shared_model.tensors.tensorize import FIELDS, Layout, field_shape
from simulations.bench.timing import Rate, measure_rate

log = logging.getLogger(__name__)
PAPER_VOCAB, PAPER_GROUPS, PAPER_BATCH = 49_836, 3_357, 100
MODEL_PATIENTS = 10_000  # per timed epoch, for this project's step and the original's alike


def paper_shaped_arrays(n: int, seed: int, layout: Layout = Layout()) -> dict[str, np.ndarray]:
    """Random samples of the paper's shape: 1-30 real visits (uniform), 1-10 codes per visit drawn
    Zipf-like from 49,836 codes, 1-4 target groups per visit from 3,357."""
    rng = np.random.default_rng(seed)
    v, c = layout.max_visits, layout.max_codes
    real = rng.integers(1, v + 1, n)
    used = np.arange(v)[None, :] >= (v - real)[:, None]
    n_codes = rng.integers(1, c + 1, (n, v))
    codes = np.minimum((rng.pareto(1.2, (n, v, c)) * 50).astype(np.int64) + 2, PAPER_VOCAB - 1)
    codes = np.where((np.arange(c)[None, None, :] < n_codes[..., None]) & used[..., None], np.sort(codes, -1), 0)
    groups = np.full((n, v, layout.max_visit_groups), -1)
    groups[..., :4] = np.sort(rng.choice(PAPER_GROUPS, (n, v, 4)), -1)
    groups[..., 1:4] = np.where(rng.random((n, v, 3)) < 0.5, groups[..., 1:4], -1)
    groups = np.where(used[..., None], groups, -1)
    arrays = {
        "codes": codes,
        "visit_type": np.where(used, rng.integers(1, 6, (n, v)), 0),
        "date_index": np.where(used, rng.integers(1, 367, (n, v)), 0),
        "days_before": np.where(used, rng.integers(1, 3000, (n, v)), 0),
        "age_days": np.where(used, rng.integers(0, 6500, (n, v)), 0),
        "demo": np.stack([rng.integers(0, 7, n), rng.integers(0, 3, n)], 1),
        "visit_groups": groups,
        "target_groups": np.full((n, layout.max_target_groups), -1),
        "label": np.zeros(n),
        "subject_id": np.arange(n),
        "prediction_day": np.zeros(n),
    }
    arrays["target_groups"][:, :3] = np.sort(rng.choice(PAPER_GROUPS, (n, 3)), -1)
    return {k: v.astype(FIELDS[k][0]).reshape((n, *field_shape(k, layout))) for k, v in arrays.items()}


def bench_precisions(precision: str) -> tuple[str, ...]:
    """The precisions `claimpt bench --precision` times: float32 always (the figure every machine
    can be compared on), and bfloat16 beside it where `precision` resolves to it (`auto` on a
    machine that has it natively, or asked for)."""
    from shared_model.model.precision import resolve_precision

    return ("float32",) if resolve_precision(precision) == "float32" else ("float32", "bfloat16")


def model_section(repeats: int, seed: int, precisions: tuple[str, ...], patients: int = MODEL_PATIENTS) -> dict:
    """Training and inference at the paper's sizes in each of `precisions`, and where each
    precision's step spends its milliseconds (simulations.bench.profile). Training is also timed,
    side by side, with the plain step the fast one replaced (stock Keras RMSprop densifying the
    embedding gradient, NVP and CP heads and losses as separate TF ops differentiated by
    autodiff, float32): same loss, same updates, `pretrain_speedup`. Both share the encoder,
    including its real-codes-only lookup."""
    import keras
    from keras import ops

    from shared_model.model.config import ClaimTransformerConfig
    from shared_model.model.objectives import multilabel_bce_from_indices
    from shared_model.model.transformer import PretrainingModel
    from shared_model.tensors.pipeline import make_dataset
    from shared_model.training.fit import PRETRAIN_TARGETS, STEPS_PER_EXECUTION, new_pretraining_model, seed_everything
    from simulations.bench.profile import profile_step

    class PlainStep(PretrainingModel):
        def next_visit_loss(self, patients, target_groups):
            return ops.mean(multilabel_bce_from_indices(self.nvp_head(patients), target_groups))

        def category_loss(self, visits, valid, visit_groups):
            per_visit = multilabel_bce_from_indices(self.cp_head(visits[valid]), visit_groups[valid])
            return ops.sum(per_visit) / ops.maximum(ops.cast(ops.shape(per_visit)[0], per_visit.dtype), 1.0)

    def plain_model() -> PretrainingModel:
        seed_everything(seed)
        model = PlainStep(config)
        model.compile(optimizer=keras.optimizers.RMSprop(1e-3), steps_per_execution=STEPS_PER_EXECUTION)
        return model

    config = ClaimTransformerConfig(vocab_size=PAPER_VOCAB, n_groups=PAPER_GROUPS)
    arrays = paper_shaped_arrays(patients, seed)
    train = make_dataset([arrays], target=PRETRAIN_TARGETS, batch_size=PAPER_BATCH, shuffle=True, seed=seed)
    predict = make_dataset([arrays], target="target_groups", batch_size=PAPER_BATCH, shuffle=False)
    log.info("bench: paper-sized model, %d patients per timed repeat, %s", patients, " and ".join(precisions))

    def training_rate(model) -> Rate:
        def fit_epoch() -> int:
            model.fit(train, epochs=1, verbose=0, shuffle=False)
            return patients

        return measure_rate(fit_epoch, repeats, "patients/s")

    def predict_rate(model) -> Rate:
        def predict_all() -> int:
            model.predict(predict, verbose=0)
            return patients

        return measure_rate(predict_all, repeats, "patients/s")

    plain = training_rate(plain_model())
    by_precision: dict[str, dict[str, Any]] = {}
    for precision in precisions:
        model = new_pretraining_model(config, seed, precision=precision)
        by_precision[precision] = {
            "pretrain_patients_per_s": training_rate(model).__dict__,
            "predict_patients_per_s": predict_rate(model).__dict__,
            "step_profile_ms": profile_step(model, train),
        }
        log.info("bench: %s: %s", precision, by_precision[precision])
    float32 = by_precision["float32"]
    return {
        "pretrain_patients_per_s": float32["pretrain_patients_per_s"],
        "pretrain_plain_step_patients_per_s": plain.__dict__,
        "pretrain_speedup": round(float32["pretrain_patients_per_s"]["median"] / plain.median, 3),
        "predict_patients_per_s": float32["predict_patients_per_s"],
        "precisions": by_precision,
        "model_parameters": int(model.count_params()),
        "batch_size": PAPER_BATCH,
    }


def check_original_checkout(checkout: Path) -> None:
    """Before any timing: the path must hold the original's model and tf-keras must be installed."""
    if not (checkout / "pretraining" / "cpt.py").is_file():
        raise DataValidationError(
            checkout,
            "a checkout of the original Claim-PT holding pretraining/cpt.py "
            "(git clone https://github.com/2g-XzenG/Claim-PT)",
        )
    if importlib.util.find_spec("tf_keras") is None:
        raise DataValidationError(checkout, "tf-keras installed to run it: pip install -e '.[original]'")


def original_section(checkout: Path, patients: int, repeats: int, seed: int) -> dict[str, Any]:
    """The original Claim-PT model from the user's checkout, timed on the same paper-shaped
    patients in a child process (it needs tf-keras in place of Keras 3: simulations.bench.original_child)."""
    check_original_checkout(checkout)
    log.info("bench: the original Claim-PT model from %s, %d patients per timed epoch", checkout, patients)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "simulations.bench.original_child",
            str(checkout),
            str(patients),
            str(repeats),
            str(seed),
        ],
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def attention_section(site_dir: Path, patients: int = 1000, render: int = 20) -> dict[str, Any]:
    """`claimpt attention` end to end on `patients` patients of one site (read, tensorise, attention
    and attributions for all, PNGs for `render`), with a faithful-default model of random weights:
    the cost does not depend on the weights."""
    from shared_model.contract.checkpoint import save_checkpoint
    from shared_model.evaluation.playground import PlaygroundSettings, run_playground
    from shared_model.model.config import ClaimTransformerConfig
    from shared_model.model.transformer import PretrainingModel
    from shared_model.tensors.store import streaming_vocabulary

    vocabulary = streaming_vocabulary([site_dir])
    config = ClaimTransformerConfig(vocab_size=vocabulary.size, n_groups=vocabulary.n_groups)
    with tempfile.TemporaryDirectory(prefix="claimpt-attention-") as tmp:
        save_checkpoint(Path(tmp) / "checkpoint", PretrainingModel(config), config, vocabulary)
        started = time.perf_counter()
        run_playground(
            Path(tmp) / "checkpoint",
            site_dir,
            Path(tmp) / "out",
            PlaygroundSettings(sample=patients, split="train", render=render),
        )
        seconds = time.perf_counter() - started
    log.info("bench: attention playground on %d patients (%d rendered): %.1f s", patients, render, seconds)
    return {"attention_patients": patients, "attention_rendered": render, "attention_seconds": round(seconds, 1)}


def tensorize_section(site_dirs: list[Path], repeats: int) -> dict[str, Any]:
    """Streaming tensorisation (parquet read + validation + samples + shard write), events/s."""
    from shared_model.tensors.store import streaming_vocabulary, tensorize_to_shards

    vocabulary = streaming_vocabulary(site_dirs)
    with tempfile.TemporaryDirectory(prefix="claimpt-tensors-") as tmp:

        def run() -> int:
            return sum(
                tensorize_to_shards(p, vocabulary, Path(tmp) / p.name, overwrite=True)["events"] for p in site_dirs
            )

        rate = measure_rate(run, repeats, "events/s")
    return {"tensorize_events_per_s": rate.__dict__}


def scale_section(patients: int, seed: int) -> dict[str, Any]:
    """Synthesise `patients` over 4 sites, then in a child process (whose peak RSS is the figure,
    so the generator's memory does not count) tensorise them into shards and run one pretraining
    epoch streaming from the memory-mapped shards of every split: a throughput and memory test
    at full scale, not a quality run."""
    from simulations.synth import synthesize

    sizes = [patients // 4 + (1 if i < patients % 4 else 0) for i in range(4)]
    with tempfile.TemporaryDirectory(prefix="claimpt-scale-") as tmp:
        log.info("bench: synthesising %d patients for the scale test", patients)
        sites = synthesize(Path(tmp) / "sites", sizes, seed)
        log.info("bench: tensorising them and pretraining one epoch (child process; progress below)")
        result = subprocess.run(
            [sys.executable, "-m", "simulations.bench.scale_child", str(Path(tmp) / "tensors"), *map(str, sites)],
            check=True,
            stdout=subprocess.PIPE,
            text=True,
        )
        figures = json.loads(result.stdout.strip().splitlines()[-1])
    return {
        "scale_patients": patients,
        "scale_tensorize_events": figures["events"],
        "scale_tensorize_seconds": round(figures["seconds"], 1),
        "scale_tensorize_peak_rss_mb": round(figures["peak_rss_mb"], 1),
        "scale_epoch_samples": figures["epoch_samples"],
        "scale_epoch_seconds": round(figures["epoch_seconds"], 1),
        "scale_epoch_peak_rss_mb": round(figures["epoch_peak_rss_mb"], 1),
        "scale_vocab_size": figures["vocab_size"],
        "scale_model_vocab_size": figures["model_vocab_size"],
        "scale_model_groups": figures["model_groups"],
    }


def federated_section(patients_per_site: int, seed: int, rounds: int = 3) -> dict[str, Any]:
    """Round time of FedAvg over 3 synthetic sites, split into local compute and the rest."""
    from shared_model.contract.run_config import FederatedRunConfig
    from simulations.federation.simulation import run_federated_simulation
    from simulations.synth import synthesize

    with tempfile.TemporaryDirectory(prefix="claimpt-fed-bench-") as tmp:
        sites = synthesize(Path(tmp) / "sites", [patients_per_site] * 3, seed)
        log.info("bench: federated rounds over 3 x %d patients", patients_per_site)
        table = run_federated_simulation(
            sites,
            FederatedRunConfig(
                num_server_rounds=rounds, seed=seed, run_dir=str(Path(tmp) / "run"), min_available_clients=3
            ),
            parallel_clients=1,
        )
    steady = table[table["round"] > 1]
    overhead = 1 - steady["client_compute_seconds"] / steady["round_seconds"]
    return {
        "federated_patients_per_site": patients_per_site,
        "federated_round_seconds": float(steady["round_seconds"].median()),
        "federated_slowest_train_seconds": float(steady["slowest_train_seconds"].median()),
        "federated_client_compute_seconds": float(steady["client_compute_seconds"].median()),
        "federated_round_overhead_fraction": float(overhead.median()),
    }
