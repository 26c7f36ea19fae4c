"""How a mapped row (or an event refused at the door) is written into the spool, and read
back when a sender leases it.

One job: the journal payload of a row, ``[tenant, null, {"type", "list", "key",
"columns", "values", "messageId"}]``, the same three-part shape as the Emitter's records,
so the spool's journal, its recovery of a dead process's journal and its dead letters
work unchanged; and :func:`decode`, the spool's decoder, which turns a payload back into
the message a sender posts (the payload itself is the body the loader's transport reads).

Guarantees: a payload is compact JSON, written once; an event refused at the door is
journaled as a payload carrying ``error`` (its reason) and the event, and
:func:`decode` raises :class:`RefusedRow` for it, so even when replayed from a dead
process's journal it ends as a dead letter with its reason, never as a load. No value is
ever in an exception text.
"""

from __future__ import annotations

from typing import Any

import orjson

from selligent_segment._errors import SelligentSegmentError
from selligent_segment._mapping import EncodedMessage
from selligent_segment.destination._mapping import MappedRow

__all__ = ["RefusedRow", "Row", "dead_payload", "decode", "read_row", "row_payload"]


class RefusedRow(SelligentSegmentError):
    """A spooled payload that is a refused event (or unreadable): its reason, for the
    dead letter."""


def row_payload(row: MappedRow) -> bytes:
    """The journal payload of ``row``."""
    return orjson.dumps(
        [
            row.tenant,
            None,
            {
                "type": row.kind,
                "list": row.list,
                "key": row.key_fields,
                "columns": row.columns,
                "values": row.values,
                "messageId": row.message_id,
            },
        ]
    )


def dead_payload(tenant: str, kind: object, message_id: object, reason: str, event: Any) -> bytes:
    """The journal payload of an event refused at the door (kept as a dead letter)."""
    return orjson.dumps(
        [
            tenant,
            None,
            {
                "type": kind if isinstance(kind, str) else "unknown",
                "messageId": message_id if isinstance(message_id, str) else "",
                "error": reason,
                "event": event,
            },
        ],
        default=str,
    )


def decode(payload: bytes | memoryview) -> EncodedMessage:
    """The spool's decoder: a payload as the message a sender leases; raises
    :class:`RefusedRow` for a refused event or an unreadable payload (a dead letter)."""
    try:
        tenant, _, fields = orjson.loads(payload)
        error = fields.get("error")
        kind = fields["type"]
        message_id = fields["messageId"]
    except Exception:  # damaged: whatever it breaks, it is not a row
        raise RefusedRow("unreadable spooled row") from None
    if error is not None:
        raise RefusedRow(str(error))
    return EncodedMessage(tenant, message_id, kind, bytes(payload))


class Row:
    """A leased row as the transport needs it (read from a message body)."""

    __slots__ = ("columns", "key", "kind", "list", "values")

    def __init__(
        self,
        kind: str,
        list_name: str,
        key: tuple[str, ...],
        columns: tuple[str, ...],
        values: list[str],
    ) -> None:
        self.kind = kind
        self.list = list_name
        self.key = key
        self.columns = columns
        self.values = values


def read_row(body: bytes) -> Row:
    """The row in a message body (a payload from :func:`row_payload`); ValueError if
    it is not one."""
    try:
        fields = orjson.loads(body)[2]
        return Row(
            fields["type"],
            fields["list"],
            tuple(fields["key"]),
            tuple(fields["columns"]),
            fields["values"],
        )
    except Exception:
        raise ValueError("not a spooled row") from None
