"""`claimpt certs`: a CA, a SuperLink certificate with the right names, SuperNode and signing keys."""

from __future__ import annotations

import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding
from typer.testing import CliRunner

from server.certs import CertificateSettings, write_certificates
from simulations.cli.app import app


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pki") / "certs"
    return write_certificates(
        out, CertificateSettings(hosts=("superlink.example.org", "127.0.0.1"), sites=("site-1", "site-2"))
    )


def test_superlink_certificate_is_signed_by_the_ca_for_the_given_hosts(keys: Path) -> None:
    ca = x509.load_pem_x509_certificate((keys / "ca.crt").read_bytes())
    server = x509.load_pem_x509_certificate((keys / "superlink.crt").read_bytes())
    ca.public_key().verify(
        server.signature, server.tbs_certificate_bytes, padding.PKCS1v15(), server.signature_hash_algorithm
    )
    assert server.issuer == ca.subject
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["superlink.example.org"]
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not server.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_every_file_is_private_and_keys_load(keys: Path) -> None:
    files = sorted(p.relative_to(keys).as_posix() for p in keys.rglob("*") if p.is_file())
    assert files == [
        "app-signing.key",
        "ca.crt",
        "ca.key",
        "signing.key",
        "signing.pub",
        "superlink.crt",
        "superlink.key",
        "supernodes/site-1",
        "supernodes/site-1.pub",
        "supernodes/site-2",
        "supernodes/site-2.pub",
        "trusted-entities.yaml",
    ]
    for name in files:
        assert stat.S_IMODE((keys / name).stat().st_mode) == 0o600, name
    node = serialization.load_ssh_private_key((keys / "supernodes" / "site-1").read_bytes(), None)
    public = serialization.load_ssh_public_key((keys / "supernodes" / "site-1.pub").read_bytes())
    assert (
        isinstance(node, ec.EllipticCurvePrivateKey) and public.public_numbers() == node.public_key().public_numbers()
    )
    assert (keys / "supernodes" / "site-1.pub").read_bytes() != (keys / "supernodes" / "site-2.pub").read_bytes()
    signing = serialization.load_pem_private_key((keys / "signing.key").read_bytes(), None)
    assert isinstance(signing, ed25519.Ed25519PrivateKey)


def test_cli_refuses_to_overwrite_without_force(keys: Path) -> None:
    before = (keys / "ca.key").read_bytes()
    result = CliRunner().invoke(app, ["certs", "--out", str(keys), "--hosts", "127.0.0.1"])
    assert result.exit_code == 2 and "--force" in result.output
    assert (keys / "ca.key").read_bytes() == before


def test_cli_force_replaces_and_bad_hosts_are_refused(tmp_path: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["certs", "--out", str(tmp_path / "c"), "--hosts", "127.0.0.1"]).exit_code == 0
    first = (tmp_path / "c" / "ca.key").read_bytes()
    assert runner.invoke(app, ["certs", "--out", str(tmp_path / "c"), "--hosts", "127.0.0.1", "--force"]).exit_code == 0
    assert (tmp_path / "c" / "ca.key").read_bytes() != first
    result = runner.invoke(app, ["certs", "--out", str(tmp_path / "d"), "--hosts", ","])
    assert result.exit_code == 2 and not (tmp_path / "d").exists()
