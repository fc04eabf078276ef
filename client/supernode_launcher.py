"""`flower-supernode` with short polls: what `claimpt site join` runs (docs/performance.md).

Flower 1.42's SuperNode sleeps 3 s whenever a poll of the SuperLink finds no message, and waits
for its ClientApp's reply in steps of 0.5 s (flwr/supernode/start_client_internal.py, lines 263,
470 and 506 of the 1.42.0 wheel). A round's train and evaluate messages each arrive while the
SuperNode may be in the 3 s sleep, and each reply is noticed up to 0.5 s late; a message whose
objects are still being uploaded when the SuperNode pulls it is retried after 1 s
(shared_model.runtime.flower_pins): seconds a round that no training pays for. This launcher runs
Flower's own `flower-supernode` entry point with those waits shortened and nothing else changed.

It is written against one Flower version and refuses any other, and refuses a SuperNode module
whose sleeps are not the ones above: a newer Flower may have moved them, and a launcher that
silently changed nothing (or something else) must not pass for this one. `claimpt site join
--stock-supernode` runs Flower's script as shipped.

It runs in the SuperNode's process, which holds the node's private key and checks the signatures
of the bundles it runs: it imports nothing but Flower, the standard library and the project's
standard-library-only pin module, and replaces two module attributes (docs/deployment.md, threat
model).
"""

from __future__ import annotations

import inspect
import sys
import time
from types import ModuleType

from shared_model.runtime.flower_pins import FLOWER_VERSION, UnsupportedFlower, require_flower, shorten_object_retries

IDLE_POLL_SECONDS = 0.25  # Flower: 3 s between polls of the SuperLink that found no message
REPLY_POLL_SECONDS = 0.05  # Flower: 0.5 s between looks for the ClientApp's reply
SHORTENED = {3: IDLE_POLL_SECONDS, 0.5: REPLY_POLL_SECONDS}
EXPECTED_SLEEPS = {"time.sleep(3)": 1, "time.sleep(0.5)": 2}  # in start_client_internal.py, 1.42.0


class ShortPolls:
    """Stands in for the `time` module inside Flower's SuperNode loop: its sleeps of 3 s and 0.5 s
    are shortened; every other attribute is the time module's own."""

    def __getattr__(self, name: str):
        return getattr(time, name)

    @staticmethod
    def sleep(seconds: float) -> None:
        time.sleep(SHORTENED.get(seconds, seconds))


def install(version: str | None = None, module: ModuleType | None = None) -> None:
    """Shorten the SuperNode's polls and object retries, after checking that Flower is the pinned
    version, its loop sleeps exactly where they did in it and it pulls objects with Flower's own
    `pull_objects`."""
    require_flower("the short-poll SuperNode launcher", "join with --stock-supernode", version)
    if module is None:
        from flwr.supernode import start_client_internal as module
    source = inspect.getsource(module)
    found = {call: source.count(call) for call in EXPECTED_SLEEPS}
    if found != EXPECTED_SLEEPS or module.time is not time:
        raise UnsupportedFlower(
            f"Flower's SuperNode loop does not sleep where {FLOWER_VERSION}'s did ({found}, expected "
            f"{EXPECTED_SLEEPS}): join with --stock-supernode"
        )
    shorten_object_retries(module)
    module.time = ShortPolls()


def main() -> None:
    """`python -m client.supernode_launcher ARGS`: `flower-supernode ARGS` with short polls."""
    try:
        install()
    except UnsupportedFlower as exc:
        sys.exit(f"error: {exc}")
    from flwr.supernode.cli import flower_supernode

    sys.argv[0] = "flower-supernode"
    flower_supernode()


if __name__ == "__main__":
    main()
