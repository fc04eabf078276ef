"""Pseudonymous subject ids: HMAC-SHA256 under a per-site secret that never leaves the site
(docs/architecture.md §8). The same key always gives the same pseudonym, so a site can re-prepare its data
and link new extracts; without the key the mapping cannot be recomputed or reversed."""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
from pathlib import Path

import numpy as np

from shared_model.data import DataValidationError
from shared_model.data.paths import fsync_directory, require_owner_only

log = logging.getLogger(__name__)
KEY_BYTES = 32


def load_or_create_key(path: str | Path) -> bytes:
    """The site's secret: read it, or create it (0600, never overwritten) on first use."""
    path = Path(path)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = secrets.token_bytes(KEY_BYTES)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(key.hex() + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        fsync_directory(path.parent)
        log.info("created a new pseudonymisation key %s (keep it: other keys give other pseudonyms)", path)
        return key
    require_owner_only(path, "a key file")
    try:
        key = bytes.fromhex(path.read_text().strip())
    except ValueError:
        key = b""
    if len(key) != KEY_BYTES:
        raise DataValidationError(path, f"{KEY_BYTES * 2} hexadecimal characters (a key written by claimpt)")
    return key


def pseudonyms(subject_ids: np.ndarray, key: bytes) -> np.ndarray:
    """Non-negative int64 pseudonyms (MEDS keeps `subject_id` int64): the first 63 bits of
    HMAC-SHA256(key, decimal id). Raises if two ids collide (about 1 in 10^7 at 10^6 patients)."""
    ids = np.asarray(subject_ids, dtype=np.int64)
    unique, inverse = np.unique(ids, return_inverse=True)
    mapped = np.fromiter(
        (
            int.from_bytes(hmac.new(key, str(int(i)).encode(), hashlib.sha256).digest()[:8], "big") & (2**63 - 1)
            for i in unique
        ),
        dtype=np.int64,
        count=len(unique),
    )
    if len(np.unique(mapped)) != len(unique):
        raise ValueError("two subject ids map to the same pseudonym under this key; create a new key")
    return mapped[inverse]
