"""Safe file-system helpers: containment checks, size limits and atomic directory writes."""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from shared_model.data.errors import DataValidationError

#: Largest single input file we read (guards against oversized or hostile inputs, docs/architecture.md §8).
MAX_INPUT_FILE_BYTES = 8 * 1024**3


def require_owner_only(path: Path, what: str) -> None:
    """Refuse a secret (key file) that other users could read: it must be chmod 600."""
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise DataValidationError(path, f"{what} only its owner can read (chmod 600)", found=f"mode {mode:o}")


def contained_file(root: Path, path: Path) -> Path:
    """Resolve `path` and insist that it stays inside `root` (no symlink or `..` escapes)."""
    root_resolved = root.resolve()
    resolved = path.resolve()
    if not resolved.is_relative_to(root_resolved):
        raise DataValidationError(path, f"a file inside the dataset directory {root_resolved}", found=str(resolved))
    if resolved.is_file() and resolved.stat().st_size > MAX_INPUT_FILE_BYTES:
        raise DataValidationError(
            path,
            f"a file of at most {MAX_INPUT_FILE_BYTES} bytes",
            found=f"{resolved.stat().st_size} bytes",
        )
    return resolved


def fsync_directory(path: Path) -> None:
    """Make a directory's entries (new, renamed or removed files) survive a crash."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def fsync_tree(root: Path) -> None:
    """fsync every file and directory under `root` (before it is renamed into place)."""
    for directory, _, files in os.walk(root):
        for name in files:
            with open(os.path.join(directory, name), "rb+") as handle:
                os.fsync(handle.fileno())
        fsync_directory(Path(directory))


def atomic_write_bytes(target: Path, data: bytes, mode: int = 0o644) -> None:
    """Write a file through a fsynced temporary sibling and rename it: readers see the old
    content or the new, never a torn file, also after a crash."""
    target = Path(target)
    descriptor, tmp = tempfile.mkstemp(prefix=f".{target.name}.tmp-", dir=target.parent)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_directory(target.parent)


@contextlib.contextmanager
def atomic_directory(target: Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling directory that replaces `target` only if the block succeeds.

    Readers never see a half-written directory: on error the temporary directory is removed
    and `target` is left exactly as it was; the new content is fsynced before the rename and
    the rename itself after it, so a crash leaves the old directory or the whole new one.
    """
    target = Path(target)
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} already exists (use --force to replace it)")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield tmp
        fsync_tree(tmp)
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            os.replace(target, old / target.name)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
        fsync_directory(target.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_write_parquet(target: Path, table: pa.Table) -> Path:
    """A parquet file written like `atomic_write_bytes` (its folder made if missing)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    atomic_write_bytes(target, sink.getvalue().to_pybytes())
    return target
