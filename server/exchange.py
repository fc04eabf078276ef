"""Sending a round's messages and collecting the replies: one array on the wire, no 3-second poll.

`Grid.send_and_receive` of Flower's deployed grid sleeps 3 s between polls for replies, so each
exchange waits 1.5 s on average after the last site answered. This polls the same public Grid API
(`push_messages`, `pull_messages`) every quarter of a second, one small request to the local
SuperLink, and sends each message's arrays as one blob (shared_model.wire), which the sites'
ClientApp unpacks and answers in kind.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from flwr.app import Message
from flwr.serverapp import Grid

from shared_model.wire import pack, unpack

POLL_SECONDS = 0.25


def send_and_receive(grid: Grid, messages: Iterable[Message]) -> list[Message]:
    """Every reply to `messages` (an error reply for a site that failed), as Grid.send_and_receive."""
    outgoing = list(messages)
    for message in outgoing:
        message.content = pack(message.content)
    waiting = set(grid.push_messages(outgoing))
    replies: list[Message] = []
    while waiting:
        arrived = list(grid.pull_messages(waiting))
        for reply in arrived:
            if reply.has_content():
                reply.content = unpack(reply.content)
        replies += arrived
        waiting -= {reply.metadata.reply_to_message_id for reply in arrived}
        if waiting:
            time.sleep(POLL_SECONDS)
    return replies
