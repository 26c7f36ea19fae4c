"""Mapping a callback record to one Segment ``track`` message: pure, no I/O, one place."""

from __future__ import annotations

import operator
import sys
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import Any, NamedTuple

import orjson

from selligent_segment._errors import InvalidEvent
from selligent_segment._limits import DEFAULT_TENANT, MAX_MESSAGE_BYTES
from selligent_segment._naming import EventNaming
from selligent_segment._profile import PROFILE_UPDATE
from selligent_segment._record import _PROPERTY_FIELDS, CallbackRecord, EventKind, normalize
from selligent_segment._shortcuts import (
    compiled_twins,
    exact_copy,
    format_epoch,
    format_timestamp,
    frozen_tuple_class,
    json_array_uuid5,
    json_fragment,
    tuple_maker,
)
from selligent_segment._version import __version__

__all__ = [
    "MAX_MESSAGE_BYTES",
    "EncodedMessage",
    "encode",
    "message_id",
    "profile_message",
    "too_large",
    "track_message",
]


#: Namespace of the deterministic message ids (UUIDv5). Never change it: replays made
#: by an older version must keep deduplicating against what a newer one sends.
MESSAGE_ID_NAMESPACE = uuid.UUID("5d0b8f52-6a53-5f0e-9a4c-3c8e2f1f7a11")

_event_id_uuid5 = json_array_uuid5(MESSAGE_ID_NAMESPACE, "event_id")
_content_uuid5 = json_array_uuid5(MESSAGE_ID_NAMESPACE, "content", sort_keys=True)
_profile_uuid5 = json_array_uuid5(MESSAGE_ID_NAMESPACE, "profile_update")

_LIBRARY = {"name": "selligent-segment", "version": __version__}
_INTEGRATION = {"name": "selligent", "version": __version__}
# The same two dicts serialised once, for encoding (track_message's deep copy turns them
# back into dicts).
_LIBRARY_JSON = json_fragment(_LIBRARY)
_INTEGRATION_JSON = json_fragment(_INTEGRATION)
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


def _message_id(fields: Mapping[str, Any], tenant: str) -> str:
    """The record's ``messageId``: the UUIDv5, in :data:`MESSAGE_ID_NAMESPACE`, of the
    compact JSON of ``[tenant, kind, "event_id", event_id]``, or, without an event id, of
    ``[tenant, kind, "content", the other fields]`` (keys sorted, the timestamp as sent;
    ``integrations`` and ``context`` left out)."""
    kind: str = fields["type"]._value_  # .value is a Python-level property: 4x slower
    event_id = fields.get("event_id")
    if event_id is not None:
        return _event_id_uuid5(tenant, kind, event_id)
    content = dict(fields)  # (5,000 instructions fewer than a dict comprehension)
    del content["type"]
    content.pop("tenant", None)
    content.pop("integrations", None)  # routing and annotations, not the event: a replay
    content.pop("context", None)  # that changes them keeps its id
    if "timestamp" in content:
        content["timestamp"] = format_timestamp(content["timestamp"])
    return _content_uuid5(tenant, kind, content)


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
    kind: EventKind = fields["type"]
    extras = fields.get("properties")
    properties: dict[str, Any] = dict(extras) if extras else {}
    for name in _PROPERTY_NAMES[kind]:  # canonical order, whatever the input's
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
    if "context" in fields:
        context = _with_context(context, fields["context"])
    moment = fields.get("timestamp") or now
    if isinstance(moment, float):  # a POSIX time captured by Emitter.emit
        timestamp = format_epoch(moment)
    else:
        timestamp = format_timestamp(moment or datetime.now(timezone.utc))
    # naming.name(kind, tenant), without the call when no tenant has names of its own
    # (1,400 instructions against 300; tests/test_mapping_properties.py checks them equal).
    event = naming.name(kind, tenant) if naming.tenant_overrides else naming._names[kind]
    event_id = fields.get("event_id")
    if event_id is not None:  # _message_id(fields, tenant), one call fewer
        message_uuid = _event_id_uuid5(tenant, kind._value_, event_id)
    else:
        message_uuid = _message_id(fields, tenant)
    user_id = fields.get("user_id")
    if user_id is not None:
        message = {
            "type": "track",
            "event": event,
            "userId": user_id,
            "properties": properties,
            "context": context,
            "timestamp": timestamp,
            "messageId": message_uuid,
        }
    else:
        message = {
            "type": "track",
            "event": event,
            "anonymousId": email,
            "properties": properties,
            "context": context,
            "timestamp": timestamp,
            "messageId": message_uuid,
        }
    if "integrations" in fields:
        message["integrations"] = fields["integrations"]
    return message


def _with_context(own: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """The message's ``context``: the library's fields (``own``), then the record's extra
    ones; ``traits`` from both merged (the record may not set ``traits.email``, nor any key
    of ``own`` but ``traits``: normalize refuses them)."""
    merged = dict(own)
    for key, value in extra.items():
        if key == "traits" and "traits" in own:
            merged["traits"] = {**value, **own["traits"]}
        else:
            merged[key] = value
    return merged


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
    Properties are set only when present; extras sit under the spec's. The record's
    ``context`` fields are added to the library's, its ``integrations`` sent as they are.
    ``now`` stands in for a missing timestamp (default: the current time).
    """
    fields = _fields_of(record)
    message = _track(fields, _tenant_of(fields, tenant), naming, now)
    # A deep copy: the caller may change it without touching the record or later messages.
    result: dict[str, Any] = orjson.loads(orjson.dumps(message))
    return result


class _EncodedFields(NamedTuple):
    tenant: str
    message_id: str
    kind: EventKind | str
    body: bytes


@frozen_tuple_class
class EncodedMessage(_EncodedFields):
    """One message (a track, or the identify of a profile update) serialised once to
    compact JSON, ready to spool and send; ``kind`` is its record's kind.

    Guarantee: ``body`` is valid JSON of at most :data:`MAX_MESSAGE_BYTES` bytes.
    ``kind`` is an :class:`EventKind` here; another producer sharing the spool (the
    destination's rows: ``identify``/``track``) may put its own kind as text.

    Immutable (setting a field raises ``attrs.exceptions.FrozenInstanceError``); equal to
    another message with the same fields and to nothing else (not to a plain tuple),
    hashable, not ordered; its repr gives the body's length, not the body. A tuple
    underneath (:func:`_shortcuts.frozen_tuple_class`): built in C, half what a slotted attrs
    instance costs per message.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        tenant, message_id, kind, body = self
        return (
            f"EncodedMessage(tenant={tenant!r}, message_id={message_id!r}, kind={kind!r}, "
            f"body=<{len(body)} bytes>)"
        )


_make_message = tuple_maker(EncodedMessage)
#: A message's ``body``, ``tenant`` and ``message_id`` as C functions: ``map(BODY_OF,
#: messages)`` walks a batch in C, where a generator expression steps a Python frame per
#: message (about 600 instructions a message against 150).
BODY_OF = operator.attrgetter("body")
TENANT_OF = operator.attrgetter("tenant")
MESSAGE_ID_OF = operator.attrgetter("message_id")


def _new_message(
    tenant: str, message_id: str, kind: EventKind | str, body: bytes
) -> EncodedMessage:
    """``EncodedMessage(tenant, message_id, kind, body)``, without its Python ``__new__``."""
    return _make_message((tenant, message_id, kind, body))


def _identify(
    fields: Mapping[str, Any], update: Mapping[str, Any], tenant: str, now: datetime | float | None
) -> dict[str, Any]:
    """The ``identify`` of a record's profile update (see ``_profile.py``): the record's
    identity, the update's traits (and the event's time under its ``at`` name), the
    record's ``integrations`` (the caller's routing holds for the identify too), and a
    ``messageId`` derived from the track's, so a replay deduplicates too. Its ``context``
    is the library's only: the record's ``context``, ``ip`` and ``user_agent`` describe
    the event and go with the track."""
    record = dict(fields)
    del record[PROFILE_UPDATE]
    kind: EventKind = record["type"]
    track_id = _message_id(record, tenant)
    moment = record.get("timestamp") or now
    if isinstance(moment, float):
        timestamp = format_epoch(moment)
    else:
        timestamp = format_timestamp(moment or datetime.now(timezone.utc))
    traits: dict[str, Any] = {}
    email = record.get("email")
    if email is not None:
        email = email.lower()
        traits["email"] = email
    traits.update(update["traits"])
    if update.get("at"):
        traits[update["at"]] = timestamp
    message: dict[str, Any] = {"type": "identify"}
    user_id = record.get("user_id")
    if user_id is not None:
        message["userId"] = user_id
    else:
        message["anonymousId"] = email
    message["traits"] = traits
    message["context"] = {"library": _LIBRARY_JSON, "integration": _INTEGRATION_JSON}
    message["timestamp"] = timestamp
    message["messageId"] = _profile_uuid5(tenant, kind._value_, track_id)
    if "integrations" in record:
        message["integrations"] = record["integrations"]
    return message


def profile_message(
    record: Record,
    update: Mapping[str, Any],
    *,
    tenant: str | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The ``identify`` the Emitter sends beside ``record``'s track when profile updates
    are on; ``update`` is what :meth:`ProfileUpdates.update_for` returned for it. Its
    ``messageId`` is the UUIDv5 of ``[tenant, kind, "profile_update", <the track's
    messageId>]``: deterministic, and never equal to a track's. It carries the record's
    ``integrations`` as the track does; its ``context`` is the library's only."""
    fields = dict(_fields_of(record))
    fields[PROFILE_UPDATE] = update
    message = _identify(fields, update, _tenant_of(fields, tenant), now)
    result: dict[str, Any] = orjson.loads(orjson.dumps(message))
    return result


def plain_encode_fields(
    fields: Mapping[str, Any],
    tenant: str,
    naming: EventNaming,
    now: datetime | float | None = None,
) -> EncodedMessage:
    """Map and serialise already-normalised fields; over 32 KB raises InvalidEvent.

    The plain path of :data:`encode_fields`, which is this function or its compiled twin.

    ``now`` (a datetime or a POSIX time) stands in for a missing timestamp. Fields that
    carry a profile update (the Emitter adds them, with profile updates on, beside the
    record's own) become its ``identify`` instead of a track.
    """
    update = fields.get(PROFILE_UPDATE)
    if update is None:
        message = _track(fields, tenant, naming, now)
    else:
        message = _identify(fields, update, tenant, now)
    body = orjson.dumps(message)
    if len(body) > MAX_MESSAGE_BYTES:
        raise too_large(message["type"], len(body))
    # orjson's result keeps its 4 KiB initial buffer: copy it to its real size, or every
    # queued message costs ~4 KiB whatever its length (and max_spool_bytes under-counts).
    return _make_message((tenant, message["messageId"], fields["type"], exact_copy(body)))


def unencodable(exc: Exception) -> InvalidEvent:
    """The error for a record whose message could not be written as JSON for a reason no
    check foresaw (``exc``, named by its type only: its text could hold a value)."""
    return InvalidEvent("record", f"cannot be written as JSON ({type(exc).__name__})")


class TooLarge(InvalidEvent):
    """An :class:`InvalidEvent` for a message over Segment's 32 KB limit (the field is
    ``record``): told apart from a record that cannot be read."""


def too_large(message_type: str, size: int) -> InvalidEvent:
    """The error for a ``message_type`` message of ``size`` bytes, over Segment's 32 KB."""
    return TooLarge(
        "record",
        f"the {message_type} message is {size} bytes, over Segment's 32 KB limit "
        f"({MAX_MESSAGE_BYTES} bytes)",
    )


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


#: What :data:`encode_fields` is: ``(fields, tenant, naming, now) -> EncodedMessage``.
EncodeFields = Callable[
    [Mapping[str, Any], str, EventNaming, datetime | float | None], EncodedMessage
]
_twins = compiled_twins()
#: Map and serialise already-normalised fields (:func:`plain_encode_fields`, compiled where
#: it was built: the same messages and errors, see ``_compiled.pyx``).
encode_fields: EncodeFields = (
    _twins.encode_twin(sys.modules[__name__]) if _twins is not None else plain_encode_fields
)
