"""Timing and machine facts shared by every section of `claimpt bench`: steady-state rates (one
untimed warm-up, then `repeats` timed runs as median, min and max), peak memory, versions."""

from __future__ import annotations

import os
import platform
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Rate:
    """A throughput figure over repeats (units per second)."""

    median: float
    min: float
    max: float
    unit: str


def measure_rate(work: Callable[[], int], repeats: int, unit: str) -> Rate:
    """Run `work` once untimed, then `repeats` times; `work` returns how many units it did."""
    work()
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        units = work()
        rates.append(units / (time.perf_counter() - start))
    return Rate(statistics.median(rates), min(rates), max(rates), unit)


def machine_info() -> dict[str, Any]:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import tensorflow as tf

    from shared_model.model.precision import BFLOAT16_CPU_FLAGS, cpu_flags, native_bfloat16

    flags = cpu_flags()

    return {
        "cores": os.cpu_count(),
        "cpu_model": cpu,
        "cpu_bfloat16_flags": sorted(set(BFLOAT16_CPU_FLAGS) & flags),
        "native_bfloat16": native_bfloat16(flags),
        "gpus": [gpu.name for gpu in tf.config.list_physical_devices("GPU")],
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def versions() -> dict[str, str]:
    found = {}
    for package in (
        "claimpt-federated",
        "tensorflow-cpu",
        "tensorflow",
        "keras",
        "flwr",
        "numpy",
        "pandas",
        "pyarrow",
        "scikit-learn",
    ):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return found


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
