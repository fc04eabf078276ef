"""Safe file-system helpers: containment checks, size limits and atomic directory writes."""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from shared_model.data.errors import DataValidationError

#: Largest single input file we read (guards against oversized or hostile inputs, DESIGN 8).
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
        raise DataValidationError(
            path, f"a file inside the dataset directory {root_resolved}", found=str(resolved)
        )
    if resolved.is_file() and resolved.stat().st_size > MAX_INPUT_FILE_BYTES:
        raise DataValidationError(
            path,
            f"a file of at most {MAX_INPUT_FILE_BYTES} bytes",
            found=f"{resolved.stat().st_size} bytes",
        )
    return resolved


@contextlib.contextmanager
def atomic_directory(target: Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling directory that replaces `target` only if the block succeeds.

    Readers never see a half-written directory: on error the temporary directory is removed
    and `target` is left exactly as it was.
    """
    target = Path(target)
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} already exists (use --force to replace it)")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield tmp
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            os.replace(target, old / target.name)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
