"""The callback record: what the mail platform's hooks hand to the library.

A :class:`CallbackRecord` is validated when it is built, whether from Python keyword
arguments or from a dict (:meth:`CallbackRecord.from_dict`, the JSON Lines format).
Every refusal raises :class:`~selligent_segment.InvalidEvent` naming the field.
"""

from __future__ import annotations

import enum
import ipaddress
import math
import re
import sys
import time
import unicodedata
import uuid
from collections.abc import Callable, Mapping
from datetime import date, datetime, timezone
from decimal import Decimal
from types import MappingProxyType
from typing import Any

import attrs

from selligent_segment._errors import InvalidEvent, shown
from selligent_segment._shortcuts import compiled_twins, format_timestamp
from selligent_segment._shortcuts import format_epoch as format_epoch  # (re-exported)

__all__ = ["CallbackRecord", "EventKind"]


class EventKind(str, enum.Enum):
    """The six kinds of email callback, one per Segment Email event."""

    DELIVERED = "delivered"
    OPENED = "opened"
    LINK_CLICKED = "link_clicked"
    UNSUBSCRIBED = "unsubscribed"
    BOUNCED = "bounced"
    MARKED_AS_SPAM = "marked_as_spam"

    @classmethod
    def parse(cls, value: object) -> EventKind:
        """Return the kind named by ``value`` (canonical name or documented alias)."""
        if not isinstance(value, str):
            raise InvalidEvent("type", f"expected a string, got {_type_name(value)}")
        kind = _KIND_ALIASES.get(value)
        if kind is None:
            kind = _KIND_ALIASES.get(value.strip().lower().replace("-", "_").replace(" ", "_"))
        if kind is None:
            known = ", ".join(k.value for k in cls)
            reason = f"unknown event type {shown(value)} (expected one of {known})"
            raise InvalidEvent("type", reason)
        return kind


_KIND_ALIASES: dict[str, EventKind] = {k.value: k for k in EventKind}
_KIND_ALIASES.update(
    {
        "delivery": EventKind.DELIVERED,
        "open": EventKind.OPENED,
        "click": EventKind.LINK_CLICKED,
        "clicked": EventKind.LINK_CLICKED,
        "unsubscribe": EventKind.UNSUBSCRIBED,
        "bounce": EventKind.BOUNCED,
        "spam": EventKind.MARKED_AS_SPAM,
        "complaint": EventKind.MARKED_AS_SPAM,
    }
)

# Spec property fields of the record, with the kinds they belong to (None: every kind).
_PROPERTY_FIELDS: dict[str, frozenset[EventKind] | None] = {
    "email_id": None,
    "email_subject": None,
    "campaign_id": None,
    "campaign_name": None,
    "link_url": frozenset({EventKind.LINK_CLICKED}),
    "link_id": frozenset({EventKind.LINK_CLICKED}),
    "list_id": frozenset({EventKind.UNSUBSCRIBED}),
    "list_name": frozenset({EventKind.UNSUBSCRIBED}),
    "bounce_type": frozenset({EventKind.BOUNCED}),
    "bounce_reason": frozenset({EventKind.BOUNCED}),
    "smtp_status": frozenset({EventKind.BOUNCED}),
}
# For each kind, the kind-specific fields it may not carry.
_NOT_FOR = {
    kind: frozenset(n for n, ks in _PROPERTY_FIELDS.items() if ks is not None and kind not in ks)
    for kind in EventKind
}
#: Property names an extra property may not take.
RESERVED_PROPERTIES = frozenset(_PROPERTY_FIELDS)

# No ASCII control character anywhere (\s covers the rest of them); other unprintable
# characters are refused by _email, for non-ASCII text only.
_NO = r"@\s\x00-\x1f\x7f"
# Used with fullmatch only: '$' with match would accept a trailing newline.
_EMAIL_RE = re.compile(rf"[^{_NO}]+@[^{_NO}.]+(\.[^{_NO}.]+)+")
_SNAKE_RE = re.compile(r"[a-z][a-z0-9]*(_[a-z0-9]+)*")
#: The most characters of a text field (``email_subject``, ``bounce_reason``...).
MAX_TEXT = 8192
_MAX_TEXT = MAX_TEXT
_UTC = timezone.utc
_MAX_DEPTH = 16


def _check_encodable(field: str, value: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidEvent(field, "contains a lone surrogate, which is not valid UTF-8") from None


_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1
#: Integer ids have at most this many digits (Python's default limit for int -> str).
_MAX_INT_DIGITS = 4300
_INT_TOO_LONG = 10**_MAX_INT_DIGITS


def _type_name(value: object) -> str:
    return shown(type(value).__name__, quote=False)


def _int_text(field: str, value: int) -> str:
    """The decimal text of an integer id; one over _MAX_INT_DIGITS digits is refused."""
    if not -_INT_TOO_LONG < value < _INT_TOO_LONG:
        raise InvalidEvent(
            field, f"integer too long (over {_MAX_INT_DIGITS} digits); give a long id as text"
        )
    try:
        return int.__repr__(value)  # an int subclass's (an Enum's) own str() is not its digits
    except ValueError:  # the interpreter's own limit (sys.set_int_max_str_digits) is lower
        raise InvalidEvent(field, "integer too long to turn into text; give it as text") from None


def _not_text(field: str, value: object, allow_int: bool) -> InvalidEvent:
    """The refusal of a text field holding ``value``, which is not text."""
    # A JSON integer over 64 bits is read as a float (infinite when very long).
    huge = isinstance(value, float) and (value < _INT_MIN or value > _INT_MAX)
    if allow_int and huge:
        return InvalidEvent(
            field,
            "integer too large to read exactly: integer ids in JSON must be within "
            f"{_INT_MIN} and {_INT_MAX}; give a longer id as text",
        )
    return InvalidEvent(field, f"expected a string, got {_type_name(value)}")


_CONTROL = {"Cc": "a control character", "Cf": "an invisible format character"}


def _check_controls(field: str, text: str) -> None:
    """Refuse text holding a control (Cc: NUL, ESC, DEL...) or format character (Cf: U+202E,
    U+200B...). Call it only for text that is not ``isprintable()``, the cheap pre-check."""
    for char in text:
        what = _CONTROL.get(unicodedata.category(char))
        if what is not None:
            raise InvalidEvent(field, f"contains {what} (U+{ord(char):04X})")


def _text(field: str, value: object, *, allow_int: bool = False) -> str | None:
    """Validate an optional text field; blank means absent."""
    if value.__class__ is str and len(value) <= _MAX_TEXT and value.isascii():
        return value.strip() or None  # short_ascii (_shortcuts), inlined
    if value is None:
        return None
    if allow_int and isinstance(value, int) and not isinstance(value, bool):
        value = _int_text(field, value)
    if not isinstance(value, str):
        raise _not_text(field, value, allow_int)
    value = value.strip()
    _check_encodable(field, value)
    if len(value) > _MAX_TEXT:
        raise InvalidEvent(field, f"longer than {_MAX_TEXT} characters ({len(value)})")
    return value or None


def _bad_email(text: str) -> InvalidEvent:
    """Why ``text`` is not a plausible email (the address itself is never shown)."""
    if not text.isprintable():
        _check_controls("email", text)
    return InvalidEvent("email", "not a plausible email address")


def _email(value: object) -> str | None:
    text = _text("email", value)
    if text is None:
        return None
    if len(text) > 254 or not _EMAIL_RE.fullmatch(text):
        raise _bad_email(text)
    if not text.isprintable():
        _check_controls("email", text)
    return text


def _tenant(value: object) -> str | None:
    text = _text("tenant", value)
    if text is not None and not text.isprintable():
        _check_controls("tenant", text)
    return text


def _ip(value: object) -> str | None:
    text = _text("ip", value)
    if text is None:
        return None
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise InvalidEvent("ip", f"not a valid IPv4 or IPv6 address: {shown(text)}") from None


def _bounce_type(value: object) -> str | None:
    text = _text("bounce_type", value)
    if text is None:
        return None
    text = text.lower()
    if text not in ("hard", "soft"):
        raise InvalidEvent("bounce_type", f"expected 'hard' or 'soft', got {shown(text)}")
    return text


#: The window of accepted timestamps: not before 2000-01-01 (UTC), and at most a day
#: ahead of the clock (time.time(), so tests can move it).
_EARLIEST_TEXT = "2000-01-01T00:00:00Z"
_EARLIEST = datetime(2000, 1, 1, tzinfo=_UTC)
_MAX_AHEAD = 86400.0
# (a clock second, the latest timestamp accepted during it): the bound is computed once
# per second of the clock, whichever way the clock moves.
_latest: tuple[float, datetime] = (-1.0, _EARLIEST)


def parse_timestamp(value: object, field: str = "timestamp") -> datetime | None:
    """Return an aware datetime for ``value`` (ISO-8601 text or datetime with an offset)
    between 2000-01-01 and a day after now."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise InvalidEvent(field, f"not an ISO-8601 date-time: {shown(value)}") from None
        value = parsed
    if not isinstance(value, datetime):
        raise InvalidEvent(
            field, f"expected an ISO-8601 string or a datetime, got {_type_name(value)}"
        )
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidEvent(field, "has no UTC offset; give one (e.g. '+00:00' or 'Z')")
    try:
        utc = value.astimezone(_UTC)
    except OverflowError:
        raise InvalidEvent(field, "is out of range once converted to UTC") from None
    if utc < _EARLIEST:
        moment = format_timestamp(utc)
        raise InvalidEvent(field, f"{moment} is before {_EARLIEST_TEXT}, the earliest accepted")
    now = time.time()
    second, latest = _latest
    if not second <= now < second + 1.0:
        latest = _new_latest(now)
    if utc > latest:
        moment = format_timestamp(utc)
        raise InvalidEvent(field, f"{moment} is more than a day in the future")
    offset = value.utcoffset()
    if offset is not None and (offset.seconds % 60 or offset.microseconds):
        value = utc  # an offset of seconds: orjson writes whole minutes (journal, database)
    if type(value) is not datetime:  # a subclass (pandas' Timestamp): orjson refuses it
        value = _plain_datetime(value)
    return value


def _plain_datetime(value: datetime) -> datetime:
    """``value``, a datetime subclass's instance, as a plain ``datetime`` (microseconds)."""
    return datetime(
        value.year,
        value.month,
        value.day,
        value.hour,
        value.minute,
        value.second,
        value.microsecond,
        value.tzinfo,
        fold=value.fold,
    )


def _new_latest(now: float) -> datetime:
    """The latest accepted timestamp for the clock second of ``now`` (and cache it)."""
    global _latest
    second = float(math.floor(now))
    latest = datetime.fromtimestamp(second + _MAX_AHEAD, _UTC)
    _latest = (second, latest)  # one tuple: safe to share between threads
    return latest


def _json_value(path: str, value: Any, depth: int = 0) -> Any:
    """Return ``value`` as plain JSON data, or raise naming ``path``.

    datetime -> ISO-8601 (UTC with milliseconds when aware), date -> ISO date, Decimal ->
    number, UUID -> string, Enum -> its value; NaN and infinities are refused. A
    subclass of str, int or float (numpy's float64, a str-based enum) becomes the plain
    value, as every JSON writer of the library takes it.
    """
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        _check_encodable(path, value)
        return value if type(value) is str else str.__str__(value)
    if isinstance(value, int):
        if not _INT_MIN <= value <= _INT_MAX:
            raise InvalidEvent(path, "integer out of JSON's 64-bit range")
        return value if type(value) is int else int.__index__(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidEvent(path, f"{value} cannot be sent as JSON")
        return value if type(value) is float else float.__float__(value)
    if depth >= _MAX_DEPTH:
        raise InvalidEvent(path, f"nested deeper than {_MAX_DEPTH} levels")
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidEvent(path, f"key {shown(key)} is not a string")
            _check_encodable(path, key)
            key = str.__str__(key)  # a str subclass's key: orjson takes plain str keys only
            out[key] = _json_value(f"{path}.{key}", item, depth + 1)
        return out
    if isinstance(value, (list, tuple)):
        return [_json_value(f"{path}[{i}]", item, depth + 1) for i, item in enumerate(value)]
    if isinstance(value, datetime):
        return format_timestamp(value) if value.tzinfo is not None else value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise InvalidEvent(path, f"{value} cannot be sent as JSON")
        if value == value.to_integral_value():
            if value.adjusted() > 19:  # over 2**64 (int() of 1e1000000 took 26 s)
                raise InvalidEvent(path, "integer out of JSON's 64-bit range")
            return _json_value(path, int(value), depth)
        return float(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, enum.Enum):
        return _json_value(path, value.value, depth + 1)
    raise InvalidEvent(path, f"a {_type_name(value)} cannot be sent as JSON")


def _properties(value: object) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidEvent("properties", f"expected an object, got {_type_name(value)}")
    out: dict[str, Any] = {}
    for key, item in value.items():
        if not isinstance(key, str) or not _SNAKE_RE.fullmatch(key):
            raise InvalidEvent("properties", f"property name {shown(key)} is not snake_case")
        if key in RESERVED_PROPERTIES:
            raise InvalidEvent(
                f"properties.{key}", "is a spec property; set the record field of that name"
            )
        key = str.__str__(key)  # a str subclass's key (a StrEnum): orjson takes str only
        if item is not None:  # no nulls: an absent property is simply not sent
            try:
                out[key] = _json_value(f"properties.{key}", item)
            except InvalidEvent as exc:  # nested keys are free text: show the path safely
                raise InvalidEvent(shown(exc.field, quote=False), exc.reason) from None
    return out


#: At most this many entries in a record's ``integrations`` or ``context`` object.
MAX_OBJECT_ENTRIES = 100
_CONTEXT_KEY_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
#: Context keys a record may not set, and why: the library sets them itself.
RESERVED_CONTEXT = {
    "library": "is set by the library (its name and version); it cannot be overridden",
    "integration": "is set by the library (the source's name and version); it cannot be overridden",
    "ip": "is set from the record's ip field; set that field",
    "userAgent": "is set from the record's user_agent field; set that field",
}


def _object_of(field: str, value: object) -> Mapping[Any, Any]:
    """``value`` as a mapping of at most MAX_OBJECT_ENTRIES entries, or InvalidEvent."""
    if not isinstance(value, Mapping):
        raise InvalidEvent(field, f"expected an object, got {_type_name(value)}")
    if len(value) > MAX_OBJECT_ENTRIES:
        raise InvalidEvent(field, f"more than {MAX_OBJECT_ENTRIES} entries ({len(value)})")
    return value


def _nested(path: str, value: Any) -> Any:
    """:func:`_json_value` of ``value``, its error's field (free text) shown safely."""
    try:
        return _json_value(path, value)
    except InvalidEvent as exc:
        raise InvalidEvent(shown(exc.field, quote=False), exc.reason) from None


def _integrations(value: object) -> dict[str, Any]:
    """Segment's ``integrations`` object: destination name -> true, false or an object of
    that destination's options (``{"All": false, "Mixpanel": true}``)."""
    out: dict[str, Any] = {}
    for key, item in _object_of("integrations", value).items():
        if not isinstance(key, str) or not key.strip() or not key.isprintable():
            reason = f"destination name {shown(key)} is not non-blank printable text"
            raise InvalidEvent("integrations", reason)
        key = str.__str__(key)  # a str subclass's key: orjson takes plain str keys only
        path = f"integrations.{key}"
        if isinstance(item, bool):
            out[key] = item
        elif isinstance(item, Mapping):
            out[key] = _nested(path, item)
        else:
            got = _type_name(item)
            raise InvalidEvent(
                shown(path, quote=False), f"expected true, false or an object, got {got}"
            )
    return out


def _context(value: object) -> dict[str, Any]:
    """Extra fields of the message's ``context``, merged with what the library sets."""
    out: dict[str, Any] = {}
    for key, item in _object_of("context", value).items():
        if not isinstance(key, str) or not _CONTEXT_KEY_RE.fullmatch(key):
            reason = f"key {shown(key)} is not a name (a letter, then letters, digits or _)"
            raise InvalidEvent("context", reason)
        key = str.__str__(key)  # a str subclass's key: orjson takes plain str keys only
        reserved = RESERVED_CONTEXT.get(key)
        if reserved is not None:
            raise InvalidEvent(f"context.{key}", reserved)
        if key == "traits":
            if item is not None and not isinstance(item, Mapping):
                raise InvalidEvent("context.traits", f"expected an object, got {_type_name(item)}")
            if item is not None and "email" in item:
                raise InvalidEvent(
                    "context.traits.email", "is set from the record's email field; set that field"
                )
        if item is not None:  # like properties: an absent field is simply not sent
            out[key] = _nested(f"context.{key}", item)
    return out


def _check_fields(fields: Mapping[str, Any]) -> None:
    if "email" not in fields and "user_id" not in fields:
        raise InvalidEvent("email", "a record needs an email or a user_id (neither was given)")
    kind = fields["type"]
    if not _NOT_FOR[kind].isdisjoint(fields):  # isdisjoint: no set built when all is well
        misplaced = _NOT_FOR[kind].intersection(fields)
        name = next(n for n in _PROPERTY_FIELDS if n in misplaced)
        kinds = _PROPERTY_FIELDS[name] or ()
        allowed = " or ".join(sorted(k.value for k in kinds))
        raise InvalidEvent(name, f"applies only to {allowed} events, not {kind.value}")


def _text_of(field: str, allow_int: bool = False) -> Callable[[object], str | None]:
    def convert(value: object) -> str | None:
        return _text(field, value, allow_int=allow_int)

    return convert


_VALIDATORS: dict[str, Callable[[Any], Any]] = {
    "type": EventKind.parse,
    "tenant": _tenant,
    "email": _email,
    "user_id": _text_of("user_id", allow_int=True),
    "event_id": _text_of("event_id", allow_int=True),
    "timestamp": parse_timestamp,
    "email_id": _text_of("email_id", allow_int=True),
    "email_subject": _text_of("email_subject"),
    "campaign_id": _text_of("campaign_id", allow_int=True),
    "campaign_name": _text_of("campaign_name"),
    "link_url": _text_of("link_url"),
    "link_id": _text_of("link_id", allow_int=True),
    "list_id": _text_of("list_id", allow_int=True),
    "list_name": _text_of("list_name"),
    "bounce_type": _bounce_type,
    "bounce_reason": _text_of("bounce_reason"),
    "smtp_status": _text_of("smtp_status", allow_int=True),
    "ip": _ip,
    "user_agent": _text_of("user_agent"),
    "properties": _properties,
    "integrations": _integrations,
    "context": _context,
}
#: The object fields: an empty object is the same as none.
_OBJECT_FIELDS = frozenset({"properties", "integrations", "context"})
_PLAIN_TEXT = frozenset(name for name, check in _VALIDATORS.items() if check.__name__ == "convert")
#: The record fields of the documented dict/JSON form.
FIELD_NAMES = frozenset(_VALIDATORS)


def _unknown_field(key: object) -> InvalidEvent:
    return InvalidEvent(shown(key, quote=False), "unknown field")


def _missing_type() -> InvalidEvent:
    return InvalidEvent("type", "missing")


def plain_normalize(data: Mapping[str, Any]) -> dict[str, Any]:
    """Validate a record in its dict form and return its normalised fields.

    The plain path of :data:`normalize`, which is this function or its compiled twin.

    The result holds only the fields that are set: ``type`` as an :class:`EventKind`,
    ``timestamp`` as an aware datetime, text trimmed, ``properties``, ``integrations`` and
    ``context`` as plain JSON data (each absent when empty).
    Raises :class:`InvalidEvent` naming the first offending field.
    """
    if data.__class__ is not dict and not isinstance(data, Mapping):  # dict: no ABC check
        raise InvalidEvent("record", f"expected a JSON object, got {_type_name(data)}")
    out: dict[str, Any] = {}
    # The fast paths below are _shortcuts.short_ascii, inlined (a call per field would cost
    # 17%), and the kind looked up by its exact name; tests/test_shortcuts.py proves the
    # result and the errors the same as the validators' in _VALIDATORS.
    for key, value in data.items():
        if key.__class__ is not str and isinstance(key, str):  # a StrEnum's member: plain
            key = str.__str__(key)  # text, as orjson takes keys (journal, message id)
        if (
            key in _PLAIN_TEXT
            and value.__class__ is str
            and value.isascii()
            and len(value) <= _MAX_TEXT
        ):
            # _text's fast path, for plain ASCII text (the common case).
            value = value.strip()
            if value:
                out[key] = value
            continue
        if value.__class__ is str:  # inlined fast paths of _email and EventKind.parse
            if key == "email" and len(value) <= _MAX_TEXT and value.isascii():
                value = value.strip()
                if value:
                    if len(value) > 254 or not _EMAIL_RE.fullmatch(value):
                        raise _bad_email(value)
                    out[key] = value
                continue
            if key == "type":
                kind = _KIND_ALIASES.get(value)
                if kind is not None:
                    out[key] = kind
                    continue
            elif key == "tenant" and len(value) <= _MAX_TEXT and value.isascii():
                value = value.strip()  # inlined fast path of _tenant
                if value:
                    if not value.isprintable():
                        _check_controls("tenant", value)
                    out[key] = value
                continue
        validate = _VALIDATORS.get(key)
        if validate is None:
            raise _unknown_field(key)
        if value is not None:
            value = validate(value)
            if value is not None and (value or key not in _OBJECT_FIELDS):
                out[key] = value
    kind = out.get("type")
    if kind is None:
        raise _missing_type()
    # _check_fields(out), called only when it has something to refuse (one call fewer).
    if ("email" not in out and "user_id" not in out) or not _NOT_FOR[kind].isdisjoint(out):
        _check_fields(out)
    return out


def _kind(value: object) -> EventKind:
    return EventKind.parse(value)


@attrs.frozen(slots=True)
class CallbackRecord:
    """One email callback from the platform, validated on construction.

    Guarantee: an instance that exists maps to a Segment track message (bar the 32 KB
    size limit, checked when the message is encoded). Blank strings count as absent.
    """

    kind: EventKind = attrs.field(converter=_kind)
    """The event kind (an :class:`EventKind`, its value, or an alias such as ``bounce``)."""
    tenant: str | None = attrs.field(default=None, kw_only=True)
    """Which customer account (Segment source) the event belongs to."""
    email: str | None = attrs.field(default=None, kw_only=True)
    """The recipient's address; it must look like one."""
    user_id: str | None = attrs.field(default=None, kw_only=True)
    """The recipient's user id on the platform, when it has one (sent as ``userId``)."""
    event_id: str | None = attrs.field(default=None, kw_only=True)
    """The platform's own id of this event; it makes the ``messageId`` stable."""
    timestamp: datetime | None = attrs.field(default=None, kw_only=True)
    """When the event happened (timezone-aware); absent: when it is mapped."""
    email_id: str | None = attrs.field(default=None, kw_only=True)
    """The id of the email (the send)."""
    email_subject: str | None = attrs.field(default=None, kw_only=True)
    """The subject line."""
    campaign_id: str | None = attrs.field(default=None, kw_only=True)
    """The campaign's id."""
    campaign_name: str | None = attrs.field(default=None, kw_only=True)
    """The campaign's name."""
    link_url: str | None = attrs.field(default=None, kw_only=True)
    """Link clicked: the URL."""
    link_id: str | None = attrs.field(default=None, kw_only=True)
    """Link clicked: the link's id."""
    list_id: str | None = attrs.field(default=None, kw_only=True)
    """Unsubscribed: the list."""
    list_name: str | None = attrs.field(default=None, kw_only=True)
    """Unsubscribed: the list's name."""
    bounce_type: str | None = attrs.field(default=None, kw_only=True)
    """Bounced: ``hard`` or ``soft`` (stored lower-case)."""
    bounce_reason: str | None = attrs.field(default=None, kw_only=True)
    """Bounced: the diagnostic text (``550 5.1.1 user unknown``)."""
    smtp_status: str | None = attrs.field(default=None, kw_only=True)
    """Bounced: the SMTP status (``5.1.1``, ``550``)."""
    ip: str | None = attrs.field(default=None, kw_only=True)
    """The recipient's IPv4 or IPv6 address (opens, clicks...)."""
    user_agent: str | None = attrs.field(default=None, kw_only=True)
    """The recipient's user agent."""
    properties: Mapping[str, Any] = attrs.field(factory=dict, kw_only=True, hash=False)
    """Extra properties, sent next to the spec's (snake_case names)."""
    integrations: Mapping[str, Any] = attrs.field(factory=dict, kw_only=True, hash=False)
    """Segment's ``integrations`` object, sent as it is: which destinations receive the
    event (``{"All": False, "Mixpanel": True}``). Not part of the ``messageId``."""
    context: Mapping[str, Any] = attrs.field(factory=dict, kw_only=True, hash=False)
    """Extra ``context`` fields (``{"locale": "fr-FR"}``), merged with the library's; it
    may not set ``library``, ``integration``, ``ip``, ``userAgent`` or ``traits.email``.
    Not part of the ``messageId``."""
    _fields: dict[str, Any] = attrs.field(init=False, repr=False, eq=False, hash=False)

    def __attrs_post_init__(self) -> None:
        given: dict[str, Any] = {"type": self.kind}
        for name in _ATTR_NAMES:
            value = getattr(self, name)
            if value is not None:
                given[name] = value
        fields = normalize(given)
        for name in _ATTR_NAMES:
            value = fields.get(name)
            if name in _OBJECT_FIELDS:
                value = MappingProxyType(value or {})
            object.__setattr__(self, name, value)
        object.__setattr__(self, "_fields", fields)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CallbackRecord:
        """Build a record from its documented dict/JSON form; unknown fields are refused."""
        fields = normalize(data)
        return cls(fields.pop("type"), **fields)

    def fields(self) -> dict[str, Any]:
        """The normalised fields (see :func:`normalize`); a fresh dict each call."""
        return dict(self._fields)

    def to_dict(self) -> dict[str, Any]:
        """The record's JSON-ready dict form (only fields that are set); from_dict inverts it."""
        out = self.fields()
        out["type"] = self.kind.value
        if self.timestamp is not None:
            out["timestamp"] = self.timestamp.isoformat()
        return out


_ATTR_NAMES = tuple(name for name in _VALIDATORS if name != "type")


#: The key, in a record's normalised fields, of its profile update (see ``_profile.py``).
#: It cannot clash with a record field (``normalize`` refuses unknown names, and no field
#: starts with ``_``).
PROFILE_UPDATE = "_profile_update"
#: How the journal writes the ``type`` of fields carrying a profile update:
#: ``identify:<kind>``. Releases before profile updates know only the kinds and refuse it
#: (they keep such a row as a dead letter): they never send it as a second track.
JOURNAL_IDENTIFY = "identify:"


def journal_form(fields: dict[str, Any]) -> dict[str, Any]:
    """``fields`` as the journal writes them (JSON): themselves, but for fields carrying
    a profile update, whose ``type`` is ``identify:<kind>`` (a copy; see
    :data:`JOURNAL_IDENTIFY`). :func:`revive` reads both back."""
    if PROFILE_UPDATE not in fields:
        return fields
    marked = dict(fields)
    marked["type"] = JOURNAL_IDENTIFY + fields["type"]._value_
    return marked


def revive(raw: object) -> dict[str, Any]:
    """The fields :func:`normalize` returned, back from their JSON form (as journaled).

    Only the two typed fields are converted (``type`` and ``timestamp``): the rest was
    validated before it was journaled. An ``identify:<kind>`` type (see
    :func:`journal_form`) is read as its kind, with the profile update it must carry.
    Raises InvalidEvent when ``raw`` is not such a form.
    """
    if not isinstance(raw, dict):
        raise InvalidEvent("record", "not a journaled record")
    name = raw.get("type")
    kind = _KIND_ALIASES.get(name) if isinstance(name, str) else None
    if (
        kind is None
        and isinstance(name, str)
        and name.startswith(JOURNAL_IDENTIFY)
        and PROFILE_UPDATE in raw  # an identify carries its update
    ):
        kind = _KIND_ALIASES.get(name[len(JOURNAL_IDENTIFY) :])
    if kind is None:
        raise InvalidEvent("type", "not a journaled record's event type")
    raw["type"] = kind
    moment = raw.get("timestamp")
    if moment is not None:
        try:
            raw["timestamp"] = datetime.fromisoformat(moment)
        except (TypeError, ValueError):
            raise InvalidEvent("timestamp", "not a journaled record's timestamp") from None
    return raw


_twins = compiled_twins()
#: Validate a record in its dict form and return its normalised fields
#: (:func:`plain_normalize`, compiled where it was built: the same fields and errors).
normalize: Callable[[Mapping[str, Any]], dict[str, Any]] = (
    _twins.normalize_twin(sys.modules[__name__]) if _twins is not None else plain_normalize
)
