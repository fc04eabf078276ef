"""App bundles (FABs) and the signatures that let a SuperNode run them, in Flower's own format.

A SuperNode runs a bundle only if it carries a valid signature by a key in its
`--trusted-entities` file (Flower's `_verify_fab`): Ed25519 over `timestamp (8 bytes, big-endian)
+ sha256(FAB)`, base64url, stored under the key's id. The bundle is built exactly as `flwr run`
builds it (Flower's `build_fab_from_disk` is deterministic), so a hash computed from a reviewed
copy of the app is the hash of what the SuperLink will receive.

Who signs decides who can run code at a site. A site that trusts only its own key (`claimpt site
keys`) runs only the bundles it approved itself (`claimpt site approve`), whatever the coordinator
signs; it withdraws every approval by making a new key (Flower checks no signature's age and
keeps no revocation list).
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from flwr.cli.build import build_fab_from_disk
from flwr.supercore.primitives.asymmetric_ed25519 import create_message_to_sign

from shared_model.contract.checkpoint import CheckpointError
from shared_model.data.paths import atomic_write_bytes

CONSORTIUM_KEY_ID = "fpk_claimpt_consortium"  # `claimpt certs`' app-signing key
SITE_KEY_PREFIX = "fpk_claimpt_site_"  # + the site's name: a site's own approval key


def site_key_id(site: str) -> str:
    return SITE_KEY_PREFIX + site


def fab_hash(app_dir: Path) -> tuple[str, bytes]:
    """(sha256 hex, digest) of the bundle `flwr run app_dir` will submit."""
    digest = hashlib.sha256(build_fab_from_disk(Path(app_dir))).digest()
    return digest.hex(), digest


def load_signing_key(path: Path) -> ed25519.Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except ValueError as exc:
        raise CheckpointError(f"{path}: not a PEM private key ({exc})") from exc
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise CheckpointError(f"{path}: expected an Ed25519 private key")
    return key


def trusted_entities_yaml(public_key: ed25519.Ed25519PublicKey, key_id: str) -> bytes:
    """`flower-supernode --trusted-entities`: one key, by its id."""
    openssh = public_key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    return f"{key_id}: '{openssh} claimpt'\n".encode()


@dataclass(frozen=True)
class Approval:
    """One key's signature of one bundle: what a site sends the coordinator after its review."""

    fab_sha256: str
    key_id: str
    verification: str  # Flower's JSON: {"signature": base64url, "signed_at": unix seconds}

    @classmethod
    def sign(cls, app_dir: Path, key: ed25519.Ed25519PrivateKey, key_id: str) -> Approval:
        hex_hash, digest = fab_hash(app_dir)
        signed_at = int(time.time())
        signature = base64.urlsafe_b64encode(key.sign(create_message_to_sign(digest, signed_at))).decode().rstrip("=")
        return cls(hex_hash, key_id, json.dumps({"signature": signature, "signed_at": signed_at}))

    def write(self, directory: Path) -> Path:
        path = Path(directory) / f"{self.fab_sha256[:16]}.{self.key_id}.json"
        directory.mkdir(parents=True, exist_ok=True)
        record = {"fab-sha256": self.fab_sha256, "key-id": self.key_id, "verification": self.verification}
        atomic_write_bytes(path, (json.dumps(record, indent=2, sort_keys=True) + "\n").encode())
        return path

    @classmethod
    def read(cls, path: Path) -> Approval:
        try:
            record = json.loads(Path(path).read_text())
            approval = cls(str(record["fab-sha256"]), str(record["key-id"]), str(record["verification"]))
            json.loads(approval.verification)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"{path}: not an approval written by `claimpt site approve`") from exc
        return approval


def read_trusted_entities(path: Path) -> dict[str, ed25519.Ed25519PublicKey]:
    """A `--trusted-entities` file (key id: OpenSSH Ed25519 public key), every key checked."""
    import yaml

    try:
        entries = yaml.safe_load(Path(path).read_text())
        if not isinstance(entries, dict) or not entries:
            raise ValueError("expected one or more `key-id: 'ssh-ed25519 ...'` lines")
        keys = {str(key_id): serialization.load_ssh_public_key(str(text).encode()) for key_id, text in entries.items()}
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise CheckpointError(f"{path}: not a trusted-entities file ({exc})") from exc
    for key_id, key in keys.items():
        if not isinstance(key, ed25519.Ed25519PublicKey):
            raise CheckpointError(f"{path}: the key of {key_id} is not Ed25519")
    return keys


def bundle_verified(
    content: bytes, sha256_hex: str, verifications: dict[str, str], trusted: dict[str, ed25519.Ed25519PublicKey]
) -> bool:
    """Whether a bundle is the one its hash names and carries a valid signature (Approval's format)
    by a trusted key. Anything malformed is simply not verified."""
    digest = hashlib.sha256(content).digest()
    if digest.hex() != sha256_hex:
        return False
    for key_id, key in trusted.items():
        try:
            record = json.loads(verifications[key_id])
            signature = base64.urlsafe_b64decode(str(record["signature"]) + "=" * (-len(record["signature"]) % 4))
            signed_at = record["signed_at"]
            if type(signed_at) is not int:
                continue
            key.verify(signature, create_message_to_sign(digest, signed_at))
            return True
        except (KeyError, TypeError, ValueError, InvalidSignature):
            continue
    return False
