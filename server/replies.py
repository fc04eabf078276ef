"""What the server takes from a site's reply: exactly the records a reply of its type carries
(shared_model.contract.messages.REPLIES), each parsed by its schema before anything is counted, summed or
aggregated. A reply that does not read is dropped with its reason; it never ends the round."""

from __future__ import annotations

from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord

from shared_model.contract.messages import ARRAYS, METRIC_RECORDS, OPTIONAL, REPLIES
from shared_model.settings import SettingError, settings_from


class ReplyError(ValueError):
    """A reply the server does not take; `str()` is the reason, naming a record or key, never a value."""


def read_reply(message: Message, message_type: str) -> dict[str, Any]:
    """The records of a (non-error) reply to a `message_type` message, by name: each parsed by its
    schema, the ArrayRecord as it is."""
    expected = REPLIES[message_type]
    content = message.content
    names = list(content.keys())
    if len(set(names)) != len(names) or set(names) - set(expected):
        raise ReplyError(f"the {message_type} reply carries records other than {sorted(expected)}")
    missing = set(expected) - set(names) - OPTIONAL
    if missing:
        raise ReplyError(f"the {message_type} reply lacks its {sorted(missing)[0]} record")
    records: dict[str, Any] = {}
    for name in names:
        record, schema = content[name], expected[name]
        if schema == ARRAYS:
            if not isinstance(record, ArrayRecord):
                raise ReplyError(f"the {message_type} reply's {name} record is not an ArrayRecord")
            records[name] = record
        else:
            if not isinstance(record, MetricRecord | ConfigRecord):
                raise ReplyError(f"the {message_type} reply's {name} record is not a record of values")
            if schema in METRIC_RECORDS and not isinstance(record, MetricRecord):  # else the strategy raises
                raise ReplyError(f"the {message_type} reply's {name} record is not a MetricRecord")
            try:
                records[name] = settings_from(schema, dict(record), what=f"{name} record")
            except SettingError as exc:
                raise ReplyError(f"the {message_type} reply's {name} record does not read: {exc.public}") from exc
            except ValueError as exc:
                raise ReplyError(f"the {message_type} reply's {name} record does not read") from exc
    return records
