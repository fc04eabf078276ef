"""`make check-gpu`: on a machine with an NVIDIA GPU (after `make install GPU=1`), the model bench
in float32 and bfloat16 and one central pretraining epoch, both on the GPU, written as
OUT/bench.md, OUT/bench.json and OUT/gpu-check.json. Where TensorFlow sees no GPU it says so and
exits with 2, before any work: a CPU figure must never pass for a GPU one."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

log = logging.getLogger(__name__)
NO_GPU_EXIT = 2


def visible_gpus() -> list[dict[str, str]]:
    """Each GPU TensorFlow sees, with what it says of it (name, compute capability)."""
    import tensorflow as tf

    return [
        {"device": gpu.name, **{k: str(v) for k, v in tf.config.experimental.get_device_details(gpu).items()}}
        for gpu in tf.config.list_physical_devices("GPU")
    ]


def pretraining_epoch(patients: int, seed: int, out: Path) -> dict[str, float]:
    """One central pretraining epoch over 3 synthetic sites of `patients` in all, in the precision
    `auto` picks (bfloat16 on a GPU)."""
    from shared_model.settings import PretrainSettings
    from shared_model.training.central import run_central_pretraining
    from simulations.synth import synthesize

    sizes = [patients // 3] * 3
    with tempfile.TemporaryDirectory(prefix="claimpt-gpu-check-") as tmp:
        sites = synthesize(Path(tmp) / "sites", sizes, seed)
        started = time.perf_counter()
        metrics = run_central_pretraining(sites, out / "pretraining", settings=PretrainSettings(epochs=1, seed=seed))
        seconds = time.perf_counter() - started
    return {"patients": sum(sizes), "seconds": round(seconds, 1), "precision": metrics["precision"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulations.bench.gpu_check", description=__doc__)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--patients", type=int, default=30_000, help="Patients of the pretraining epoch.")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    gpus = visible_gpus()
    if not gpus:
        print(
            "error: TensorFlow sees no GPU: install with `make install GPU=1` on a Linux machine with an NVIDIA "
            "GPU and its driver (nvidia-smi must list it); nothing was run",
            file=sys.stderr,
        )
        return NO_GPU_EXIT
    log.info("GPU check on %s", gpus)
    from simulations.bench.run import run_bench

    args.out.mkdir(parents=True, exist_ok=True)
    run_bench(args.out, patients_per_site=10, sites=2, repeats=3, seed=args.seed, precision="bfloat16")
    epoch = pretraining_epoch(args.patients, args.seed, args.out)
    report = {"gpus": gpus, "pretraining_epoch": epoch, "bench": json.loads((args.out / "bench.json").read_text())}
    (args.out / "gpu-check.json").write_text(json.dumps(report, indent=2) + "\n")
    log.info("one pretraining epoch of %d patients on the GPU: %.1f s", epoch["patients"], epoch["seconds"])
    print(f"GPU check written to {args.out} (bench.md, gpu-check.json)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
