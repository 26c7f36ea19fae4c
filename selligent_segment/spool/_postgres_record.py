"""The compact form an emitter writes into the PostgreSQL queue, and the message a relay
makes of it when it leases the row.

``emit`` stores an event as its *record*, ``[now, fields, event, version]`` as JSON: the
emit time (or null when the record has its own timestamp), the normalised fields (an
identify's in their journal form, see :func:`~selligent_segment._record.journal_form`),
the event name the emitter's :class:`EventNaming` gives it (null for an identify, which
has none) and the emitter's library version. That costs the caller one ``orjson.dumps``
instead of the whole message (the messageId's hashing, the timestamp, the message's
JSON: about 25 µs an event), and stores about half the bytes.

Guarantee: :func:`decode` gives, in any process on any host, exactly the message the
emitter would have sent (same messageId, same bytes): what depends on the emitting
process (its event names, its library version) is in the record, and the rest (the
messageId, the timestamp) is derived from the record alone.

A record row is told from a message row by its empty ``message_id``: every message has
one (``enqueue()`` refuses a blank messageId), as in the SQLite spool file; its body, a
JSON array, starts with ``[`` where a message's starts with ``{``.
"""

from __future__ import annotations

from typing import Any

import orjson

from selligent_segment._errors import InvalidEvent
from selligent_segment._limits import MAX_MESSAGE_BYTES
from selligent_segment._mapping import EncodedMessage, encode_fields, too_large
from selligent_segment._naming import EventNaming
from selligent_segment._profile import PROFILE_UPDATE
from selligent_segment._record import EventKind, journal_form, revive
from selligent_segment._version import __version__

__all__ = ["CHECK_SIZE_ABOVE", "QueueRow", "UnreadableRecord", "decode", "record_row"]

#: One row of the queue as written: (tenant, message_id, kind, body). A record's row has
#: an empty message_id and the record as its body; a message's, its messageId and JSON.
QueueRow = tuple[str, str, str, bytes]

#: A record this small always maps to a message under 32 KB (the message holds the
#: record's fields, the email twice, up to 1.5x longer once lower-cased, the event name
#: once, and under 4 KB more); a larger one is encoded at accept, and refused there when
#: its message is over 32 KB. The journal intake's bound (``_journal._CHECK_SIZE_ABOVE``).
CHECK_SIZE_ABOVE = 8 * 1024

_VERSION = __version__
# Event name -> the naming that gives it to every kind, made once per name seen (a
# damaged table could hold many: the cache is cleared at _NAMINGS_MAX).
_namings: dict[str, EventNaming] = {}
_NAMINGS_MAX = 1024
_IDENTIFY_NAMING = EventNaming()  # an identify has no event name: never asked


class UnreadableRecord(InvalidEvent):
    """A record row's body is not a record this release reads (damaged, or written by
    something else): it becomes a dead letter, never a message."""

    def __init__(self, detail: str) -> None:
        super().__init__("record", f"not a record this release reads ({detail})")


def record_row(
    fields: dict[str, Any], tenant: str, now: float | None, naming: EventNaming
) -> QueueRow:
    """The row ``emit`` writes for an accepted record: its record (see the module's
    docstring), or, for a record over :data:`CHECK_SIZE_ABOVE` bytes, its message
    encoded now; InvalidEvent when that message is over 32 KB (refused at accept)."""
    kind: EventKind = fields["type"]
    if PROFILE_UPDATE in fields:
        body = orjson.dumps((now, journal_form(fields), None, _VERSION))
    else:
        body = orjson.dumps((now, fields, naming.name(kind, tenant), _VERSION))
    if len(body) > CHECK_SIZE_ABOVE:
        message = encode_fields(fields, tenant, naming, now)
        return (tenant, message.message_id, kind._value_, message.body)
    return (tenant, "", kind._value_, body)


def _naming_for(event: object) -> EventNaming:
    naming = _namings.get(event) if isinstance(event, str) else None
    if naming is None:
        if not isinstance(event, str):
            raise UnreadableRecord("its event name is not text")
        naming = EventNaming(overrides=dict.fromkeys(EventKind, event))
        if len(_namings) >= _NAMINGS_MAX:
            _namings.clear()
        _namings[event] = naming
    return naming


def decode(tenant: str, body: bytes) -> EncodedMessage:
    """The message of ``tenant``'s record ``body``, exactly as the emitter that wrote it
    would have sent it. :class:`UnreadableRecord` when ``body`` is not a record;
    InvalidEvent when its message is over 32 KB (only a record written by another
    version, whose version string is longer, can be)."""
    try:
        now, raw, event, version = orjson.loads(body)
        fields = revive(raw)
        identify = PROFILE_UPDATE in fields
        if identify != (event is None):
            raise UnreadableRecord("its event name does not match its kind")
        naming = _IDENTIFY_NAMING if identify else _naming_for(event)
        if not (now is None or type(now) is float) or not isinstance(version, str):
            raise UnreadableRecord("its emit time or version is not one")
    except UnreadableRecord:
        raise
    except Exception as exc:  # whatever a damaged record breaks, it is not a message
        raise UnreadableRecord(str(exc)[:200] or type(exc).__name__) from None
    try:
        message = encode_fields(fields, tenant, naming, now)
    except InvalidEvent:
        raise
    except Exception as exc:  # fields that revive() let through but no message holds
        raise UnreadableRecord(f"its fields: {type(exc).__name__}") from None
    if version != _VERSION:
        message = _as_of(message, version)
    return message


def _as_of(message: EncodedMessage, version: str) -> EncodedMessage:
    """``message`` with the library version of the emitter that wrote its record in
    ``context.library`` and ``context.integration`` (a relay of another release decodes
    it). orjson reads back what it wrote exactly (key order, numbers, escapes), so only
    the two versions change."""
    data = orjson.loads(message.body)
    context = data["context"]
    context["library"]["version"] = version
    context["integration"]["version"] = version
    body = orjson.dumps(data)
    if len(body) > MAX_MESSAGE_BYTES:
        raise too_large(data["type"], len(body))
    return EncodedMessage(message.tenant, message.message_id, message.kind, body)
