"""The log a site's security officer reads: `STATE/site.log` (0600) beside the terminal, with the
site worker's lines and the SuperNode's and SuperExec's output, and without what is no news to
an operator: colour codes, and third-party start-up noise (CUDA probing on a machine without a
GPU, TensorFlow's CPU banners, scikit-learn's convergence warnings)."""

from __future__ import annotations

import datetime as dt
import logging
import os
import sys
import threading
from pathlib import Path
from typing import IO

from shared_model.runtime.noise import ANSI, is_noise

LOG_FILE = "site.log"
STAMP = "%Y-%m-%d %H:%M:%S"  # and milliseconds: every line of the site log starts with its time


class QuietFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not is_noise(record.getMessage())


def open_site_log(state_dir: Path) -> Path:
    """Send this process's log records, Python warnings included, to STATE/site.log as well
    (appended, 0600), noise dropped from both."""
    path = Path(state_dir) / LOG_FILE
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    handler = logging.StreamHandler(os.fdopen(descriptor, "a", buffering=1))
    handler.setFormatter(logging.Formatter("%(asctime)s.%(msecs)03d %(levelname)s %(message)s", STAMP))
    root = logging.getLogger()
    root.addHandler(handler)
    for each in root.handlers:
        each.addFilter(QuietFilter())
    logging.captureWarnings(True)
    return path


def relay_output(stream: IO[str], name: str, log_file: Path) -> threading.Thread:
    """Copy a child's output, line by line, to this process's stderr and to the site log: colour
    codes removed, noise dropped, each line in the log stamped when it arrived (Flower's own lines
    carry no time, and a round's timeline is read from them)."""

    def copy() -> None:
        with open(log_file, "a", buffering=1) as sink:
            for raw in stream:
                line = ANSI.sub("", raw).rstrip()
                if not line.strip() or is_noise(line):
                    continue
                sys.stderr.write(f"{name}: {line}\n")
                now = dt.datetime.now()
                sink.write(f"{now.strftime(STAMP)}.{now.microsecond // 1000:03d} {name}: {line}\n")

    thread = threading.Thread(target=copy, name=f"relay-{name}", daemon=True)
    thread.start()
    return thread
