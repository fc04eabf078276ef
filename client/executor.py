"""The site executor: the site worker takes its SuperNode's tasks itself.

Flower's process isolation has a SuperExec ask the SuperNode's runtime API (127.0.0.1) for each
new task and start a fresh `flwr-clientapp` process for it, which pulls the message, installs the
bundle, loads its ClientApp and pushes the reply. Here the site worker, which already holds
TensorFlow, the site's data and the compiled model, does the SuperExec's and `flwr-clientapp`'s
work in its own process: it asks for tasks with the SuperNode's secret (Flower's SuperExec
authentication), and for each pulls the message through the same runtime API calls
`flwr-clientapp` makes (Flower's own functions), answers it with the site's installed ClientApp
(client.app), and pushes the reply. No process starts per message.

It is also where the site checks, itself, that a run's bundle is one it approved: a bundle whose
signature no key of the site's trusted-entities file verifies is refused before anything of it
runs (the SuperNode checks the same before it makes the task: two independent checks). The code
that answers is always the site's installed ClientApp, never the bundle's.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519
from flwr.app import Context, Error, Message
from flwr.common.constant import ErrorCode, SubStatus
from flwr.common.serde import context_from_proto, fab_from_proto
from flwr.proto.node_pb2 import Node
from flwr.proto.runtime_pb2 import AcquireTaskRequest, PullAppMessagesRequest, PullTaskInputRequest
from flwr.supercore.constant import TaskType
from flwr.supercore.fab import Fab
from flwr.supercore.heartbeat import HeartbeatSender, make_task_heartbeat_fn_http
from flwr.supercore.inflatable.inflatable_protobuf_utils import (
    make_confirm_message_received_fn_protobuf,
    make_pull_object_fn_protobuf,
)
from flwr.supercore.inflatable.inflatable_utils import pull_and_inflate_object_from_tree
from flwr.supercore.interceptors import (
    RuntimeTokenHttpInterceptor,
    RuntimeVersionHttpInterceptor,
    SuperExecAuthHttpInterceptor,
)
from flwr.supercore.retry import make_simple_http_retry_invoker
from flwr.supercore.runtime import RuntimeHttpClient
from flwr.supercore.task_identity import TaskIdentity
from flwr.supernode.runtime.run_clientapp import push_message, push_task_output

from client.replies import errors_stay_at_the_site, write_site_error
from shared_model.contract.app_bundle import bundle_verified
from shared_model.runtime.flower_pins import OBJECT_RETRY_CAP_SECONDS, OBJECT_RETRY_SECONDS, require_flower

log = logging.getLogger(__name__)
TASK_POLL_SECONDS = 0.05  # between asks for a task: a message waits 25 ms on average (Flower's SuperExec: 1 s)
ACQUIRE_METHODS = frozenset({"/flwr.proto.Runtime/AcquireTask"})  # the calls the SuperNode's secret guards
NOT_APPROVED = "refused by the site: the run's app bundle is not one this site approved"

ClientAppCall = Callable[[Message, Context], Message]


class SiteExecutor:
    """Takes the tasks of the SuperNode at `runtime_address` (plain HTTP on 127.0.0.1, the secret
    authenticating this process) and answers each with `app`, one at a time."""

    def __init__(
        self,
        runtime_address: str,
        secret: bytes,
        app: ClientAppCall,
        node_config: dict[str, Any],
        trusted: dict[str, ed25519.Ed25519PublicKey] | None,
    ) -> None:
        self.runtime_address = runtime_address
        self.secret = secret
        self.app = app
        self.node_config = dict(node_config)
        self.trusted = trusted  # None only for an --insecure local test, as for the SuperNode
        require_flower("the site executor", "join with --no-site-worker")

    def _client(self, *interceptors: Any) -> RuntimeHttpClient:
        return RuntimeHttpClient.from_server_address(
            server_address=self.runtime_address,
            insecure=True,  # 127.0.0.1 only; the secret and the per-task token authenticate
            root_certificates=None,
            interceptors=list(interceptors),
            retry_invoker=make_simple_http_retry_invoker(),
        )

    def serve(self, stop: threading.Event) -> None:
        """Ask for a task every TASK_POLL_SECONDS until `stop` is set; a task that fails is
        reported to the SuperNode and never stops the executor."""
        logging.getLogger("httpx").setLevel(logging.WARNING)  # else a line per request, 20 a second
        client = self._client(
            RuntimeVersionHttpInterceptor(component_name="SuperExec"),
            SuperExecAuthHttpInterceptor(master_secret=self.secret, protected_methods=ACQUIRE_METHODS),
        )
        request = AcquireTaskRequest(supported_task_types=[TaskType.CLIENT_APP.value])
        try:
            while not stop.is_set():
                try:
                    acquired = client.AcquireTask(request)
                except Exception as exc:  # noqa: BLE001 - the SuperNode may be starting or gone
                    log.warning("site executor: no task from the SuperNode (%s)", type(exc).__name__)
                    stop.wait(1.0)
                    continue
                if acquired.HasField("task") and acquired.token:
                    try:
                        self.run_task(acquired.token)
                    except Exception as exc:  # noqa: BLE001 - the next task must still be taken
                        log.error("site executor: a task could not be closed (%s)", type(exc).__name__, exc_info=exc)
                    continue  # the next message may be waiting already
                stop.wait(TASK_POLL_SECONDS)
        finally:
            client.close()

    def run_task(self, token: str) -> None:
        """Pull one task's message, answer it, push the reply and the task's end (as `flwr-clientapp`)."""
        client = self._client(
            RuntimeVersionHttpInterceptor(component_name="flwr-clientapp"), RuntimeTokenHttpInterceptor(token)
        )
        heartbeat = HeartbeatSender(make_task_heartbeat_fn_http(client))
        heartbeat.start()
        context: Context | None = None
        status = SubStatus.FAILED
        started = time.perf_counter()
        try:
            message, context, fab = pull_task_input(client)
            pulled = time.perf_counter()
            reply = self.answer(message, context, fab)
            answered = time.perf_counter()
            refused = reply.has_error() and reply.error.code == ErrorCode.INVALID_FAB
            push_message(client, reply, context)
            status = SubStatus.FAILED if refused else SubStatus.COMPLETED
            log.info(  # a round's timeline at the site: docs/performance.md
                "site worker: answered %s of run %d in %.2f s (pulled %.2f s, ClientApp %.2f s, pushed %.2f s)%s",
                message.metadata.message_type,
                context.run_id,
                time.perf_counter() - started,
                pulled - started,
                answered - pulled,
                time.perf_counter() - answered,
                " (error reply)" if reply.has_error() else "",
            )
        except Exception as exc:  # noqa: BLE001 - the runtime API broke off: the SuperNode expires the task
            log.error("site executor: a task failed (%s)", type(exc).__name__, exc_info=exc)
        finally:
            try:
                push_task_output(client, context, status, "" if status == SubStatus.COMPLETED else "not completed")
            finally:
                if heartbeat.is_running:
                    heartbeat.stop()
                client.close()

    def answer(self, message: Message, context: Context, fab: Fab) -> Message:
        """The reply to one task's message: the site's ClientApp answers under the site's own node
        config, and only for a bundle the site's trusted keys signed; whatever it raises leaves as
        a reply that carries no site data (client.replies)."""
        context.node_config = dict(self.node_config)  # the site's own, whatever the task carried
        if self.trusted is not None and not bundle_verified(fab.content, fab.hash_str, fab.verifications, self.trusted):
            reference = secrets.token_hex(6)
            refusal = RuntimeError(f"{NOT_APPROVED} (sha256 {fab.hash_str})")
            write_site_error(context, reference, refusal, "a run's bundle")
            return Message(Error(code=ErrorCode.INVALID_FAB, reason=NOT_APPROVED), reply_to=message)
        return errors_stay_at_the_site(message, context, self.app)


def pull_task_input(client: RuntimeHttpClient) -> tuple[Message, Context, Fab]:
    """A task's message, context and bundle: flwr-clientapp's `pull_task_input` (Flower 1.42.0),
    with a short retry for the message's objects (the SuperNode makes the task before it has
    pulled them from the SuperLink: shared_model.runtime.flower_pins)."""
    task = client.PullTaskInput(PullTaskInputRequest())
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = (
        task.task_id,
        task.run.run_id,
        task.context.node_id,
    )
    context, fab = context_from_proto(task.context), fab_from_proto(task.fab)
    pulled = client.PullMessages(PullAppMessagesRequest())
    if not pulled.messages_list:
        raise RuntimeError("the SuperNode's task carried no message")
    node, tree = Node(node_id=context.node_id), pulled.message_object_trees[0]
    message = pull_and_inflate_object_from_tree(
        tree,
        make_pull_object_fn_protobuf(client.PullObject, node, context.run_id),
        make_confirm_message_received_fn_protobuf(client.ConfirmMessageReceived, node, context.run_id),
        return_type=Message,
        initial_backoff=OBJECT_RETRY_SECONDS,
        backoff_cap=OBJECT_RETRY_CAP_SECONDS,
    )
    message.metadata.__dict__["_message_id"] = tree.object_id  # as Flower does: not part of the deflated message
    return message, context, fab
