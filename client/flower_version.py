"""The Flower version the site's own Flower-facing code was written against.

`client/supernode_launcher.py` changes the sleeps of Flower's SuperNode loop and `client/executor.py`
speaks Flower's runtime API with Flower's own task functions, as `flwr-clientapp` does: both were
read from Flower 1.42.0's source, and both refuse another version rather than pass for themselves
on code they were not read against. Standard library only (the launcher runs in the SuperNode's
process, which holds the node key).
"""

from __future__ import annotations

FLOWER_VERSION = "1.42.0"


class UnsupportedFlower(RuntimeError):
    """The installed Flower is not the one this code was written for."""


def require_flower(component: str, fallback: str, version: str | None = None) -> None:
    """Raise UnsupportedFlower unless Flower is FLOWER_VERSION; `fallback` is the option that
    runs Flower's own component instead."""
    if version is None:
        from flwr.supercore.version import package_version as version
    if version != FLOWER_VERSION:
        raise UnsupportedFlower(
            f"{component} was written for Flower {FLOWER_VERSION}, found {version}: re-read Flower's source and "
            f"update it, or join with {fallback}"
        )
