"""A Flower Grid that delivers messages to real ClientApps in this process (test transport).

The ServerApp logic, strategies and ClientApp are the production ones; only the transport is
replaced, so strategy and fault tests take seconds instead of starting Ray for each. The real
simulation engine and real SuperLink/SuperNodes are exercised by their own tests.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from uuid import uuid4

from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid
from flwr.supercore.task_identity import TaskIdentity


class InProcessGrid(Grid):
    def __init__(
        self,
        client_app: ClientApp,
        node_configs: list[dict],
        run_config: dict | None = None,
        run_id: int = 1,
        first_node: int = 1000,
    ) -> None:
        """`first_node`: the node ids are first_node, first_node + 1, ... (a resumed simulation
        or a restarted SuperLink without registered keys gives the same sites new ones)."""
        self.client_app = client_app
        self.run_id = run_id
        self.node_configs = {first_node + i: config for i, config in enumerate(node_configs)}
        self.run_config = run_config or {}
        self.sent: list[Message] = []  # every reply a client produced, for privacy checks
        self.states = {node: RecordDict() for node in self.node_configs}
        self.waiting: dict[str, Message] = {}  # replies pushed and not yet pulled, by the message they answer
        # Flower stamps every Message with the identity of the task running in this process
        TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, 0

    def get_node_ids(self) -> Iterable[int]:
        return list(self.node_configs)

    def set_run(self, run) -> None:  # pragma: no cover - not used by the server code
        raise NotImplementedError

    @property
    def run(self):  # pragma: no cover
        raise NotImplementedError

    def get_nodes(self):  # pragma: no cover
        raise NotImplementedError

    def create_message(self, *args, **kwargs):  # pragma: no cover
        raise NotImplementedError

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        """Delivers each message at once; its reply waits for `pull_messages`."""
        pushed = []
        for reply in self.send_and_receive(messages):  # `sent` keeps the reply as it crossed the wire
            self.waiting[reply.metadata.reply_to_message_id] = copy.deepcopy(reply)
            pushed.append(reply.metadata.reply_to_message_id)
        return pushed

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self.waiting.pop(i) for i in list(message_ids) if i in self.waiting]

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        replies = []
        for message in messages:
            message.metadata.__dict__["_message_id"] = str(uuid4())
            message.metadata.__dict__["_src_node_id"] = 0
            node = message.metadata.dst_node_id
            context = Context(
                run_id=self.run_id,
                node_id=node,
                node_config=self.node_configs[node],
                state=self.states[node],
                run_config=self.run_config,
            )
            try:  # a copy, as if it had crossed the wire: Flower's client mods modify what they receive
                reply = self.client_app(copy.deepcopy(message), context)
            except Exception as exc:  # noqa: BLE001 - a failing client becomes an error reply, as in Flower
                reply = Message(Error(code=0, reason=f"{type(exc).__name__}: {exc}"), reply_to=message)
            self.sent.append(reply)
            replies.append(reply)
        return replies


def run_inprocess_federation(site_dirs, settings, parallel_clients: int = 1, *, adversary: str = ""):
    """Drop-in for simulations.federation.simulation.run_federated_simulation over this in-process transport."""
    import dataclasses

    import pandas as pd

    from client.app import make_client_app
    from server.federation import run_federation
    from simulations.federation.adversary import AdversaryMod

    settings = dataclasses.replace(settings, data_paths=",".join(str(p) for p in site_dirs))
    app = make_client_app(settings.to_run_config(), mods=[AdversaryMod(adversary)] if adversary else [])
    grid = InProcessGrid(app, [{"partition-id": i} for i in range(len(site_dirs))])
    run_federation(grid, settings)
    return pd.read_csv(f"{settings.run_dir}/rounds.csv")
