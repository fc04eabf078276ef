"""A site refuses to fine-tune on a checkpoint older than one it has already seen.

The server signs every checkpoint's run id and round (shared_model.checkpoint); a careless or
hostile coordinator could still hand a site an older signed checkpoint of the same run (one
before a fix, or one it knows more about). `site finetune` remembers, in the site's state
directory, the newest round it has seen of each run and refuses anything older; `--min-round`
sets a floor by hand.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from shared_model.checkpoint import CheckpointError
from shared_model.data.paths import atomic_write_bytes

SEEN_FILE = "checkpoints-seen.json"


def refuse_rollback(manifest: dict[str, Any], checkpoint: Path, state_dir: Path, min_round: int = 0) -> None:
    """Raise CheckpointError for a checkpoint below `min_round` or older than the newest round of
    its run this site has seen; otherwise remember it as seen."""
    server_round, run_id = int(manifest.get("round", 0)), str(manifest.get("run_id", ""))
    if server_round < min_round:
        raise CheckpointError(f"{checkpoint}: round {server_round} is older than --min-round {min_round}")
    if not run_id:
        return
    path = Path(state_dir) / SEEN_FILE
    seen = json.loads(path.read_text()) if path.exists() else {}
    newest = int(seen.get(run_id, 0))
    if server_round < newest:
        raise CheckpointError(
            f"{checkpoint}: round {server_round} of run {run_id} is older than round {newest}, "
            "which this site has already used (a rollback); pass another --state to override"
        )
    if server_round > newest:
        Path(state_dir).mkdir(parents=True, exist_ok=True, mode=0o700)
        atomic_write_bytes(
            path, (json.dumps({**seen, run_id: server_round}, indent=2, sort_keys=True) + "\n").encode(), mode=0o600
        )
