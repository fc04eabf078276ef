"""One array on the wire: a message's arrays travel as a single blob between server and site.

Flower stores and transfers every array of a message as its own object, one HTTPS request each,
and the SuperNode moves them two at a time on a two-core machine: the 27 arrays of the default
model cost seconds per message whatever their size. `pack` joins every array of a message's
content into one byte blob (Flower still splits blobs above its chunk size) with a layout entry;
`unpack` restores the content exactly: the same record and array keys, order, dtypes, shapes and
bytes. Content without arrays, and content that was not packed, pass through unchanged.
"""

from __future__ import annotations

import json

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict

PACKED = "packed-arrays"  # the blob's ArrayRecord (and the key of its one array)
LAYOUT = "packed-arrays-layout"  # ConfigRecord: JSON list of [record, key, dtype, shape, stype, size]


def is_packed(content: RecordDict) -> bool:
    return PACKED in content.array_records


def pack(content: RecordDict) -> RecordDict:
    if not content.array_records or is_packed(content):
        return content
    layout, parts = [], []
    for record_key, record in content.array_records.items():
        for key, array in record.items():
            layout.append([record_key, key, array.dtype, list(array.shape), array.stype, len(array.data)])
            parts.append(array.data)
    packed = RecordDict({k: v for k, v in content.items() if k not in content.array_records})
    packed[PACKED] = ArrayRecord(array_dict={PACKED: Array(np.frombuffer(b"".join(parts), dtype=np.uint8))})
    packed[LAYOUT] = ConfigRecord({"layout": json.dumps(layout)})
    return packed


def unpack(content: RecordDict) -> RecordDict:
    """The content `pack` was given; ValueError when the blob does not match its layout."""
    if not is_packed(content):
        return content
    blob = content.array_records[PACKED][PACKED].numpy().tobytes()
    layout = json.loads(str(content.config_records[LAYOUT]["layout"]))
    if sum(int(entry[5]) for entry in layout) != len(blob):
        raise ValueError("packed arrays: the blob's size does not match its layout")
    records: dict[str, dict[str, Array]] = {}
    offset = 0
    for record_key, key, dtype, shape, stype, size in layout:
        data = blob[offset : offset + int(size)]
        offset += int(size)
        records.setdefault(str(record_key), {})[str(key)] = Array(
            dtype=str(dtype), shape=tuple(int(n) for n in shape), stype=str(stype), data=data
        )
    unpacked = RecordDict({k: v for k, v in content.items() if k not in (PACKED, LAYOUT)})
    for record_key, arrays in records.items():
        unpacked[record_key] = ArrayRecord(array_dict=arrays)
    return unpacked


def arrays_packed_on_the_wire(message: Message, context: Context, call_next) -> Message:
    """ClientApp mod: unpacks a packed message for the handlers and packs their reply in turn
    (a message that came unpacked, such as Flower's SecAgg+ stages, is answered unpacked)."""
    packed = is_packed(message.content) if message.has_content() else False
    if packed:
        message.content = unpack(message.content)
    reply = call_next(message, context)
    if packed and reply.has_content():
        reply.content = pack(reply.content)
    return reply
