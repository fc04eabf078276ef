"""The site's privacy ledger: every private training round it ever ran, in every run.

A site's lifetime epsilon is what its records have been exposed to over all runs, not what one
run's settings claim. So each DP-SGD round is written here *before* it trains (a round that
crashes half-way still counts), as the mechanism it ran: Poisson sampling rate, noise
multiplier, steps, delta. The ledger composes them with the RDP accountant (an upper bound) at
the delta asked for.

On disk (`FileLedger`): one JSON object per line, opened append-only, fsynced, mode 0600, in the
site's state directory; it survives restarts and new runs, and a line that does not parse stops
every private round (fail closed). Simulated sites without a state directory keep the same
entries in Flower's node state (`StateLines`). The same append-only lines keep the site's
activity (client.activity).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from flwr.app import ConfigRecord, Context, RecordDict

from client.node_config import STATE_DIR_KEY
from client.replies import SiteRefusal
from shared_model.data.paths import fsync_directory
from shared_model.training.privacy import epsilon_of_rounds

LEDGER_FILE = "privacy-ledger.jsonl"  # in the site's state directory


@dataclass(frozen=True)
class LedgerEntry:
    run: int
    round: int
    sampling_rate: float
    noise_multiplier: float
    steps: int
    delta: float
    consortium_run: str = ""  # the checkpoints' run id the round belongs to (older entries: unknown)


class Lines:
    """Append-only JSON lines: a file in the site's state directory (deployment: it survives
    restarts and new runs) or Flower's node state (simulation)."""

    def read(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    def append(self, item: dict[str, Any]) -> None:
        raise NotImplementedError


class FileLines(Lines):
    """One JSON object per line, opened append-only, fsynced, mode 0600; a line that does not
    parse refuses everything that depends on the file (fail closed)."""

    def __init__(self, path: Path, what: str) -> None:
        self.path, self.what = Path(path), what

    def read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        items = []
        for number, line in enumerate(self.path.read_text().splitlines(), start=1):
            try:
                item = json.loads(line)
                if not isinstance(item, dict):
                    raise TypeError("not an object")
            except (ValueError, TypeError) as exc:
                raise SiteRefusal(f"this site's {self.what} is unreadable; what depends on it is stopped") from (
                    ValueError(f"{self.path}, line {number}: not an entry ({exc})")
                )
            items.append(item)
        return items

    def append(self, item: dict[str, Any]) -> None:
        new = not self.path.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        descriptor = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(descriptor, (json.dumps(item, sort_keys=True) + "\n").encode())
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        if new:  # the new file's directory entry must survive a crash too
            fsync_directory(self.path.parent)


class StateLines(Lines):
    """The same lines in a simulated node's Flower state (lost with the simulation)."""

    def __init__(self, state: RecordDict, key: str) -> None:
        self.state, self.key = state, key

    def read(self) -> list[dict[str, Any]]:
        record = self.state.config_records.get(self.key)
        return [json.loads(line) for line in record["entries"]] if record is not None else []

    def append(self, item: dict[str, Any]) -> None:
        lines = [json.dumps(i, sort_keys=True) for i in [*self.read(), item]]
        self.state[self.key] = ConfigRecord({"entries": lines})


def lines_of(context: Context, file_name: str, what: str) -> Lines:
    """The site's `file_name` in its state directory in deployment, Flower's node state in simulation."""
    state_dir = context.node_config.get(STATE_DIR_KEY)
    if state_dir:
        return FileLines(Path(str(state_dir)) / file_name, what)
    return StateLines(context.state, file_name)


class Ledger:
    def __init__(self, lines: Lines) -> None:
        self.lines = lines

    def entries(self) -> list[LedgerEntry]:
        try:
            return [LedgerEntry(**item) for item in self.lines.read()]
        except TypeError as exc:
            raise SiteRefusal("this site's privacy ledger is unreadable; what depends on it is stopped") from exc

    def append(self, entry: LedgerEntry) -> None:
        self.lines.append(asdict(entry))

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
        super().__init__(FileLines(path, "privacy ledger"))


def ledger_of(context: Context) -> Ledger:
    """The site's ledger: its state directory's file in deployment, Flower's node state in simulation."""
    return Ledger(lines_of(context, LEDGER_FILE, "privacy ledger"))
