"""The sites the coordinator enrolled, by name, with the public half of each site's identity key
(`claimpt site keys` writes it as identity.pub): the binding that lets the server check that a
privacy statement filed under a site's pseudonym was signed by that site."""

from __future__ import annotations

import json
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from shared_model.checkpoint import CheckpointError
from shared_model.data.paths import atomic_write_bytes
from shared_model.passport import site_key


def _public_key(text: str, where: str) -> ed25519.Ed25519PublicKey:
    try:
        key = serialization.load_ssh_public_key(text.strip().encode())
    except ValueError as exc:
        raise CheckpointError(f"{where}: not an OpenSSH public key") from exc
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise CheckpointError(f"{where}: not an Ed25519 key (claimpt site keys writes one)")
    return key


def load_registry(path: Path) -> dict[int, ed25519.Ed25519PublicKey]:
    """Each enrolled site's identity key, by the site key its statements carry."""
    try:
        sites = json.loads(Path(path).read_text())["sites"]
        if not isinstance(sites, dict):
            raise TypeError("sites is not a table")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{path}: not a site registry written by `claimpt server enrol`") from exc
    return {site_key(str(name)): _public_key(str(text), f"{path}, site {name}") for name, text in sites.items()}


def enrol(path: Path, site: str, public_key: Path) -> None:
    """Add (or replace) `site`'s identity key in the registry at `path`."""
    try:
        text = Path(public_key).read_text()
    except UnicodeDecodeError as exc:
        raise CheckpointError(f"{public_key}: not an OpenSSH public key") from exc
    _public_key(text, str(public_key))
    if Path(path).exists():
        load_registry(path)  # a registry that does not read is not overwritten
        sites = json.loads(Path(path).read_text())["sites"]
    else:
        sites = {}
    sites[site] = text.strip()
    atomic_write_bytes(Path(path), (json.dumps({"sites": sites}, indent=2, sort_keys=True) + "\n").encode())
