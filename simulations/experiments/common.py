"""What every experiment shares: finding the site directories, the federated runner, the keys of
content-keyed run caches (site fingerprints, digests), the "this directory was started with other
settings" check, TOML overrides of an experiment's config, and the checks and Markdown tables of
its report."""

from __future__ import annotations

import hashlib
import html
import json
import tomllib
from dataclasses import fields, replace
from pathlib import Path
from typing import Any, Protocol, TypeVar

import pandas as pd

from shared_model.contract.run_config import FederatedRunConfig
from shared_model.data import DataValidationError

Config = TypeVar("Config")


class FederatedRunner(Protocol):
    """Runs one federated pretraining (the Flower simulation, or a test's in-process grid)."""

    def __call__(
        self, site_dirs: list[Path], settings: FederatedRunConfig, parallel_clients: int, *, adversary: str = ""
    ) -> pd.DataFrame: ...


def default_federated_runner(
    site_dirs: list[Path], settings: FederatedRunConfig, parallel_clients: int, *, adversary: str = ""
) -> pd.DataFrame:
    from simulations.federation.simulation import run_federated_simulation

    return run_federated_simulation(site_dirs, settings, parallel_clients=parallel_clients, adversary=adversary)


def find_sites(data: Path) -> dict[str, Path]:
    """The site MEDS directories under `data` (site-1, site-2, ... or any directory with metadata)."""
    data = Path(data)
    if not data.is_dir():
        raise FileNotFoundError(f"{data}: no such directory (expected one MEDS directory per site inside)")
    sites = {p.name: p for p in sorted(data.iterdir()) if (p / "metadata" / "dataset.json").exists()}
    if len(sites) < 2:
        raise DataValidationError(
            data,
            "at least two site MEDS directories (each with metadata/dataset.json)",
            found=sorted(p.name for p in data.iterdir()),
        )
    return sites


def site_fingerprint(site_dir: Path) -> str:
    """sha256 over every file of a MEDS directory (relative path and content)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(site_dir).rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(site_dir)).encode() + b"\0")
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def content_digest(content: dict[str, Any]) -> str:
    """The key of a cached run: 12 hex digits of sha256 over `content` (the fingerprints of its data
    and every setting that changes it) as sorted JSON. Equal keys: the run would be rebuilt
    identically, so the cached one is used; any change makes a new directory beside it."""
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:12]


def same_settings_or_refuse(path: Path, current: dict[str, Any]) -> None:
    """A directory holds the results of one set of settings: the first time, write `current` to
    `path` (JSON); afterwards refuse any other settings, naming those that differ, rather than mix
    results made under different ones."""
    current = json.loads(json.dumps(current))  # tuples become lists, as read back
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(current, indent=2) + "\n")
        return
    changed = _changed_keys(json.loads(path.read_text()), current)
    if changed:
        raise DataValidationError(
            path,
            "the settings this directory was started with (use a new --out, or delete it)",
            column=", ".join(changed),
        )


def _changed_keys(previous: dict[str, Any], current: dict[str, Any]) -> list[str]:
    changed = []
    for key in sorted(previous.keys() | current.keys()):
        before, after = previous.get(key), current.get(key)
        if isinstance(before, dict) and isinstance(after, dict):
            changed += _changed_keys(before, after)
        elif before != after:
            changed.append(key)
    return changed


def load_toml_overrides(path: Path, base: Config) -> Config:
    """`base` (a frozen dataclass) with the keys of the TOML file at `path`; an unknown key, a wrong
    type or a rejected value is bad input naming the file and the key."""
    try:
        values = tomllib.loads(Path(path).read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise DataValidationError(path, "a TOML file", found=str(exc)) from exc
    known = {f.name for f in fields(base)}
    overrides: dict[str, Any] = {}
    for key, value in values.items():
        name = key.replace("-", "_")
        if name not in known:
            raise DataValidationError(path, f"one of the keys {', '.join(sorted(known))}", column=key)
        current = getattr(base, name)
        if isinstance(current, tuple):
            if not isinstance(value, list):
                raise DataValidationError(path, "a list", column=key, found=value)
            value = tuple(value)
        elif isinstance(current, float) and type(value) is int:
            value = float(value)
        elif type(value) is not type(current):
            raise DataValidationError(path, f"a {type(current).__name__}", column=key, found=value)
        overrides[name] = value
    try:
        return replace(base, **overrides)
    except (ValueError, TypeError) as exc:
        raise DataValidationError(path, "valid experiment settings", found=str(exc)) from exc


UNDECIDED = "undecided"  # a verdict: the interval straddles the claim's threshold at this scale
#: an experiment's claim checked on its own numbers: (claim, verdict, detail); the verdict is True
#: (PASS), False (FAIL), UNDECIDED, or None when the grid has no cell to judge it on
Check = tuple[str, bool | str | None, str]


def check_lines(checks: list[Check]) -> list[str]:
    """The checks as Markdown list items: PASS, FAIL or n/a, the claim, the numbers."""
    return [f"- {_verdict(ok)[1]}: {claim} ({detail})" for claim, ok, detail in checks]


def check_items(checks: list[Check]) -> list[str]:
    """The checks as HTML list items, the verdict styled by html_report's pass/fail classes."""
    items = []
    for claim, ok, detail in checks:
        css, word = _verdict(ok)
        items.append(f"<li><b class='{css}'>{word}</b> {html.escape(claim)} ({html.escape(detail)})</li>")
    return items


def _verdict(ok: bool | str | None) -> tuple[str, str]:
    if ok == UNDECIDED:
        return "undecided", "NOT DECIDED"
    return ("pass", "PASS") if ok is True else ("fail", "FAIL") if ok is False else ("", "n/a")


def markdown_table(frame: pd.DataFrame) -> str:
    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "|".join("---" if i < 2 else "---:" for i in range(len(frame.columns))) + "|"
    body = ["| " + " | ".join(map(str, row)) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def spearman(a: pd.Series, b: pd.Series) -> float:
    """Spearman over the rows where both are known; NaN with fewer than 3."""
    from scipy.stats import spearmanr

    ok = a.notna() & b.notna()
    return float(spearmanr(a[ok], b[ok]).statistic) if ok.sum() >= 3 else float("nan")
