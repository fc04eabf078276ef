"""One array on the wire (shared_model.contract.wire): packing is exact and a tampered blob is refused."""

from __future__ import annotations

import json

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from shared_model.contract.wire import LAYOUT, PACKED, is_packed, pack, unpack


def content() -> RecordDict:
    rng = np.random.default_rng(0)
    return RecordDict(
        {
            "arrays": ArrayRecord([rng.normal(size=(7, 3)).astype(np.float32), np.arange(5), np.array(2.5)]),
            "optimizer": ArrayRecord([rng.normal(size=(4,)).astype(np.float64), np.zeros((0, 3), np.float32)]),
            "config": ConfigRecord({"server-round": 3}),
            "metrics": MetricRecord({"num-examples": 10}),
        }
    )


def test_packing_keeps_every_array_exactly() -> None:
    original = content()
    packed = pack(original)
    assert is_packed(packed) and list(packed.array_records) == [PACKED]
    restored = unpack(packed)
    assert sorted(restored) == sorted(original)
    for name, record in original.array_records.items():
        assert list(restored[name].keys()) == list(record.keys())
        for ours, theirs in zip(restored[name].to_numpy_ndarrays(), record.to_numpy_ndarrays(), strict=True):
            assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
            np.testing.assert_array_equal(ours, theirs)
    assert restored["config"]["server-round"] == 3 and restored["metrics"]["num-examples"] == 10


def test_content_without_arrays_or_not_packed_passes_through() -> None:
    plain = RecordDict({"config": ConfigRecord({"k-anonymity": 11})})
    assert pack(plain) is plain and unpack(plain) is plain
    unpacked = content()
    assert unpack(unpacked) is unpacked


def test_a_blob_that_does_not_match_its_layout_is_refused() -> None:
    packed = pack(content())
    layout = json.loads(str(packed[LAYOUT]["layout"]))
    layout[0][5] += 4  # one array claims more bytes than the blob holds
    packed[LAYOUT] = ConfigRecord({"layout": json.dumps(layout)})
    with pytest.raises(ValueError, match="does not match its layout"):
        unpack(packed)


def test_a_reply_that_does_not_unpack_is_a_failed_site_not_a_failed_round() -> None:
    from flwr.app import Message
    from flwr.supercore.task_identity import TaskIdentity

    from server.exchange import send_and_receive
    from tests.inprocess_grid import InProcessGrid

    def broken_blob(message: Message, context) -> Message:
        """A site whose reply claims more bytes than its blob holds."""
        packed = pack(RecordDict({"arrays": ArrayRecord([np.ones(3, np.float32)])}))
        layout = [["arrays", "0", "float32", [3], "numpy.ndarray", 999]]
        packed[LAYOUT] = ConfigRecord({"layout": json.dumps(layout)})
        return Message(packed, reply_to=message)

    grid = InProcessGrid(broken_blob, [{}, {}])
    TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, 0
    questions = [Message(content(), dst_node_id=node, message_type="train") for node in grid.get_node_ids()]
    replies = send_and_receive(grid, questions)
    assert len(replies) == 2 and all(r.has_error() and "did not unpack" in r.error.reason for r in replies)
    assert sorted(r.metadata.src_node_id for r in replies) == sorted(grid.get_node_ids())
