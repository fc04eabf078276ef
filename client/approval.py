"""A site approves the code it runs: its own identity key, and its signature of each bundle it
reviewed (shared_model.contract.app_bundle). A SuperNode started with the site's own
`trusted-entities.yaml` runs only the bundles this key signed, whatever the coordinator signs;
a new key (`claimpt site keys --rotate`) withdraws every earlier approval. The same key signs
the site's privacy statements (client.statement), which the coordinator checks against the
public half it enrolled (server.registry)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from shared_model.contract.app_bundle import Approval, load_signing_key, site_key_id, trusted_entities_yaml
from shared_model.contract.signing import supernode_key_pair
from shared_model.data.paths import atomic_write_bytes

KEY_FILE = "app-approval.key"
TRUSTED_FILE = "trusted-entities.yaml"
PUBLIC_FILE = "identity.pub"  # for the coordinator's registry (claimpt server enrol)
NODE_KEY_FILE = "node.key"  # the SuperNode's authentication key; node.key.pub goes to the coordinator


@dataclass(frozen=True)
class SiteKeys:
    """The site's identity key: it approves app bundles and signs the site's privacy statements;
    beside it, the SuperNode's authentication key."""

    key: Path
    trusted_entities: Path

    @property
    def public(self) -> Path:
        return self.key.with_name(PUBLIC_FILE)

    @property
    def node_key(self) -> Path:
        return self.key.with_name(NODE_KEY_FILE)


def make_site_keys(directory: Path, site: str, *, rotate: bool = False) -> SiteKeys:
    """A new Ed25519 approval key (0600) and the trusted-entities file naming it alone; an existing
    key is replaced only with `rotate` (which withdraws every approval made with it). The first
    time, also the SuperNode's key pair (node.key, 0600, and node.key.pub for the coordinator:
    the site's private keys never leave it)."""
    directory = Path(directory)
    keys = SiteKeys(directory / KEY_FILE, directory / TRUSTED_FILE)
    if keys.key.exists() and not rotate:
        raise FileExistsError(f"{keys.key}: exists (pass --rotate to replace it and withdraw its approvals)")
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    atomic_write_bytes(keys.key, pem, mode=0o600)
    atomic_write_bytes(keys.trusted_entities, trusted_entities_yaml(key.public_key(), site_key_id(site)), mode=0o644)
    openssh = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    atomic_write_bytes(keys.public, openssh + f" {site}\n".encode(), mode=0o644)
    if not keys.node_key.exists():
        private, public = supernode_key_pair()
        atomic_write_bytes(keys.node_key, private, mode=0o600)
        atomic_write_bytes(keys.node_key.with_name(NODE_KEY_FILE + ".pub"), public, mode=0o644)
    os.chmod(directory, 0o700)
    return keys


def approve(app_dir: Path, key: Path, site: str, out: Path) -> Path:
    """Sign the bundle of the reviewed `app_dir` with the site's key; the approval file goes to the
    coordinator, who attaches it to the run (`claimpt server submit --approval`)."""
    return Approval.sign(app_dir, load_signing_key(key), site_key_id(site)).write(out)
