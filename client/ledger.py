"""The site's privacy ledger: every private training round it ever ran, in every run.

A site's lifetime epsilon is what its records have been exposed to over all runs, not what one
run's settings claim. So each DP-SGD round is written here *before* it trains (a round that
crashes half-way still counts), as the mechanism it ran: Poisson sampling rate, noise
multiplier, steps, delta. The ledger composes them with the RDP accountant (an upper bound) at
the delta asked for.

On disk (`FileLedger`): one JSON object per line, opened append-only, fsynced, mode 0600, in the
site's state directory; it survives restarts and new runs, and a line that does not parse stops
every private round (fail closed). Simulated sites without a state directory keep the same
entries in Flower's node state (`StateLedger`).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from flwr.app import ConfigRecord, Context, RecordDict

from client.node_config import STATE_DIR_KEY
from client.replies import SiteRefusal
from shared_model.data.paths import fsync_directory
from shared_model.privacy import epsilon_of_rounds

LEDGER_FILE = "privacy-ledger.jsonl"  # in the site's state directory


@dataclass(frozen=True)
class LedgerEntry:
    run: int
    round: int
    sampling_rate: float
    noise_multiplier: float
    steps: int
    delta: float


class Ledger:
    def entries(self) -> list[LedgerEntry]:
        raise NotImplementedError

    def append(self, entry: LedgerEntry) -> None:
        raise NotImplementedError

    def epsilon(
        self,
        delta: float,
        *,
        run: int | None = None,
        through_round: int | None = None,
        extra: LedgerEntry | None = None,
    ) -> float:
        """Epsilon at `delta` of every entry (of `run` only, and up to `through_round`, when
        given), plus `extra`."""
        chosen = [
            e
            for e in self.entries()
            if (run is None or e.run == run) and (through_round is None or e.round <= through_round)
        ] + ([extra] if extra else [])
        return epsilon_of_rounds([(e.sampling_rate, e.noise_multiplier, e.steps) for e in chosen], delta)

    def rounds_in(self, run: int) -> int:
        return sum(e.run == run for e in self.entries())


class FileLedger(Ledger):
    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def entries(self) -> list[LedgerEntry]:
        if not self.path.exists():
            return []
        entries = []
        for number, line in enumerate(self.path.read_text().splitlines(), start=1):
            try:
                entries.append(LedgerEntry(**json.loads(line)))
            except (ValueError, TypeError) as exc:
                raise SiteRefusal("this site's privacy ledger is unreadable; private training is stopped") from (
                    ValueError(f"{self.path}, line {number}: not a ledger entry ({exc})")
                )
        return entries

    def append(self, entry: LedgerEntry) -> None:
        new = not self.path.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        descriptor = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(descriptor, (json.dumps(asdict(entry), sort_keys=True) + "\n").encode())
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        if new:  # the new file's directory entry must survive a crash too
            fsync_directory(self.path.parent)


class StateLedger(Ledger):
    """The same entries in a simulated node's Flower state (lost with the simulation)."""

    KEY = "privacy-ledger"

    def __init__(self, state: RecordDict) -> None:
        self.state = state

    def entries(self) -> list[LedgerEntry]:
        record = self.state.config_records.get(self.KEY)
        return [LedgerEntry(**json.loads(line)) for line in record["entries"]] if record is not None else []

    def append(self, entry: LedgerEntry) -> None:
        lines = [json.dumps(asdict(e), sort_keys=True) for e in [*self.entries(), entry]]
        self.state[self.KEY] = ConfigRecord({"entries": lines})


def ledger_of(context: Context) -> Ledger:
    """The site's ledger: its state directory's file in deployment, Flower's node state in simulation."""
    state_dir = context.node_config.get(STATE_DIR_KEY)
    return FileLedger(Path(str(state_dir)) / LEDGER_FILE) if state_dir else StateLedger(context.state)
