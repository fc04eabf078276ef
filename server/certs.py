"""Certificates and keys for a real deployment (docs/architecture.md §8), made with the `cryptography` library.

One call writes, into a new directory (all files mode 0600):
- `ca.crt`, `ca.key`: the consortium's certificate authority;
- `superlink.crt`, `superlink.key`: the SuperLink's TLS certificate with the given hosts as
  subject alternative names (DNS names and IP addresses);
- `supernodes/<site>` and `supernodes/<site>.pub`: each site's EC key pair for Flower's SuperNode
  authentication (OpenSSH format, as `flower-supernode --auth-supernode-*-key` reads them);
- `signing.key`, `signing.pub`: the server's Ed25519 key that signs checkpoint manifests;
- `app-signing.key`: the consortium's Ed25519 key that signs the app bundles sites run (keep it
  apart from the SuperLink host if the coordinator's operators are not to run their own code at
  the sites), and `trusted-entities.yaml`, its public half for `claimpt site join`.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from shared_model.contract.app_bundle import CONSORTIUM_KEY_ID, trusted_entities_yaml
from shared_model.contract.signing import supernode_key_pair
from shared_model.data.paths import atomic_directory

PRIVATE = 0o600
RSA_BITS = 3072


@dataclass(frozen=True)
class CertificateSettings:
    hosts: tuple[str, ...]
    sites: tuple[str, ...]
    days: int = 825  # the longest validity browsers and most TLS stacks accept for a leaf
    organisation: str = "claimpt federation"


def _name(common_name: str, organisation: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _subject_alternative_names(hosts: tuple[str, ...]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def _pem_key(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _validate(settings: CertificateSettings) -> None:
    if not settings.hosts:
        raise ValueError("give at least one host name or IP address for the SuperLink certificate")
    bad = [s for s in settings.sites if not s or "/" in s or s.startswith(".")]
    if bad or len(set(settings.sites)) != len(settings.sites):
        raise ValueError(f"site names must be unique plain names, got {list(settings.sites)}")


def write_certificates(out: str | Path, settings: CertificateSettings, *, force: bool = False) -> Path:
    """Create every file in a temporary sibling directory, then move it into place (old keys are
    replaced only with `force`)."""
    _validate(settings)
    out = Path(out)
    with atomic_directory(out, overwrite=force) as tmp:
        _generate(tmp, settings)
    out.chmod(0o700)
    return out


def _generate(directory: Path, settings: CertificateSettings) -> None:
    now = dt.datetime.now(dt.UTC)
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    ca_name = _name(f"{settings.organisation} CA", settings.organisation)
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    server_key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(_name(settings.hosts[0], settings.organisation))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=settings.days))
        .add_extension(_subject_alternative_names(settings.hosts), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write(directory / "ca.crt", ca_cert.public_bytes(serialization.Encoding.PEM))
    _write(directory / "ca.key", _pem_key(ca_key))
    _write(directory / "superlink.crt", server_cert.public_bytes(serialization.Encoding.PEM))
    _write(directory / "superlink.key", _pem_key(server_key))
    for site in settings.sites:
        private, public = supernode_key_pair()
        _write(directory / "supernodes" / site, private)
        _write(directory / "supernodes" / f"{site}.pub", public)
    signing_key = ed25519.Ed25519PrivateKey.generate()
    _write(directory / "signing.key", _pem_key(signing_key))
    _write(
        directory / "signing.pub",
        signing_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    )
    app_key = ed25519.Ed25519PrivateKey.generate()
    _write(directory / "app-signing.key", _pem_key(app_key))
    _write(directory / "trusted-entities.yaml", trusted_entities_yaml(app_key.public_key(), CONSORTIUM_KEY_ID))
    (directory / "supernodes").mkdir(exist_ok=True)
    (directory / "supernodes").chmod(0o700)
