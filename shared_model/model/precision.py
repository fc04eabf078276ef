"""The precision of a pretraining model's heavy matmuls: float32, or bfloat16.

In bfloat16 the NVP and CP heads' training matmuls (three quarters of a step's arithmetic at the
paper's sizes) take bfloat16 operands with float32 accumulation (shared_model.model.head_loss). What
stays float32 whatever the precision: the weights and the optimizer's state, the encoder, the
losses and their sums, the served NVP logits, fine-tuning, and everything DP-SGD does
(per-patient gradients, clipping, the clipped norms, the noise).

`auto` picks bfloat16 only where the hardware computes it natively, read from what the machine
says it has (a GPU of compute capability 8.0 or more, or the CPU flags AMX or AVX512-BF16 in
/proc/cpuinfo), never from a timing: the same machine always makes the same choice. Elsewhere
bfloat16 is emulated and slower.
"""

from __future__ import annotations

import functools
from pathlib import Path

from shared_model.settings import PRECISIONS

BFLOAT16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The first processor's flags (empty where /proc/cpuinfo is missing)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


@functools.cache
def gpu_with_bfloat16() -> bool:
    """Whether TensorFlow sees a GPU that computes bfloat16 natively (compute capability 8.0 or
    more: Ampere and later; older ones emulate it, or refuse it)."""
    import tensorflow as tf

    for gpu in tf.config.list_physical_devices("GPU"):
        capability = tf.config.experimental.get_device_details(gpu).get("compute_capability")
        if capability is not None and tuple(capability) >= (8, 0):
            return True
    return False


def native_bfloat16(flags: frozenset[str] | None = None, gpu: bool | None = None) -> bool:
    """Whether this machine computes bfloat16 matmuls natively (`flags`: the CPU's, `gpu`: whether
    it has a GPU that does; read from the machine when not given)."""
    flags = cpu_flags() if flags is None else flags
    return (gpu_with_bfloat16() if gpu is None else gpu) or any(flag in flags for flag in BFLOAT16_CPU_FLAGS)


def resolve_precision(precision: str) -> str:
    """`float32` or `bfloat16` for a setting of PRECISIONS."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "auto":
        return "bfloat16" if native_bfloat16() else "float32"
    return precision
