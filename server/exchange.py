"""Sending a round's messages and collecting the replies: one array on the wire, no 3-second poll.

`Grid.send_and_receive` of Flower's deployed grid sleeps 3 s between polls for replies, so each
exchange waits 1.5 s on average after the last site answered. This polls the same public Grid API
(`push_messages`, `pull_messages`) every tenth of a second, one small request to the local
SuperLink, and sends each message's arrays as one blob (shared_model.contract.wire), which the sites'
ClientApp unpacks and answers in kind. A reply is announced before its objects are all uploaded:
Flower's deployed grid then retries them after 1 s, after 20 ms once the ServerApp has called
`short_object_retries` (shared_model.runtime.flower_pins).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from flwr.app import Error, Message
from flwr.common.constant import ErrorCode
from flwr.serverapp import Grid

from shared_model.contract.wire import pack, unpack
from shared_model.runtime.flower_pins import UnsupportedFlower, require_flower, shorten_object_retries

log = logging.getLogger(__name__)
POLL_SECONDS = 0.1
LOG_EVERY_SECONDS = 60.0  # while replies are awaited, one line a minute says whose


def send_and_receive(grid: Grid, messages: Iterable[Message], *, timeout: float | None = None) -> list[Message]:
    """Every reply to `messages` (an error reply for a site that failed, whose arrays do not
    unpack, or that has not answered within `timeout` seconds: a broken, hostile or silent site
    must not stop or hold the round), as Grid.send_and_receive."""
    outgoing = list(messages)
    for message in outgoing:
        message.content = pack(message.content)
    waiting = set(grid.push_messages(outgoing))
    sent = {message.metadata.message_id: message for message in outgoing}  # ids set by the push
    deadline = time.monotonic() + timeout if timeout is not None else None
    next_log = time.monotonic() + LOG_EVERY_SECONDS
    replies: list[Message] = []
    while waiting:
        arrived = [reply for reply in grid.pull_messages(waiting) if reply.metadata.reply_to_message_id in waiting]
        replies += [_unpacked(reply, sent[reply.metadata.reply_to_message_id]) for reply in arrived]
        waiting -= {reply.metadata.reply_to_message_id for reply in arrived}
        if waiting and deadline is not None and time.monotonic() >= deadline:
            for message_id in sorted(waiting):
                question = sent[message_id]
                log.warning("node %s: no reply within %g s: counted as failed", question.metadata.dst_node_id, timeout)
                replies.append(
                    Message(Error(code=ErrorCode.UNKNOWN, reason=f"no reply within {timeout:g} s"), reply_to=question)
                )
            break
        if waiting and time.monotonic() >= next_log:
            nodes = sorted(sent[message_id].metadata.dst_node_id for message_id in waiting)
            log.info("waiting for %d repl(ies), from node(s) %s (up to %s s)", len(nodes), nodes, timeout or "no limit")
            next_log += LOG_EVERY_SECONDS
        if waiting:
            time.sleep(POLL_SECONDS)
    return replies


def short_object_retries() -> None:
    """Make Flower's deployed grid (HttpGrid) retry a reply's missing objects after 20 ms, on the
    Flower version that was read; on another, Flower's own retries stand (a warning says so).
    Once per ServerApp (server.app): it changes Flower's module for the whole process."""
    from flwr.superlink.grid import http_grid

    try:
        require_flower("the ServerApp's short object retries", "the replies wait Flower's 1 s retries")
        shorten_object_retries(http_grid)
    except UnsupportedFlower as exc:
        log.warning("%s", exc)


def _unpacked(reply: Message, question: Message) -> Message:
    if not reply.has_content():
        return reply
    try:
        reply.content = unpack(reply.content)
    except Exception as exc:  # noqa: BLE001 - whatever a site sent, the round goes on without it
        log.warning("node %s: its reply does not unpack (%s): counted as failed", question.metadata.dst_node_id, exc)
        return Message(Error(code=ErrorCode.UNKNOWN, reason="the reply's arrays did not unpack"), reply_to=question)
    return reply
