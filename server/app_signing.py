"""Signing the app bundle (FAB) that the sites' SuperNodes will run.

A signature is Flower's own format, so that stock `flower-supernode --trusted-entities` verifies
it: Ed25519 over `timestamp (8 bytes, big-endian) + sha256(FAB)`, base64url, stored by key id.
The bundle is built exactly as `flwr run` builds it (Flower's `build_fab_from_disk` is
deterministic), so the signed hash is the hash of what the SuperLink will receive.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from flwr.cli.build import build_fab_from_disk
from flwr.supercore.primitives.asymmetric_ed25519 import create_message_to_sign

from server.certs import APP_SIGNING_KEY_ID
from shared_model.checkpoint import CheckpointError
from shared_model.data.paths import atomic_write_bytes


def fab_hash(app_dir: Path) -> tuple[str, bytes]:
    """(sha256 hex, digest) of the bundle `flwr run app_dir` will submit."""
    digest = hashlib.sha256(build_fab_from_disk(Path(app_dir))).digest()
    return digest.hex(), digest


def sign_app(app_dir: Path, private_key: Path, signatures: Path, *, key_id: str = APP_SIGNING_KEY_ID) -> str:
    """Sign the bundle of `app_dir` and store the signature as `signatures/<sha256>.json`, where
    the SuperLink attaches it to the bundle (server.superlink_gate). Returns the bundle's hash."""
    try:
        key = serialization.load_pem_private_key(Path(private_key).read_bytes(), password=None)
    except ValueError as exc:
        raise CheckpointError(f"{private_key}: not a PEM private key ({exc})") from exc
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise CheckpointError(f"{private_key}: expected an Ed25519 private key (app-signing.key)")
    hex_hash, digest = fab_hash(app_dir)
    signed_at = int(time.time())
    signature = key.sign(create_message_to_sign(digest, signed_at))
    record = {
        key_id: json.dumps(
            {"signature": base64.urlsafe_b64encode(signature).decode().rstrip("="), "signed_at": signed_at}
        )
    }
    signatures.mkdir(parents=True, exist_ok=True, mode=0o700)
    atomic_write_bytes(signatures / f"{hex_hash}.json", json.dumps(record).encode())
    return hex_hash
