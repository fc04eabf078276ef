"""The ClientApp of a deployment (pyproject `clientapp`): hands every message to the site worker.

Flower starts a fresh `flwr-clientapp` process for every message. Importing TensorFlow, reading
and tensorising the site's data and building the model would cost that process ~10 s or more per
message, whatever the data size. `claimpt site join` therefore keeps a site worker (client.worker)
running that holds all of that between messages, and names its Unix socket in the node config;
this app only imports Flower, passes the message and the node's context to the worker and returns
the worker's reply and context. Without a worker in the node config it runs client.app itself.

The socket lives in the site's state directory (0700) and is 0600: only the site's own user can
reach it. Nothing here touches patient data; the worker answers under the site's policy.
"""

from __future__ import annotations

import socket
import struct

from flwr.app import Context, Message
from flwr.clientapp import ClientApp
from flwr.common.serde import context_from_proto, context_to_proto, message_from_proto, message_to_proto
from flwr.proto.message_pb2 import Context as ProtoContext
from flwr.proto.message_pb2 import Message as ProtoMessage

from client.node_config import WORKER_KEY
from client.replies import errors_stay_at_the_site

PROTOCOL = b"claimpt-site-worker/1"
_LENGTH = struct.Struct(">Q")


class SiteWorkerUnavailable(ConnectionError):
    """The site worker could not be reached or broke off (its details stay in the site's log)."""


def send_frames(connection: socket.socket, *frames: bytes) -> None:
    for frame in frames:
        connection.sendall(_LENGTH.pack(len(frame)))
        connection.sendall(frame)


def _receive_exactly(connection: socket.socket, size: int) -> bytes:
    buffer = bytearray(size)
    view, received = memoryview(buffer), 0
    while received < size:
        n = connection.recv_into(view[received:], size - received)
        if n == 0:
            raise SiteWorkerUnavailable("the connection closed mid-frame")
        received += n
    return bytes(buffer)


def receive_frame(connection: socket.socket) -> bytes:
    (size,) = _LENGTH.unpack(_receive_exactly(connection, _LENGTH.size))
    return _receive_exactly(connection, size)


def encode(message: Message, context: Context) -> tuple[bytes, bytes]:
    return message_to_proto(message).SerializeToString(), context_to_proto(context).SerializeToString()


def decode(message: bytes, context: bytes) -> tuple[Message, Context]:
    message_proto, context_proto = ProtoMessage(), ProtoContext()
    message_proto.ParseFromString(message)
    context_proto.ParseFromString(context)
    return message_from_proto(message_proto), context_from_proto(context_proto)


def ask_worker(socket_path: str, message: Message, context: Context) -> Message:
    """The worker's reply to `message`; `context.state` becomes the worker's (Flower keeps it for
    the node's next message)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
        try:
            connection.connect(socket_path)
        except OSError as exc:
            raise SiteWorkerUnavailable("no site worker listens on the node config's socket") from exc
        send_frames(connection, PROTOCOL, *encode(message, context))
        status = receive_frame(connection)
        if status != b"ok":
            raise SiteWorkerUnavailable(receive_frame(connection).decode(errors="replace"))
        reply, updated = decode(receive_frame(connection), receive_frame(connection))
    context.state.clear()  # in place: the caller keeps this object for the node's next message
    context.state.update(updated.state)
    return reply


class SiteClientApp(ClientApp):
    """Relays to the site worker named in the node config, or runs client.app in this process."""

    def __call__(self, message: Message, context: Context) -> Message:
        socket_path = context.node_config.get(WORKER_KEY)
        if not socket_path:
            from client.app import app as in_process

            return in_process(message, context)
        return errors_stay_at_the_site(message, context, lambda m, c: ask_worker(str(socket_path), m, c))


app = SiteClientApp()
