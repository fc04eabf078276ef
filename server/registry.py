"""The consortium's enrolment: every site by name, with the keys that prove it is that site.

One file, `STATE/sites.json`, written by the coordinator's own commands only:
- `claimpt server start` registers each site's SuperNode key with the SuperLink (its name is the
  key file's stem, as `claimpt certs --sites` names them, or NAME=PATH) and records the node id
  the SuperLink gave it. The SuperLink authenticates that key on every request, so a reply from
  that node id is that site's, whatever the reply says: names come from here, never from a site.
- `claimpt server enrol` adds the public half of a site's identity key (`claimpt site keys`),
  which signs the site's privacy statements, so the passport can say they are the site's own.

A name, a SuperNode key and a node id each belong to one site: a second site under a taken name
or key is refused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from shared_model.contract.checkpoint import CheckpointError
from shared_model.contract.passport import site_key
from shared_model.data.paths import atomic_write_bytes

REGISTRY_FILE = "sites.json"
REGISTRY_ENV = "CLAIMPT_SITES"  # set by `claimpt server start` for every ServerApp it runs


class EnrolmentError(ValueError):
    """A site that cannot be enrolled as asked (a taken name or key, a key that does not read)."""


@dataclass(frozen=True)
class EnrolledSite:
    name: str
    node_key: str = ""  # the SuperNode's OpenSSH public key, registered with the SuperLink
    node_id: int = 0  # the node id the SuperLink gave that key (0: not registered yet)
    identity: str = ""  # identity.pub (OpenSSH Ed25519): signs the site's privacy statements


def _identity_key(text: str, where: str) -> ed25519.Ed25519PublicKey:
    try:
        key = serialization.load_ssh_public_key(text.strip().encode())
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise EnrolmentError(f"{where}: not an OpenSSH public key") from exc
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise EnrolmentError(f"{where}: not an Ed25519 key (claimpt site keys writes one)")
    return key


def read_public_key(path: Path) -> str:
    """An OpenSSH public key file's text (key type and base64 body; the comment is dropped)."""
    try:
        parts = Path(path).read_text().split()
        serialization.load_ssh_public_key(" ".join(parts[:2]).encode())
    except (UnicodeDecodeError, ValueError, IndexError, UnsupportedAlgorithm) as exc:
        raise EnrolmentError(f"{path}: not an OpenSSH public key") from exc
    return " ".join(parts[:2])


@dataclass(frozen=True)
class Registry:
    """Every enrolled site by name; where a site's statements and replies are checked against it."""

    sites: dict[str, EnrolledSite]

    def name_of(self, node_id: int) -> str | None:
        """The enrolled name of the node the SuperLink authenticated as `node_id` (None: unknown)."""
        return next((s.name for s in self.sites.values() if s.node_id and s.node_id == node_id), None)

    @property
    def binds_nodes(self) -> bool:
        return any(s.node_id for s in self.sites.values())

    def identity_of(self, key: int) -> ed25519.Ed25519PublicKey | None:
        site = next((s for s in self.sites.values() if site_key(s.name) == key), None)
        return _identity_key(site.identity, f"site {site.name}") if site and site.identity else None

    def with_site(self, site: EnrolledSite) -> Registry:
        """This registry with `site` added or updated; refuses a node key or node id of another site."""
        for other in self.sites.values():
            if other.name == site.name:
                continue
            if site.node_key and other.node_key == site.node_key:
                raise EnrolmentError(f"this SuperNode key is already enrolled as {other.name!r}, not {site.name!r}")
            if site.node_id and other.node_id == site.node_id:
                raise EnrolmentError(f"node {site.node_id} is already enrolled as {other.name!r}")
        return Registry({**self.sites, site.name: site})

    def save(self, path: Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        table = {name: {k: v for k, v in vars(s).items() if k != "name" and v} for name, s in self.sites.items()}
        atomic_write_bytes(Path(path), (json.dumps({"sites": table}, indent=2, sort_keys=True) + "\n").encode())


def load_registry(path: Path) -> Registry:
    """The registry at `path` (an empty one where there is no file yet)."""
    if not Path(path).exists():
        return Registry({})
    try:
        table = json.loads(Path(path).read_text())["sites"]
        sites = {}
        for name, entry in table.items():
            fields = {"identity": entry} if isinstance(entry, str) else dict(entry)  # the first format: identity only
            sites[str(name)] = EnrolledSite(name=str(name), **fields)
            if not isinstance(sites[str(name)].node_id, int):
                raise TypeError("node_id is not an integer")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{path}: not a site registry written by claimpt server start / enrol") from exc
    for site in sites.values():
        if site.identity:
            _identity_key(site.identity, f"{path}, site {site.name}")
    return Registry(sites)


def enrol_identity(path: Path, site: str, public_key: Path) -> None:
    """Add (or replace) `site`'s identity key in the registry at `path`."""
    text = read_public_key(public_key)
    _identity_key(text, str(public_key))
    registry = load_registry(path)  # a registry that does not read is not overwritten
    current = registry.sites.get(site, EnrolledSite(site))
    registry.with_site(replace(current, identity=text)).save(path)


def site_key_files(paths: list[str]) -> dict[str, Path]:
    """`--site-key` values (PATH, named by its stem as `claimpt certs --sites` writes them, or
    NAME=PATH) by site name; a name given twice is refused."""
    named: dict[str, Path] = {}
    for value in paths:
        name, _, path = value.rpartition("=") if "=" in value else ("", "", value)
        path_ = Path(path)
        name = name or path_.name.removesuffix(".pub")
        if not name or name in named:
            raise EnrolmentError(f"--site-key {value}: the site name {name!r} is given twice (use NAME=PATH)")
        if not path_.is_file():
            raise FileNotFoundError(f"{path_}: no such public key file")
        named[name] = path_
    return named


def identity_problem(registry: Registry | None, node: int, declared: int) -> str | None:
    """Why a reply from `node` that declares the site key `declared` is not taken (None: it is).
    Where the registry binds node ids, a node is the site it was enrolled as and may declare no
    other; without one (simulations), a site is what it declares."""
    if registry is None or not registry.binds_nodes:
        return None
    name = registry.name_of(node)
    if name is None:
        return "the node is not an enrolled site"
    if site_key(name) != declared:
        return f"the site declares another name than {name!r}, the one its SuperNode key is enrolled under"
    return None
