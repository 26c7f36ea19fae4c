"""Mapping a callback record to one Segment ``track`` message: pure, no I/O, one place."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

import attrs
import orjson

from selligent_segment._errors import InvalidEvent
from selligent_segment._limits import DEFAULT_TENANT, MAX_MESSAGE_BYTES
from selligent_segment._naming import EventNaming
from selligent_segment._record import (
    _PROPERTY_FIELDS,
    CallbackRecord,
    EventKind,
    format_epoch,
    format_timestamp,
    normalize,
)
from selligent_segment._version import __version__

__all__ = ["MAX_MESSAGE_BYTES", "EncodedMessage", "encode", "message_id", "track_message"]


#: Namespace of the deterministic message ids (UUIDv5). Never change it: replays made
#: by an older version must keep deduplicating against what a newer one sends.
MESSAGE_ID_NAMESPACE = uuid.UUID("5d0b8f52-6a53-5f0e-9a4c-3c8e2f1f7a11")

_NAMESPACE_BYTES = MESSAGE_ID_NAMESPACE.bytes
_VARIANT = {d: "89ab"[int(d, 16) & 3] for d in "0123456789abcdef"}

_LIBRARY = {"name": "selligent-segment", "version": __version__}
_INTEGRATION = {"name": "selligent", "version": __version__}
# The same two dicts as JSON, for the hot path: orjson copies a Fragment's bytes as they
# are instead of walking the dict (track_message's deep copy turns them back into dicts).
_LIBRARY_JSON = orjson.Fragment(orjson.dumps(_LIBRARY))
_INTEGRATION_JSON = orjson.Fragment(orjson.dumps(_INTEGRATION))
_DEFAULT_NAMING = EventNaming()
# Per kind, the spec property fields a normalised record of that kind can hold (the
# others are refused when the record is validated), in canonical order.
_PROPERTY_NAMES = {
    kind: tuple(name for name, kinds in _PROPERTY_FIELDS.items() if kinds is None or kind in kinds)
    for kind in EventKind
}


Record = CallbackRecord | Mapping[str, Any]


def _fields_of(record: Record) -> dict[str, Any]:
    if isinstance(record, CallbackRecord):
        return record._fields
    return normalize(record)


def _tenant_of(fields: Mapping[str, Any], tenant: str | None) -> str:
    if tenant is not None:
        return tenant
    named: str | None = fields.get("tenant")
    return named or DEFAULT_TENANT


# (tenant, kind) -> the namespace and the compact JSON of ``[tenant, kind, "event_id",``:
# an event id's name is this plus orjson.dumps(event_id) and "]", byte for byte what
# orjson.dumps([tenant, kind, "event_id", event_id]) gives. Cleared when it grows large.
_ID_PREFIXES: dict[tuple[str, str], bytes] = {}
_MAX_ID_PREFIXES = 4096
try:  # CPython's own SHA-1: a third cheaper per id than OpenSSL's, whose set-up dominates
    from _sha1 import sha1 as _sha1  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - a Python built without it
    _sha1 = hashlib.sha1


def _new_event_id_prefix(tenant: str, kind: str) -> bytes:
    """Make and remember the ``_ID_PREFIXES`` entry of (tenant, kind) (a cache miss)."""
    if len(_ID_PREFIXES) >= _MAX_ID_PREFIXES:
        _ID_PREFIXES.clear()
    prefix = _NAMESPACE_BYTES + orjson.dumps([tenant, kind, "event_id"])[:-1] + b","
    _ID_PREFIXES[(tenant, kind)] = prefix
    return prefix


def _message_id(fields: Mapping[str, Any], tenant: str) -> str:
    kind: str = fields["type"]._value_  # .value is a Python-level property: 4x slower
    event_id = fields.get("event_id")
    if event_id is not None:
        prefix = _ID_PREFIXES.get((tenant, kind)) or _new_event_id_prefix(tenant, kind)
        data = prefix + orjson.dumps(event_id) + b"]"
    else:
        content = {k: v for k, v in fields.items() if k not in ("tenant", "type")}
        if "timestamp" in content:
            content["timestamp"] = format_timestamp(content["timestamp"])
        name = orjson.dumps([tenant, kind, "content", content], option=orjson.OPT_SORT_KEYS)
        data = _NAMESPACE_BYTES + name
    # A UUIDv5 (RFC 9562 §5.5) formatted by hand: uuid.UUID() costs 5 µs a call here.
    # Version nibble 5; variant bits 10 (the high hex digit of byte 8 becomes 8, 9, a or b).
    h = _sha1(data).hexdigest()
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:32]}"


def message_id(record: Record, tenant: str | None = None) -> str:
    """The deterministic ``messageId`` of ``record`` sent for ``tenant``.

    The same tenant, kind and ``event_id`` always give the same id and another tenant a
    different one; without ``event_id`` the id is derived from the record's content, so a
    replayed identical record gives the same id. A UUIDv5: 36 characters of ``[0-9a-f-]``.
    """
    fields = _fields_of(record)
    return _message_id(fields, _tenant_of(fields, tenant))


def _track(
    fields: Mapping[str, Any], tenant: str, naming: EventNaming, now: datetime | float | None
) -> dict[str, Any]:
    # The hot path: one pass over the fields that are set, dicts built as literals. The
    # context dicts are shared here because the message is serialised at once;
    # track_message() deep-copies.
    extras = fields.get("properties")
    properties: dict[str, Any] = dict(extras) if extras else {}
    for name in _PROPERTY_NAMES[fields["type"]]:  # canonical order, whatever the input's
        if name in fields:
            properties[name] = fields[name]
    email = fields.get("email")
    context: dict[str, Any]
    if email is not None:
        email = email.lower()
        context = {
            "library": _LIBRARY_JSON,
            "integration": _INTEGRATION_JSON,
            "traits": {"email": email},
        }
    else:
        context = {"library": _LIBRARY_JSON, "integration": _INTEGRATION_JSON}
    if "ip" in fields:
        context["ip"] = fields["ip"]
    if "user_agent" in fields:
        context["userAgent"] = fields["user_agent"]
    moment = fields.get("timestamp") or now
    if isinstance(moment, float):  # a POSIX time captured by Emitter.emit
        timestamp = format_epoch(moment)
    else:
        timestamp = format_timestamp(moment or datetime.now(timezone.utc))
    event = naming.name(fields["type"], tenant)
    user_id = fields.get("user_id")
    if user_id is not None:
        return {
            "type": "track",
            "event": event,
            "userId": user_id,
            "properties": properties,
            "context": context,
            "timestamp": timestamp,
            "messageId": _message_id(fields, tenant),
        }
    return {
        "type": "track",
        "event": event,
        "anonymousId": email,
        "properties": properties,
        "context": context,
        "timestamp": timestamp,
        "messageId": _message_id(fields, tenant),
    }


def track_message(
    record: Record,
    *,
    tenant: str | None = None,
    naming: EventNaming = _DEFAULT_NAMING,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The Segment ``track`` message for ``record`` as a dict (see ``docs/events.md``).

    ``record`` is a :class:`CallbackRecord` or its dict form (validated here).
    ``userId`` is the user id when known, otherwise the normalised (trimmed, lower-cased)
    email is the ``anonymousId``; ``context.traits.email`` carries the email whenever known.
    Properties are set only when present; extras sit under the spec's. ``now`` stands in
    for a missing timestamp (default: the current time).
    """
    fields = _fields_of(record)
    message = _track(fields, _tenant_of(fields, tenant), naming, now)
    # A deep copy: the caller may change it without touching the record or later messages.
    result: dict[str, Any] = orjson.loads(orjson.dumps(message))
    return result


@attrs.frozen(slots=True)
class EncodedMessage:
    """One track message serialised once to compact JSON, ready to spool and send.

    Guarantee: ``body`` is valid JSON of at most :data:`MAX_MESSAGE_BYTES` bytes.
    """

    tenant: str
    message_id: str
    kind: EventKind
    body: bytes = attrs.field(repr=lambda b: f"<{len(b)} bytes>")


_new = object.__new__
_slots = vars(EncodedMessage)  # the slot descriptors of its four fields
_set_tenant = _slots["tenant"].__set__
_set_message_id = _slots["message_id"].__set__
_set_kind = _slots["kind"].__set__
_set_body = _slots["body"].__set__


def _new_message(tenant: str, message_id: str, kind: EventKind, body: bytes) -> EncodedMessage:
    """``EncodedMessage(tenant, message_id, kind, body)`` in half the time: the slots are
    filled directly instead of through the frozen class's guarded ``__setattr__``."""
    message: EncodedMessage = _new(EncodedMessage)
    _set_tenant(message, tenant)
    _set_message_id(message, message_id)
    _set_kind(message, kind)
    _set_body(message, body)
    return message


def encode_fields(
    fields: Mapping[str, Any],
    tenant: str,
    naming: EventNaming,
    now: datetime | float | None = None,
) -> EncodedMessage:
    """Map and serialise already-normalised fields; over 32 KB raises InvalidEvent.

    ``now`` (a datetime or a POSIX time) stands in for a missing timestamp.
    """
    message = _track(fields, tenant, naming, now)
    body = orjson.dumps(message)
    if len(body) > MAX_MESSAGE_BYTES:
        raise InvalidEvent(
            "record",
            f"the track message is {len(body)} bytes, over Segment's 32 KB limit "
            f"({MAX_MESSAGE_BYTES} bytes)",
        )
    # orjson's result keeps its 4 KiB initial buffer: copy it to its real size, or every
    # queued message costs ~4 KiB whatever its length (and max_spool_bytes under-counts).
    # A JSON object ends in "}": slice and concatenate is the cheapest exact-size copy
    # (a third of bytes(memoryview(body))).
    return _new_message(tenant, message["messageId"], fields["type"], body[:-1] + b"}")


def encode(
    record: Record,
    *,
    tenant: str | None = None,
    naming: EventNaming = _DEFAULT_NAMING,
    now: datetime | None = None,
) -> EncodedMessage:
    """Map ``record`` and serialise it once; a message over 32 KB raises InvalidEvent."""
    fields = _fields_of(record)
    return encode_fields(fields, _tenant_of(fields, tenant), naming, now)
