"""Signing the app bundle (FAB) that the sites' SuperNodes will run, and attaching the sites'
own approvals (shared_model.contract.app_bundle), where the SuperLink hands them out with the bundle
(`signatures/<sha256>.json`, read by server.superlink_gate)."""

from __future__ import annotations

import json
from pathlib import Path

from shared_model.contract.app_bundle import CONSORTIUM_KEY_ID, Approval, fab_hash, load_signing_key
from shared_model.contract.checkpoint import CheckpointError
from shared_model.data.paths import atomic_write_bytes


def sign_app(
    app_dir: Path,
    private_key: Path | None,
    signatures: Path,
    *,
    key_id: str = CONSORTIUM_KEY_ID,
    approvals: tuple[Path, ...] = (),
) -> str:
    """Store the bundle of `app_dir`'s signatures as `signatures/<sha256>.json`: the coordinator's
    own (with `private_key`) and every site's approval of this very bundle (an approval of
    another bundle is refused). Returns the bundle's hash."""
    hex_hash, _ = fab_hash(app_dir)
    records = {}
    if private_key is not None:
        records[key_id] = Approval.sign(app_dir, load_signing_key(private_key), key_id).verification
    for path in approvals:
        approval = Approval.read(path)
        if approval.fab_sha256 != hex_hash:
            raise CheckpointError(
                f"{path}: approves bundle {approval.fab_sha256[:16]}, not this app's {hex_hash[:16]} "
                "(the site reviewed other code)"
            )
        records[approval.key_id] = approval.verification
    if not records:
        raise CheckpointError("no signature: give --app-key or at least one --approval")
    signatures.mkdir(parents=True, exist_ok=True, mode=0o700)
    atomic_write_bytes(signatures / f"{hex_hash}.json", json.dumps(records).encode())
    return hex_hash
