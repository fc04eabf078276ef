"""Ed25519 signatures over checkpoint manifests (docs/architecture.md §3 and §8).

The server signs `manifest.json`; a site verifies it with the consortium's public key before it
fine-tunes. Because the manifest holds the sha256 of every other file, one signature covers the
whole checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from shared_model.contract.checkpoint import SIGNATURE_FILE, CheckpointError

Signer = Callable[[bytes], bytes]
Verifier = Callable[[bytes, bytes], None]


def load_signer(private_key_file: str | Path) -> Signer:
    """`sign(manifest_bytes) -> signature` with the server's PEM Ed25519 private key."""
    path = Path(private_key_file)
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except ValueError as exc:
        raise CheckpointError(f"{path}: not a PEM private key ({exc})") from exc
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise CheckpointError(f"{path}: expected an Ed25519 private key, found {type(key).__name__}")
    return key.sign


def load_verifier(public_key_file: str | Path) -> Verifier:
    """`verify(manifest_bytes, signature)`, raising CheckpointError when the signature is not the
    key holder's (for `load_checkpoint(..., verify_signature=...)`)."""
    path = Path(public_key_file)
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except ValueError as exc:
        raise CheckpointError(f"{path}: not a PEM public key ({exc})") from exc
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise CheckpointError(f"{path}: expected an Ed25519 public key, found {type(key).__name__}")

    def verify(manifest: bytes, signature: bytes) -> None:
        try:
            key.verify(signature, manifest)
        except InvalidSignature as exc:
            raise CheckpointError(
                f"{SIGNATURE_FILE}: the signature of manifest.json does not verify under {path} "
                "(the checkpoint was altered or signed by another key)"
            ) from exc

    return verify


def supernode_key_pair() -> tuple[bytes, bytes]:
    """A SuperNode authentication key pair (ECDSA P-384, OpenSSH, as `flower-supernode
    --auth-supernode-private-key` reads it): (private key, public key line)."""
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP384R1())
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return private, public + b"\n"
