"""What an operator's log leaves out: colour codes, and third-party noise that is no news on a
CPU-only host (CUDA and XLA probing, TensorFlow's CPU banners, scikit-learn's convergence
warnings). One list, for the site's log (client.site_log) and the coordinator's run log
(server.submit)."""

from __future__ import annotations

import re

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
NOISE = re.compile(
    r"^[EWI]\d{4} \d\d:\d\d:\d\d"  # absl's C++ log lines (CUDA and XLA probing)
    r"|cuInit|cuDNN|cuFFT|cuBLAS|CUDA|TF-TRT|computation placer"
    r"|oneDNN custom operations|This TensorFlow binary is optimized|rebuild TensorFlow with the appropriate"
    r"|failed to converge|ConvergenceWarning|warnings\.warn\("
    r"|^WARNING: All log messages before absl::InitializeLog"
)


def is_noise(line: str) -> bool:
    return bool(NOISE.search(line))
