"""A training round under SecAgg+ (Bell et al. 2020): the server learns only the sum of the
sites' models, never one site's.

Flower 1.42 implements SecAgg+ only as a workflow of its legacy API (SecAggPlusWorkflow with a
LegacyContext and a legacy strategy) and the ClientApp mod `secaggplus_mod`; our ServerApp runs
its own rounds with the Message API. So this module runs one round of that workflow on our grid,
with a legacy FedAvg that averages the already-summed result, and hands the model back. The rest
of the run (vocabulary round, federated evaluation, checkpoints, resume) is unchanged.

What SecAgg+ rules out, by design: update validation, robust aggregation (FedMedian, Krum, ...)
and server-side client-level DP clipping all need individual updates. Record-level DP-SGD at the
sites composes with it. Sites are weighted equally: SecAgg+ quantises weight x parameters into
a fixed range, and patient-count weights (thousands) would cost that quantisation its precision.
"""

from __future__ import annotations

import logging
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Context, RecordDict
from flwr.server import ServerConfig
from flwr.server.client_manager import SimpleClientManager
from flwr.server.compat.grid_client_proxy import GridClientProxy
from flwr.server.compat.legacy_context import LegacyContext
from flwr.server.strategy import FedAvg as LegacyFedAvg
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD, Key
from flwr.serverapp import Grid

from shared_model.contract.run_config import SECAGG_CLIPPING_RANGE

log = logging.getLogger(__name__)


def secure_train_round(
    grid: Grid, server_round: int, arrays: ArrayRecord, config: dict[str, Any], num_rounds: int, min_sites: int
) -> ArrayRecord | None:
    """One SecAgg+ training round over every connected site; None if it halted (too few sites)."""
    node_ids = sorted(grid.get_node_ids())
    strategy = LegacyFedAvg(
        min_fit_clients=min_sites,
        min_available_clients=min_sites,
        fraction_evaluate=0.0,
        on_fit_config_fn=lambda rnd: {**config, "server-round": rnd},
    )
    clients = SimpleClientManager()
    for node_id in node_ids:
        clients.register(GridClientProxy(node_id, grid, run_id=0))
    context = LegacyContext(
        Context(run_id=0, node_id=0, node_config={}, state=RecordDict(), run_config={}),
        config=ServerConfig(num_rounds=num_rounds),
        strategy=strategy,
        client_manager=clients,
    )
    context.state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord({Key.CURRENT_ROUND: server_round})
    context.state.array_records[MAIN_PARAMS_RECORD] = arrays
    workflow = SecAggPlusWorkflow(
        num_shares=1.0,
        reconstruction_threshold=max(2, min_sites - 1),
        max_weight=1.0,
        clipping_range=SECAGG_CLIPPING_RANGE,
    )
    workflow(grid, context)
    result = context.state.array_records[MAIN_PARAMS_RECORD]
    if result is arrays:
        log.warning("round %d: secure aggregation halted; the global model is kept", server_round)
        return None
    return result
