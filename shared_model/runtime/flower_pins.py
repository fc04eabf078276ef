"""What this project reads from or changes in Flower's internals, pinned to the version it was read from.

The site's short-poll SuperNode launcher (client/supernode_launcher.py) shortens sleeps of
Flower's SuperNode loop; the site executor (client/executor.py) speaks Flower's runtime API with
Flower's own task functions, as `flwr-clientapp` does; and the SuperNode, the site executor and the
ServerApp each pull a message's objects with Flower's `pull_objects`, which retries an object that
has not arrived yet after 1 s, doubling to 10 s. A message is announced before its objects are
all uploaded, so a reader that asks at once waits that second: here it retries after 20 ms,
doubling to 1 s. All of it was read from Flower 1.42.0's source, and each refuses another version
rather than pass for itself on code it was not read against.

Standard library only, and Flower imported only when called: the launcher runs in the SuperNode's
process, which holds the node key.
"""

from __future__ import annotations

import functools
from types import ModuleType

FLOWER_VERSION = "1.42.0"
OBJECT_RETRY_SECONDS = 0.02  # Flower: 1 s
OBJECT_RETRY_CAP_SECONDS = 1.0  # Flower: 10 s


class UnsupportedFlower(RuntimeError):
    """The installed Flower is not the one this code was written for."""


def require_flower(component: str, fallback: str, version: str | None = None) -> None:
    """Raise UnsupportedFlower unless Flower is FLOWER_VERSION; `fallback` says what runs Flower's
    own component instead."""
    if version is None:
        from flwr.supercore.version import package_version as version
    if version != FLOWER_VERSION:
        raise UnsupportedFlower(
            f"{component} was written for Flower {FLOWER_VERSION}, found {version}: re-read Flower's source and "
            f"update it, or {fallback}"
        )


def shorten_object_retries(module: ModuleType) -> None:
    """Make `module`'s calls of Flower's `pull_objects` retry a missing object after
    OBJECT_RETRY_SECONDS; nothing else about them changes. Refused where `module` does not call
    Flower's own `pull_objects` by that name; a second call changes nothing."""
    from flwr.supercore.inflatable.inflatable_utils import pull_objects

    current = getattr(module, "pull_objects", None)
    if isinstance(current, functools.partial) and current.func is pull_objects:
        return
    if current is not pull_objects:
        raise UnsupportedFlower(f"{module.__name__} does not call Flower {FLOWER_VERSION}'s pull_objects")
    module.pull_objects = functools.partial(
        pull_objects, initial_backoff=OBJECT_RETRY_SECONDS, backoff_cap=OBJECT_RETRY_CAP_SECONDS
    )
