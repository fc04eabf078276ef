"""A site refuses to fine-tune on a checkpoint older than one it has already seen.

The server signs every checkpoint's run id and round (shared_model.contract.checkpoint); a careless or
hostile coordinator could still hand a site an older signed checkpoint of the same run (one
before a fix, or one it knows more about). `site finetune` remembers, in the site's state
directory, the newest round it has seen of each run and refuses anything older; `--min-round`
sets a floor by hand. A manifest without a run id or a round is refused: a checkpoint the guard
cannot place is one it cannot protect.

What the guard cannot do: the coordinator holds the signing key, so it can sign a new run id for
old weights, or a higher round number for anything; the guard only keeps one run's rounds in
order at this site. It makes a rollback a deliberate, signed act of the coordinator rather than
a mistake, and the passport (client.passport_check) is the site's check of what was trained.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from shared_model.contract.checkpoint import CheckpointError
from shared_model.data.paths import atomic_write_bytes

SEEN_FILE = "checkpoints-seen.json"


def refuse_rollback(manifest: dict[str, Any], checkpoint: Path, state_dir: Path, min_round: int = 0) -> None:
    """Raise CheckpointError for a checkpoint below `min_round` or older than the newest round of
    its run this site has seen; otherwise remember it as seen."""
    server_round, run_id = manifest.get("round"), manifest.get("run_id")
    if not isinstance(run_id, str) or not 0 < len(run_id) <= 128:
        raise CheckpointError(f"{checkpoint}: the manifest names no run: a federated checkpoint is expected")
    if isinstance(server_round, bool) or not isinstance(server_round, int) or server_round < 1:
        raise CheckpointError(f"{checkpoint}: the manifest names no round: a federated checkpoint is expected")
    if server_round < min_round:
        raise CheckpointError(f"{checkpoint}: round {server_round} is older than --min-round {min_round}")
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


def refuse_untrained(manifest: dict[str, Any], checkpoint: Path) -> None:
    """Raise CheckpointError for a federated checkpoint in which no round trained (every site
    refused, or no update was usable: its weights are the run's random start, signed all the
    same). A manifest that does not say which rounds trained is refused too."""
    trained = manifest.get("rounds_trained")
    if not isinstance(trained, list) or not all(isinstance(r, int) and not isinstance(r, bool) for r in trained):
        raise CheckpointError(f"{checkpoint}: the manifest does not say which rounds trained")
    if not trained:
        raise CheckpointError(
            f"{checkpoint}: no round of its run trained (the weights are the untrained start); "
            "pass --allow-untrained to use it all the same"
        )
