"""How a mapped row (or an event refused at the door) is written into the spool, and read
back when a sender leases it.

One job: the journal payload of a row, ``[tenant, null, {"type", "messageId", "group",
"values"}]``, the same three-part shape as the Emitter's records, so the spool's journal,
its recovery of a dead process's journal and its dead letters work unchanged. The payload
is written once, at acceptance, in the form the wire needs: ``group`` is the row's
``data/load`` request (``[kind, list, keyFields, fields]``, its bytes the same for every
row of that request) and ``values`` the row exactly as it goes into the request body (a
JSON array of strings). The loader stores the payload as the spooled message's body, so
that a lease reads no row, and the transport groups rows by the bytes of ``group`` and
builds a body by joining the bytes of ``values`` (:func:`split_row`): no row is parsed
between acceptance and Selligent. :func:`decode`, the spool's decoder, turns a payload
replayed from a journal (this form, or the older ``list``/``key``/``columns`` one) into
the message a sender posts.

Guarantees: a payload is compact JSON, written once; an event refused at the door is
journaled as a payload carrying ``error`` (its reason) and the event (or, for one no
JSON writer can write, a placeholder saying so), and
:func:`decode` raises :class:`RefusedRow` for it, so even when replayed from a dead
process's journal it ends as a dead letter with its reason, never as a load. No value is
ever in an exception text.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

from selligent_segment._errors import SelligentSegmentError
from selligent_segment._mapping import EncodedMessage
from selligent_segment.destination._mapping import MappedRow

__all__ = [
    "UNSTORABLE_EVENT",
    "RefusedRow",
    "Row",
    "dead_payload",
    "decode",
    "group_of",
    "read_row",
    "row_message",
    "row_payload",
    "split_row",
]


class RefusedRow(SelligentSegmentError):
    """A spooled payload that is a refused event (or unreadable): its reason, for the
    dead letter."""


#: The bytes of each row request's ``group`` (a JSON array), by (kind, list, key, columns).
_GROUPS: dict[tuple[str, str, tuple[str, ...], tuple[str, ...]], orjson.Fragment] = {}
_MAX_GROUPS = 4096


def group_of(
    kind: str, list_name: str, key: tuple[str, ...], columns: tuple[str, ...]
) -> orjson.Fragment:
    """The ``group`` of a row (its request): ``[kind, list, key, columns]`` as JSON, made
    once per distinct request."""
    spec = (kind, list_name, key, columns)
    group = _GROUPS.get(spec)
    if group is None:
        if len(_GROUPS) >= _MAX_GROUPS:  # a config reloaded many times: start again
            _GROUPS.clear()
        group = _GROUPS[spec] = orjson.Fragment(orjson.dumps([kind, list_name, key, columns]))
    return group


def row_payload(row: MappedRow) -> bytes:
    """The journal payload of ``row`` (also its spooled message's body)."""
    return orjson.dumps(
        [
            row.tenant,
            None,
            {
                "type": row.kind,
                "messageId": row.message_id,
                "group": group_of(row.kind, row.list, row.key_fields, row.columns),
                "values": row.values,
            },
        ]
    )


def row_message(row: MappedRow, payload: bytes) -> EncodedMessage:
    """The spooled message of ``row``, whose journal payload is ``payload``."""
    return EncodedMessage(row.tenant, row.message_id, row.kind, payload)


#: What a dead letter holds instead of an event that cannot be written as JSON (nested
#: deeper than the JSON writers allow).
UNSTORABLE_EVENT = "<not stored: the event cannot be written as JSON (nested too deeply)>"


def dead_payload(tenant: str, kind: object, message_id: object, reason: str, event: Any) -> bytes:
    """The journal payload of an event refused at the door (kept as a dead letter).

    Never raises for any event a JSON parser produced, and :func:`decode` always reads
    it back: an event orjson cannot write (nested deeper than its 254 levels, an integer
    beyond 64 bits) is written by the standard library instead, and one that neither can
    write so that it reads back is replaced by :data:`UNSTORABLE_EVENT` (the reason kept).
    """
    fields = {
        "type": kind if isinstance(kind, str) else "unknown",
        "messageId": message_id if isinstance(message_id, str) else "",
        "error": reason,
        "event": event,
    }
    payload = _readable_json([tenant, None, fields])
    if payload is None:
        fields["event"] = UNSTORABLE_EVENT
        payload = orjson.dumps([tenant, None, fields])
    return payload


def _readable_json(value: Any) -> bytes | None:
    """Compact JSON of ``value`` that orjson reads back, or None when there is none."""
    try:
        return orjson.dumps(value, default=str)
    except orjson.JSONEncodeError:
        pass
    try:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
        payload = text.encode("utf-8")
        orjson.loads(payload)  # deeper than orjson reads (1024 levels): not readable
    except (ValueError, TypeError, RecursionError):  # orjson.JSONDecodeError is a ValueError
        return None
    return payload


def decode(payload: bytes | memoryview) -> EncodedMessage:
    """The spooled decoder: a payload replayed from a journal as the message a sender
    leases (a payload of the older form rewritten in this one); raises
    :class:`RefusedRow` for a refused event or an unreadable payload (a dead letter)."""
    try:
        tenant, _, fields = orjson.loads(payload)
        error = fields.get("error")
        kind = fields["type"]
        message_id = fields["messageId"]
        if error is None:
            if "group" in fields:
                split_row(bytes(payload))  # the form split_row reads, or ValueError
                body = bytes(payload)
            else:  # the older form: list, key, columns and values apart
                body = _payload(
                    tenant,
                    kind,
                    message_id,
                    group_of(kind, fields["list"], tuple(fields["key"]), tuple(fields["columns"])),
                    fields["values"],
                )
            if not (isinstance(tenant, str) and isinstance(message_id, str) and message_id):
                raise ValueError
    except Exception:  # damaged: whatever it breaks, it is not a row
        raise RefusedRow("unreadable spooled row") from None
    if error is not None:
        raise RefusedRow(str(error))
    return EncodedMessage(tenant, message_id, kind, body)


def _payload(
    tenant: str, kind: str, message_id: str, group: orjson.Fragment, values: list[str]
) -> bytes:
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise ValueError("not a row")
    fields = {"type": kind, "messageId": message_id, "group": group, "values": values}
    return orjson.dumps([tenant, None, fields])


_GROUP = b',"group":'
_VALUES = b',"values":'
_END = b"]}]"


def split_row(body: bytes) -> tuple[bytes, bytes]:
    """The bytes of ``group`` and of ``values`` in a row's payload (from
    :func:`row_payload`), without parsing it; ValueError if it is not one.

    Sound because ``,"group":`` and ``,"values":`` can only be the payload's own keys: in
    JSON text a ``"`` inside a string is always escaped (``\\"``), and these begin ``,"``.
    """
    g = body.find(_GROUP)
    v = body.find(_VALUES, g)
    if g < 0 or v < 0 or not body.endswith(_END):
        raise ValueError("not a spooled row")
    return body[g + 9 : v], body[v + 10 : -2]


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
    """The row in a message body (a payload from :func:`row_payload`), parsed whole: the
    plain reading :func:`split_row` stands for; ValueError if it is not one."""
    try:
        fields = orjson.loads(body)[2]
        kind, list_name, key, columns = fields["group"]
        return Row(kind, list_name, tuple(key), tuple(columns), fields["values"])
    except Exception:
        raise ValueError("not a spooled row") from None
