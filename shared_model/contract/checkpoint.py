"""The checkpoint format: the one place a model is written and read (docs/architecture.md §3).

A checkpoint is a directory: `weights.npz` (arrays in the model's variable order),
`vocabulary.json`, `config.json`, `manifest.json` (sha256 of each file, variable paths and
shapes, kind, run id, round, strategy, creation time, versions) and optionally `manifest.sig`.
It is written to a temporary directory, fsynced and renamed. Loading reads each file once,
checks the sha256 of those bytes and parses the same bytes (nothing is re-opened after it was
verified); the manifest must list the weights, config and vocabulary, by plain file names.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from shared_model.data.paths import atomic_directory
from shared_model.model.config import ClaimTransformerConfig
from shared_model.tensors.vocabulary import Vocabulary

FORMAT = "claimpt-checkpoint/1"
WEIGHTS_FILE, VOCAB_FILE, CONFIG_FILE, MANIFEST_FILE, SIGNATURE_FILE = (
    "weights.npz",
    "vocabulary.json",
    "config.json",
    "manifest.json",
    "manifest.sig",
)
KIND_PRETRAINING = "pretraining"
KIND_TASK = "task"
REQUIRED_FILES = (WEIGHTS_FILE, VOCAB_FILE, CONFIG_FILE)


class CheckpointError(ValueError):
    """A checkpoint that is incomplete, altered, or does not match the model it claims to hold."""


@dataclass(frozen=True, eq=False)
class Checkpoint:
    config: ClaimTransformerConfig
    vocabulary: Vocabulary
    weights: list[np.ndarray]
    manifest: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return self.manifest["kind"]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def plain_file_name(name: str) -> bool:
    """A name inside the checkpoint directory itself: no path component, nothing hidden."""
    return bool(name) and name == Path(name).name and not name.startswith(".") and "\\" not in name


def _versions() -> dict[str, str]:
    found = {}
    for package in ("claimpt-federated", "tensorflow-cpu", "tensorflow", "keras", "flwr", "numpy"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return found


def weights_bytes(weights: list[np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **{f"{i:04d}": np.asarray(w) for i, w in enumerate(weights)})
    return buffer.getvalue()


def save_checkpoint(
    directory: str | Path,
    model,
    config: ClaimTransformerConfig,
    vocabulary: Vocabulary,
    *,
    kind: str = KIND_PRETRAINING,
    extra: dict[str, Any] | None = None,
    overwrite: bool = True,
    signer=None,
    extra_files: dict[str, bytes] | None = None,
) -> Path:
    """Write the checkpoint of `model` (a PretrainingModel or TaskModel) atomically.
    `signer(bytes) -> bytes` signs manifest.json; `extra_files` (e.g. server strategy state) are
    stored and hashed like the others."""
    directory = Path(directory)
    weights = [np.asarray(v) for v in model.get_weights()]
    with atomic_directory(directory, overwrite=overwrite) as tmp:
        (tmp / WEIGHTS_FILE).write_bytes(weights_bytes(weights))
        (tmp / VOCAB_FILE).write_text(vocabulary.to_json())
        (tmp / CONFIG_FILE).write_text(config.to_json())
        for name, data in (extra_files or {}).items():
            if not plain_file_name(name) or name in (MANIFEST_FILE, SIGNATURE_FILE):
                raise ValueError(f"invalid extra checkpoint file name {name!r}")
            (tmp / name).write_bytes(data)
        names = (WEIGHTS_FILE, VOCAB_FILE, CONFIG_FILE, *(extra_files or {}))
        manifest = {
            "format": FORMAT,
            "kind": kind,
            "files": {name: sha256_file(tmp / name) for name in names},
            "variables": [{"path": v.path, "shape": list(v.shape)} for v in model.weights],
            "precision": model.precision,  # what it trained in (a federated run's: its run config's)
            "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "versions": _versions(),
            **(extra or {}),
        }
        manifest_bytes = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
        (tmp / MANIFEST_FILE).write_bytes(manifest_bytes)
        if signer is not None:
            (tmp / SIGNATURE_FILE).write_bytes(signer(manifest_bytes))
    return directory


def load_checkpoint(directory: str | Path, *, verify_signature=None) -> Checkpoint:
    """Read a checkpoint after checking every file's sha256 (and the signature when asked).

    `verify_signature(manifest_bytes, signature_bytes)` must raise on a bad signature.
    """
    directory = Path(directory)
    manifest_path = directory / MANIFEST_FILE
    if not manifest_path.is_file():
        raise CheckpointError(f"{manifest_path}: missing (not a claimpt checkpoint directory?)")
    manifest_bytes = manifest_path.read_bytes()
    if verify_signature is not None:
        signature_path = directory / SIGNATURE_FILE
        if not signature_path.is_file():
            raise CheckpointError(f"{signature_path}: missing, but a signature was required")
        verify_signature(manifest_bytes, signature_path.read_bytes())
    try:
        manifest = json.loads(manifest_bytes)
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{manifest_path}: not valid JSON ({exc})") from exc
    if manifest.get("format") != FORMAT:
        raise CheckpointError(f"{manifest_path}: unsupported format {manifest.get('format')!r}")
    files = manifest.get("files")
    if not isinstance(files, dict) or not all(name in files for name in REQUIRED_FILES):
        raise CheckpointError(f"{manifest_path}: must list {', '.join(REQUIRED_FILES)} with their sha256")
    verified = {name: _verified_bytes(directory, name, expected) for name, expected in files.items()}
    with np.load(io.BytesIO(verified[WEIGHTS_FILE])) as archive:
        weights = [archive[key] for key in sorted(archive.files)]
    config = ClaimTransformerConfig.from_json(verified[CONFIG_FILE].decode())
    vocabulary = Vocabulary.from_json(verified[VOCAB_FILE].decode())
    shapes = [tuple(v["shape"]) for v in manifest["variables"]]
    if [w.shape for w in weights] != shapes:
        raise CheckpointError(f"{directory / WEIGHTS_FILE}: array shapes do not match the manifest")
    return Checkpoint(config, vocabulary, weights, manifest)


def _verified_bytes(directory: Path, name: str, expected: str) -> bytes:
    """The file's bytes, read once, whose sha256 is the manifest's (what is parsed is what was
    checked: a file swapped after its hash was read cannot slip in)."""
    if not isinstance(name, str) or not plain_file_name(name):
        raise CheckpointError(f"{directory / MANIFEST_FILE}: file name {name!r} is not a plain name in the checkpoint")
    path = directory / name
    if path.is_symlink() or not path.is_file():
        raise CheckpointError(f"{path}: missing (or not a regular file)")
    data = path.read_bytes()
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise CheckpointError(f"{path}: sha256 {actual} does not match the manifest ({expected})")
    return data


def assign_weights(model, checkpoint: Checkpoint) -> None:
    """Load checkpoint weights into a freshly built model, insisting on the same variables."""
    expected = [(v["path"], tuple(v["shape"])) for v in checkpoint.manifest["variables"]]
    actual = [(v.path, tuple(v.shape)) for v in model.weights]
    if expected != actual:
        raise CheckpointError("checkpoint variables do not match the model built from its config.json")
    model.set_weights(checkpoint.weights)
