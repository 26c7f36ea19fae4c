"""Each shortcut of ``selligent_segment._shortcuts`` proved equal to the plain code it stands for.

Every section writes the plain version here, in the test, and compares the shortcut with it:
on properties where they fit (hypothesis), and on the edge cases named in the issue
(timestamps near second and millisecond boundaries, leap years, both ends of the accepted
window; unicode emails; ids at the length limits). The ASCII fast path of ``normalize`` is
inlined in ``_record`` rather than called, so its section checks the inlined copies (in
``normalize`` and ``_text``) against the canonical :func:`short_ascii` and against the
plain per-field validators.
"""

from __future__ import annotations

import copy
import email.parser
import functools
import http.client
import inspect
import math
import operator
import pickle
import sys
import time
import tracemalloc
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from types import MappingProxyType
from typing import Any
from unittest import mock

import attrs
import orjson
import pytest
from _http_messages import message_state
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from selligent_segment import (
    Emitter,
    EventKind,
    EventNaming,
    InvalidEvent,
    _mapping,
    _record,
    _shortcuts,
)
from selligent_segment._errors import shown
from selligent_segment._mapping import (
    MESSAGE_ID_NAMESPACE,
    EncodedMessage,
    encode_fields,
    message_id,
    track_message,
)
from selligent_segment._record import (
    _MAX_TEXT,
    _PROPERTY_FIELDS,
    _VALIDATORS,
    FIELD_NAMES,
    _check_encodable,
    _int_text,
    _not_text,
    _type_name,
    normalize,
)
from selligent_segment._shortcuts import (
    emits_keywords,
    exact_copy,
    format_epoch,
    format_timestamp,
    http_headers,
    json_array_uuid5,
    json_fragment,
    short_ascii,
    slot_constructor,
)

UTC = timezone.utc
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def outcome(function: Callable[..., Any], *args: Any) -> tuple[Any, ...]:
    """What ``function(*args)`` comes to, comparable: its value with the type of each part,
    or the exception's type and text (an InvalidEvent's field and reason)."""
    try:
        value = function(*args)
    except InvalidEvent as exc:
        return ("refused", exc.field, exc.reason)
    except Exception as exc:  # the plain code must raise the same
        return ("raised", type(exc), str(exc))
    if isinstance(value, dict):
        return ("ok", [(k, type(v), v) for k, v in value.items()])
    return ("ok", type(value), value)


# == normalize: the ASCII fast path (inlined), against the plain validators ==================


def plain_text(field: str, value: object, *, allow_int: bool = False) -> str | None:
    """``_record._text`` without its fast path: every check on every value."""
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


@contextmanager
def plain_validators() -> Iterator[None]:
    """The validators of ``_VALIDATORS`` with ``_text`` replaced by :func:`plain_text`
    (``_email``, ``_tenant``, ``_ip``, ``_bounce_type`` and the text fields all call it)."""
    with mock.patch.object(_record, "_text", plain_text):
        yield


def plain_normalize(data: Any) -> dict[str, Any]:
    """``normalize`` the plain way: every field through its validator, then the record checks."""
    if not isinstance(data, Mapping):
        raise InvalidEvent("record", f"expected a JSON object, got {_type_name(data)}")
    out: dict[str, Any] = {}
    with plain_validators():
        for key, value in data.items():
            validate = _VALIDATORS.get(key)
            if validate is None:
                raise InvalidEvent(shown(key, quote=False), "unknown field")
            if value is not None:
                value = validate(value)
                if value is not None and (value or key not in OBJECT_FIELDS):
                    out[key] = value
    if "type" not in out:
        raise InvalidEvent("type", "missing")
    if "email" not in out and "user_id" not in out:
        raise InvalidEvent("email", "a record needs an email or a user_id (neither was given)")
    kind = out["type"]
    for name, kinds in _PROPERTY_FIELDS.items():  # the first misplaced, in canonical order
        if name in out and kinds is not None and kind not in kinds:
            allowed = " or ".join(sorted(k.value for k in kinds))
            raise InvalidEvent(name, f"applies only to {allowed} events, not {kind.value}")
    return out


#: The record's object fields, where an empty object means absent (as documented).
OBJECT_FIELDS = ("properties", "integrations", "context")


class Text(str):
    """A str subclass: never on the fast path."""


_EDGE_TEXT = [
    "",
    " ",
    "\t x \n",
    "ok",
    " padded ",
    "zoë",
    "用户",
    "\x00",
    "a\x1bb",
    "a\x7fb",
    "\u202eevil",
    "zero\u200bwidth",
    "\ud800",
    " \ud800 ",
    "a" * _MAX_TEXT,
    "a" * (_MAX_TEXT + 1),
    " " + "a" * _MAX_TEXT,  # over the limit before stripping only
    "é" * _MAX_TEXT,
    "é" * (_MAX_TEXT + 1),
]
texts = st.one_of(
    st.text(st.characters(max_codepoint=127), max_size=30),  # ASCII, controls included
    st.text(max_size=30),
    st.text(st.characters(categories=["Cs", "Cc", "Cf", "Zs", "L"]), max_size=10),
    st.sampled_from(_EDGE_TEXT),
    st.builds(Text, st.text(max_size=10)),
)
_EDGE_EMAILS = [
    "ada@example.com",
    " Ada@Example.COM ",
    "zoë@example.com",
    "用户@例子.广告",
    "ada@localhost",
    "a@b.c",
    "ada@@example.com",
    "ada@exa mple.com",
    "ada\x00@example.com",
    "ada\x7f@example.com",
    "ada\u202e@example.com",
    "ada\u200b@example.com",
    "ada\ud800@example.com",
    "a" * 242 + "@example.com",  # 254 characters: the longest accepted
    "a" * 243 + "@example.com",  # 255
    "é" * 242 + "@example.com",
    "é" * 243 + "@example.com",
]
emails = st.one_of(
    st.emails(),
    st.sampled_from(_EDGE_EMAILS),
    st.builds(lambda user, host: f"{user}@{host}.example", texts, texts),
)
_KIND_TEXT = ["opened", "open", " Open ", "LINK-CLICKED", "marked as spam", "complaint", "nope"]
kinds = st.one_of(st.sampled_from(_KIND_TEXT), st.sampled_from(list(EventKind)))
_LIMIT = 10**_record._MAX_INT_DIGITS
int_ids = st.one_of(
    st.integers(),
    st.sampled_from([2**63, 2**64 - 1, 2**64, -(2**63) - 1, _LIMIT - 1, _LIMIT, -_LIMIT + 1]),
)
other_values = st.one_of(
    st.none(), st.booleans(), st.floats(), int_ids, st.lists(st.integers(), max_size=2)
)
timestamps = st.one_of(
    st.sampled_from(
        [
            "2000-01-01T00:00:00Z",
            "1999-12-31T23:59:59.999Z",
            "2024-02-29T23:59:59.9995+00:00",
            "2026-11-20T12:01:00.123456+02:00",
            "2026-11-20T12:01:00",
            "not a date",
            "9999-12-31T23:59:59Z",
        ]
    ),
    st.datetimes(
        min_value=datetime(1999, 12, 31), max_value=datetime(2030, 1, 1), timezones=st.just(UTC)
    ),
)
properties = st.one_of(
    st.none(),
    st.dictionaries(st.sampled_from(["plan", "Bad", "email_id", "n"]), st.integers(), max_size=2),
    st.sampled_from([{}, [], "x"]),
)
integrations = st.one_of(
    st.none(),
    st.dictionaries(
        st.sampled_from(["All", "Mixpanel", "Google Analytics", "", " "]),
        st.one_of(st.booleans(), st.dictionaries(st.sampled_from(["a", "b"]), st.integers())),
        max_size=3,
    ),
    st.sampled_from([{}, {"All": 1}, {1: True}, [], "x"]),
)
contexts = st.one_of(
    st.none(),
    st.dictionaries(
        st.sampled_from(["locale", "campaign", "traits", "library", "ip", "userAgent", "a-b"]),
        st.one_of(
            st.text(max_size=5),
            st.dictionaries(st.sampled_from(["email", "name"]), st.text(max_size=5)),
        ),
        max_size=3,
    ),
    st.sampled_from([{}, {"traits": 1}, [], "x"]),
)
_FIELD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "type": kinds,
    "email": emails,
    "tenant": texts,
    "timestamp": timestamps,
    "ip": st.sampled_from(["10.0.0.1", " 2001:DB8::1 ", "999.0.0.1", "x"]),
    "bounce_type": st.sampled_from(["hard", " SOFT ", "medium", ""]),
    "properties": properties,
    "integrations": integrations,
    "context": contexts,
}


@st.composite
def records(draw: st.DrawFn) -> dict[str, Any]:
    """A record in its dict form, in any field order: about one field in eight holds a wild
    value (any text or type), the others a value of their field's kind."""
    names = draw(st.lists(st.sampled_from([*sorted(FIELD_NAMES), "bogus"]), unique=True))
    if draw(st.integers(0, 3)):
        names = ["type", "email", *(n for n in names if n not in ("type", "email"))]
    data: dict[str, Any] = {}
    for name in draw(st.permutations(names)):
        if draw(st.integers(0, 7)) == 0:
            data[name] = draw(st.one_of(texts, other_values))
        else:
            data[name] = draw(_FIELD_VALUES.get(name, texts))
    return data


offsets = st.builds(
    timezone,
    st.timedeltas(
        min_value=timedelta(hours=-23, minutes=-59), max_value=timedelta(hours=23, minutes=59)
    ),
)
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def valid_records(draw: st.DrawFn) -> dict[str, Any]:
    """A record normalize accepts (nearly always), with optional fields of any kind."""
    kind = draw(st.sampled_from(list(EventKind)))
    data: dict[str, Any] = {"type": draw(st.sampled_from([kind, kind.value, kind.value.upper()]))}
    if draw(st.booleans()):
        data["email"] = draw(st.one_of(st.emails(), st.sampled_from(_EDGE_EMAILS[:6])))
    if "email" not in data or draw(st.booleans()):
        data["user_id"] = draw(st.one_of(st.text("abc- ", min_size=1), st.integers(0, 2**64 - 1)))
    allowed = [n for n, kinds in _PROPERTY_FIELDS.items() if kinds is None or kind in kinds]
    for name in draw(st.lists(st.sampled_from(["event_id", "tenant", *allowed]), unique=True)):
        if name in ("event_id", "email_id", "campaign_id", "link_id", "list_id", "smtp_status"):
            data[name] = draw(st.one_of(st.text(max_size=20), st.integers(0, 2**64 - 1)))
        elif name == "bounce_type":
            data[name] = draw(st.sampled_from(["hard", "soft"]))
        else:
            data[name] = draw(st.text(st.characters(exclude_categories=["Cc", "Cf"]), max_size=20))
    if draw(st.booleans()):
        data["timestamp"] = draw(
            st.datetimes(
                min_value=datetime(2000, 1, 2), max_value=datetime(2026, 1, 1), timezones=offsets
            )
        )
    if draw(st.booleans()):
        data["properties"] = draw(
            st.dictionaries(st.sampled_from(["plan", "n", "deep"]), json_values)
        )
    if draw(st.integers(0, 3)) == 0:
        data["integrations"] = draw(
            st.dictionaries(
                st.sampled_from(["All", "Mixpanel", "Google Analytics"]),
                st.one_of(st.booleans(), st.dictionaries(st.text(max_size=8), json_values)),
            )
        )
    if draw(st.integers(0, 3)) == 0:
        data["context"] = draw(
            st.dictionaries(
                st.sampled_from(["locale", "campaign", "groupId"]), json_values, max_size=3
            )
        )
        if draw(st.booleans()):
            data["context"]["traits"] = draw(
                st.dictionaries(st.sampled_from(["name", "plan"]), json_values, max_size=2)
            )
    return data


@SETTINGS
@given(st.one_of(texts, other_values), st.sampled_from(["email_id", "email", "tenant"]))
def test_short_ascii_text_reduces_to_strip(value: Any, field: str) -> None:
    """short_ascii's guarantee: _text and the plain checks both come to value.strip()."""
    if short_ascii(value, _MAX_TEXT):
        assert plain_text(field, value) == (value.strip() or None)
        assert _record._text(field, value) == (value.strip() or None)
        # An ASCII email the pattern matches is printable: no control check is left to do.
        assert value.strip().isprintable() or not _record._EMAIL_RE.fullmatch(value.strip())
    else:
        assert outcome(_record._text, field, value) == outcome(plain_text, field, value)


@SETTINGS
@given(st.one_of(texts, other_values), st.booleans())
def test_text_fast_path_equals_plain_text(value: Any, allow_int: bool) -> None:
    """_text's inlined fast path: the same result, or the same refusal, as every check."""
    expected = outcome(functools.partial(plain_text, allow_int=allow_int), "email_id", value)
    got = outcome(functools.partial(_record._text, allow_int=allow_int), "email_id", value)
    assert got == expected


@pytest.mark.slow  # half a second or more: the second step of .ci/run
@SETTINGS
@given(st.one_of(records(), valid_records()))
def test_normalize_equals_plain_validation(data: dict[str, Any]) -> None:
    """normalize's inlined fast paths (text, email, tenant, kind): the same fields, of the
    same types, or the same refusal naming the same field, as the plain validators."""
    assert outcome(normalize, data) == outcome(plain_normalize, data)


@pytest.mark.parametrize("value", [*_EDGE_TEXT, Text(" x ")])
@pytest.mark.parametrize("field", ["email_id", "tenant", "user_id", "email_subject"])
def test_normalize_fast_path_on_edge_text(field: str, value: str) -> None:
    data = {"type": "opened", "email": "ada@example.com", field: value}
    assert outcome(normalize, data) == outcome(plain_normalize, data)


@pytest.mark.parametrize("value", [*_EDGE_EMAILS, *_EDGE_TEXT, Text("ada@example.com")])
def test_normalize_fast_path_on_edge_emails(value: str) -> None:
    data = {"type": "opened", "email": value, "user_id": "u-1"}
    assert outcome(normalize, data) == outcome(plain_normalize, data)
    del data["user_id"]
    assert outcome(normalize, data) == outcome(plain_normalize, data)


@pytest.mark.parametrize(
    "data",
    [
        MappingProxyType({"type": "opened", "email": "ada@example.com"}),
        [("type", "opened")],
        "opened",
        None,
        {"type": EventKind.BOUNCED, "user_id": 7, "link_url": "https://x.example/"},
        {"type": "Opened", "user_id": 2**64 - 1, "event_id": _LIMIT - 1},
        {"type": "opened", "user_id": "u", "event_id": _LIMIT},
        {"type": "opened", "user_id": "u", "event_id": 2.0**64},
        {"type": "opened", "user_id": True},
        {"email": "ada@example.com"},
        {"type": "opened"},
        {"type": "nope", "email": "\x00"},
        {"email": "\x00", "type": "nope"},
        {"type": "opened", "email": "ada@example.com", "\x1b[31m": 1},
    ],
)
def test_normalize_fast_path_on_edge_records(data: Any) -> None:
    assert outcome(normalize, data) == outcome(plain_normalize, data)


def test_the_kind_lookup_by_exact_name_is_parse() -> None:
    """normalize looks a kind up by its exact name before EventKind.parse, which does the same
    first; _mapping reads a kind's _value_ rather than the value property: the same text."""
    for name, kind in _record._KIND_ALIASES.items():
        assert EventKind.parse(name) is kind
    for kind in EventKind:
        assert kind._value_ == kind.value


# == timestamps ==============================================================================


def plain_format_timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def plain_format_epoch(seconds: float) -> str:
    return plain_format_timestamp(datetime.fromtimestamp(seconds, UTC))


_EARLIEST = datetime(2000, 1, 1, tzinfo=UTC).timestamp()
_YEAR_1000 = datetime(1000, 1, 1, tzinfo=UTC).timestamp()
_YEAR_9999_END = math.nextafter(datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp() + 1, 0)


def _boundary_seconds() -> list[float]:
    """POSIX times at and beside second and millisecond boundaries, over leap days, both
    ends of the accepted window (2000-01-01, now + 1 day) and far past and future."""
    anchors = [
        _EARLIEST,
        datetime(2000, 2, 29, tzinfo=UTC).timestamp(),
        datetime(2000, 3, 1, tzinfo=UTC).timestamp(),
        datetime(2024, 2, 29, 23, 59, 59, tzinfo=UTC).timestamp(),
        datetime(2100, 2, 28, 23, 59, 59, tzinfo=UTC).timestamp(),  # 2100: no leap day
        datetime(1999, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp(),
        math.floor(time.time()) + 86400.0,
        2.0**31,
        2.0**32,
        0.0,
        -1.0,
        _YEAR_1000,
        math.floor(_YEAR_9999_END),
    ]
    out: list[float] = []
    for anchor in anchors:
        for frac in (0.0, 0.0005, 0.001, 0.0015, 0.4995, 0.5, 0.9985, 0.999, 0.9995, 0.999999):
            for extra in (0.0, 5e-7, -5e-7, 4.99e-7, 5.01e-7):
                value = anchor + frac + extra
                out += [value, math.nextafter(value, math.inf), math.nextafter(value, -math.inf)]
    return [v for v in out if _YEAR_1000 <= v <= _YEAR_9999_END]


@SETTINGS
@given(
    st.one_of(
        st.datetimes(timezones=offsets),
        st.datetimes(
            min_value=datetime(1999, 12, 31), max_value=datetime(2031, 1, 1), timezones=offsets
        ),
        st.datetimes(),  # naive: taken as local time by both
    )
)
@example(datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=1))))  # no UTC equivalent
@example(datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone(timedelta(hours=-1))))
@example(datetime(2000, 1, 1, tzinfo=UTC))
@example(datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=UTC))
@example(datetime(2000, 3, 1, 0, 59, 59, 999000, tzinfo=timezone(timedelta(hours=1))))
def test_format_timestamp_equals_isoformat(moment: datetime) -> None:
    assert outcome(format_timestamp, moment) == outcome(plain_format_timestamp, moment)


@SETTINGS
@given(
    st.one_of(
        st.floats(min_value=_EARLIEST, max_value=time.time() + 86400.0),  # the accepted window
        st.floats(min_value=_YEAR_1000, max_value=_YEAR_9999_END),
        st.builds(
            lambda second, micro, nudge: second + micro / 1e6 + nudge,
            st.integers(int(_YEAR_1000), int(_YEAR_9999_END) - 1),
            st.sampled_from([0, 500, 999, 1000, 1500, 499_500, 999_000, 999_499, 999_500, 999_999]),
            st.sampled_from([0.0, 5e-7, -5e-7, 1e-9, -1e-9]),
        ),
        st.sampled_from(_boundary_seconds()),
    )
)
def test_format_epoch_equals_fromtimestamp(seconds: float) -> None:
    assert format_epoch(seconds) == plain_format_epoch(seconds)
    assert format_epoch(seconds) == plain_format_epoch(seconds)  # from the per-second cache


def test_format_epoch_on_every_boundary_value() -> None:
    values = _boundary_seconds()
    assert len(values) > 1000
    for seconds in values:
        assert format_epoch(seconds) == plain_format_epoch(seconds), seconds
    for seconds in reversed(values):  # the cache, missed the other way round
        assert format_epoch(seconds) == plain_format_epoch(seconds), seconds


def test_format_epoch_for_int_seconds_and_the_emitter_clock() -> None:
    for seconds in (0, 946684800, 2**31, int(time.time()), time.time(), time.time() + 86400):
        assert format_epoch(seconds) == plain_format_epoch(seconds)


def _walk(start: float, stop: float) -> Iterator[float]:
    """Every float from ``start`` up to ``stop``, one unit in the last place at a time."""
    value = start
    while value <= stop:
        yield value
        value = math.nextafter(value, math.inf)


@pytest.mark.parametrize(
    "second",
    [_EARLIEST, 1.7e9, 2.0**31 - 1, 2.0**32 + 7, 2.0**33 - 2, 2.0**33 + 3, 2.0**34 + 5],
)
def test_format_epoch_walking_every_float_across_millisecond_boundaries(second: float) -> None:
    # Times in order, as the emitter's clock gives them: each from the millisecond cache
    # when the previous one set it. Every float within 3 µs of each boundary (near 2**33
    # the unit in the last place is 1.9 µs: the cache's margin is at its narrowest).
    for millis in (0, 1, 499, 500, 998, 999, 1000):
        boundary = second + millis / 1000
        values = list(_walk(boundary - 3e-6, boundary + 3e-6))
        assert len(values) >= 2
        for seconds in values:
            assert format_epoch(seconds) == plain_format_epoch(seconds), seconds
        for seconds in reversed(values):  # backwards: below the cached interval, a miss
            assert format_epoch(seconds) == plain_format_epoch(seconds), seconds


@SETTINGS
@given(
    st.floats(min_value=_EARLIEST, max_value=2.0**34),
    st.lists(
        st.one_of(
            st.integers(-2_000, 2_000).map(lambda micro: micro / 1e6),  # within 2 ms
            st.sampled_from([0.0, 5e-7, -5e-7, 9.985e-4, 9.99e-4, 9.995e-4, 1e-3]),
            st.floats(-1.0, 1.0),
        ),
        max_size=30,
    ),
)
def test_format_epoch_on_runs_of_nearby_times_equals_fromtimestamp(
    start: float, steps: list[float]
) -> None:
    seconds = start
    for step in steps:  # each time next to the last: in its millisecond or just out of it
        seconds += step
        assert format_epoch(seconds) == plain_format_epoch(seconds), seconds


# == message ids =============================================================================


def plain_uuid5(namespace: uuid.UUID, tag: str, sort_keys: bool, *items: Any) -> str:
    first, second, last = items
    option = orjson.OPT_SORT_KEYS if sort_keys else None
    name = orjson.dumps([first, second, tag, last], option=option).decode()
    return str(uuid.uuid5(namespace, name))


def plain_message_id(fields: Mapping[str, Any], tenant: str) -> str:
    """The documented rule, the plain way: uuid.uuid5 over the JSON name."""
    kind = fields["type"].value
    event_id = fields.get("event_id")
    if event_id is not None:
        return plain_uuid5(MESSAGE_ID_NAMESPACE, "event_id", False, tenant, kind, event_id)
    content = {
        k: v for k, v in fields.items() if k not in ("tenant", "type", "integrations", "context")
    }
    if "timestamp" in content:
        content["timestamp"] = plain_format_timestamp(content["timestamp"])
    return plain_uuid5(MESSAGE_ID_NAMESPACE, "content", True, tenant, kind, content)


names = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["", "default", 'a"b\\c', "\x00", "\u2028", "é" * _MAX_TEXT, "x" * _MAX_TEXT]),
)


@SETTINGS
@given(
    names,
    st.one_of(st.sampled_from([k.value for k in EventKind]), names),
    st.one_of(names, json_values),
    st.sampled_from(["event_id", "content", 'ta"g']),
    st.booleans(),
)
@pytest.mark.slow  # half a second or more: the second step of .ci/run
def test_json_array_uuid5_equals_uuid5(
    first: str, second: str, last: Any, tag: str, sort_keys: bool
) -> None:
    function = json_array_uuid5(MESSAGE_ID_NAMESPACE, tag, sort_keys=sort_keys)
    expected = plain_uuid5(MESSAGE_ID_NAMESPACE, tag, sort_keys, first, second, last)
    assert function(first, second, last) == expected
    assert function(first, second, last) == expected  # with the prefix cached
    parsed = uuid.UUID(expected)
    assert (parsed.version, parsed.variant) == (5, uuid.RFC_4122)


def test_json_array_uuid5_in_another_namespace_and_unserialisable_values() -> None:
    namespace = uuid.uuid4()
    function = json_array_uuid5(namespace, "event_id")
    assert function("t", "opened", "e") == plain_uuid5(
        namespace, "event_id", False, "t", "opened", "e"
    )
    for bad in ({1: 2}, object(), 2**70):
        with pytest.raises(orjson.JSONEncodeError):
            plain_uuid5(namespace, "event_id", False, "t", "opened", bad)
        with pytest.raises(orjson.JSONEncodeError):
            function("t", "opened", bad)


def test_json_array_uuid5_cache_starts_again_when_full(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_shortcuts, "MAX_CACHED_PREFIXES", 3)
    function = json_array_uuid5(MESSAGE_ID_NAMESPACE, "event_id")
    prefixes = inspect.getclosurevars(function).nonlocals["new_prefix"].__closure__
    cache = next(c.cell_contents for c in prefixes if isinstance(c.cell_contents, dict))
    for round_ in range(3):
        for i in range(7):
            tenant = f"tenant-{i}"
            assert function(tenant, "opened", f"e{round_}") == plain_uuid5(
                MESSAGE_ID_NAMESPACE, "event_id", False, tenant, "opened", f"e{round_}"
            )
            assert len(cache) <= 3


@pytest.mark.parametrize(
    "data",
    [
        {"type": "opened", "email": "ada@example.com", "event_id": "e-1"},
        {"type": "opened", "email": "ada@example.com", "event_id": "é" * _MAX_TEXT},
        {"type": "opened", "email": "ada@example.com", "event_id": "x" * _MAX_TEXT},
        {"type": "opened", "email": "ada@example.com", "event_id": _LIMIT - 1},  # 4,300 digits
        {"type": "opened", "email": "ada@example.com", "event_id": 2**64 - 1},
        {"type": "opened", "email": "ada@example.com", "event_id": -(2**63)},
        {"type": "opened", "email": "zoë@example.com", "tenant": "t" * _MAX_TEXT},
        {"type": "opened", "email": "用户@例子.广告", "tenant": "ä"},
        {
            "type": "bounced",
            "user_id": "u-1",
            "bounce_type": "hard",
            "timestamp": "2024-02-29T23:59:59.9995+01:00",
            "ip": "2001:db8::1",
            "properties": {"when": date(2024, 2, 29), "n": Decimal("2.5"), "z": {"b": 1, "a": 2}},
        },
    ],
)
@pytest.mark.parametrize("tenant", [None, "acme", "", "é" * _MAX_TEXT])
def test_message_ids_at_the_limits_equal_uuid5(data: dict[str, Any], tenant: str | None) -> None:
    fields = normalize(data)
    scope = tenant if tenant is not None else (fields.get("tenant") or "default")
    expected = plain_message_id(fields, scope)
    assert message_id(data, tenant) == expected
    assert encode_fields(fields, scope, EventNaming(), time.time()).message_id == expected


# == serialising and building the message ====================================================


@pytest.mark.slow  # half a second or more: the second step of .ci/run
@SETTINGS
@given(json_values, json_values)
def test_json_fragment_serialises_as_the_value(value: Any, other: Any) -> None:
    fragment = json_fragment(value)
    for doc in ({"a": other, "b": value}, [value, other], {"b": [value, {"c": value}]}):
        assert orjson.dumps(_swap(doc, value, fragment)) == orjson.dumps(doc)


def _swap(doc: Any, value: Any, fragment: orjson.Fragment) -> Any:
    """``doc`` with each item that is ``value`` (the same object) replaced by ``fragment``."""
    if doc is value:
        return fragment
    if isinstance(doc, dict):
        return {k: _swap(v, value, fragment) for k, v in doc.items()}
    if isinstance(doc, list):
        return [_swap(v, value, fragment) for v in doc]
    return doc


@pytest.mark.slow  # half a second or more: the second step of .ci/run
@SETTINGS
@given(valid_records(), st.sampled_from([None, "acme"]))
def test_encoded_body_equals_the_plain_message_serialised(
    data: dict[str, Any], tenant: str | None
) -> None:
    """The body encode_fields sends (context.library and .integration as fragments, the
    message id from the inline branch, the copy) is orjson.dumps of the plain message."""
    try:
        fields = normalize(data)
    except InvalidEvent:
        return
    scope = tenant if tenant is not None else (fields.get("tenant") or "default")
    now = datetime(2026, 11, 20, 12, 0, 0, 123456, tzinfo=UTC)
    try:
        encoded = encode_fields(fields, scope, EventNaming(), now)
    except InvalidEvent:
        return  # over 32 KB
    plain = track_message(data, tenant=scope, now=now)  # dicts all through (a deep copy)
    plain["context"]["library"] = dict(_mapping._LIBRARY)  # the dicts the fragments hold
    plain["context"]["integration"] = dict(_mapping._INTEGRATION)
    assert encoded.body == orjson.dumps(plain)
    assert encoded.message_id == plain["messageId"] == plain_message_id(fields, scope)
    assert encoded == EncodedMessage(scope, plain["messageId"], fields["type"], encoded.body)


def _traced_size(make: Callable[[], bytes]) -> tuple[bytes, int]:
    """What ``make()`` returns and the memory it left allocated. It runs once untraced
    first, so that a tracer (coverage) has already recorded those lines and allocates
    nothing of its own during the measured call."""
    make()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        made = make()
        return made, tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


@SETTINGS
@given(st.binary(max_size=2000))
def test_exact_copy_equals_bytes_of_memoryview(data: bytes) -> None:
    copied = exact_copy(data)
    assert copied == bytes(memoryview(data)) == data
    assert type(copied) is bytes
    assert copied is not data or len(data) <= 1  # (CPython shares b"" and one-byte bytes)


@pytest.mark.parametrize("length", [0, 1, 100, 380, 505, 506, 507, 600, 4096, 5000, 32 * 1024])
def test_exact_copy_of_orjson_output_holds_only_its_length(length: int) -> None:
    body = orjson.dumps({"k": "x" * length})
    _, held = _traced_size(lambda: orjson.dumps({"k": "x" * length}))
    copied, copy_held = _traced_size(lambda: exact_copy(body))
    assert copied == body
    assert copy_held == sys.getsizeof(copied)  # allocated for its length, and no more
    if length < 3000:
        assert held > 4000  # orjson's 4 KiB buffer: what the copy is for
    encoded = encode_fields(
        normalize({"type": "opened", "user_id": "u", "email_subject": "s" * min(length, 8000)}),
        "t",
        EventNaming(),
        0.0,
    )
    _, encoded_held = _traced_size(lambda: exact_copy(encoded.body))
    assert encoded_held == sys.getsizeof(encoded.body)


@attrs.frozen(slots=True)
class Four:
    a: str
    b: int
    c: Any
    d: bytes = b""


@pytest.mark.slow  # half a second or more: the second step of .ci/run
@SETTINGS
@given(st.text(), st.integers(), json_values, st.binary(max_size=50))
def test_slot_constructor_equals_the_class(a: str, b: int, c: Any, d: bytes) -> None:
    construct = slot_constructor(Four)
    made, plain = construct(a, b, c, d), Four(a, b, c, d)
    assert type(made) is Four
    assert attrs.astuple(made, recurse=False) == attrs.astuple(plain, recurse=False)
    assert (made, repr(made)) == (plain, repr(plain))
    if not isinstance(c, (list, dict)):  # (unhashable)
        assert hash(made) == hash(plain)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        made.a = "changed"  # type: ignore[misc]


def test_slot_constructor_builds_encoded_messages_like_the_class() -> None:
    body = orjson.dumps({"a": 1})
    made = _mapping._new_message("t", "id", EventKind.OPENED, body)
    plain = EncodedMessage("t", "id", EventKind.OPENED, body)
    assert (made, repr(made), hash(made)) == (plain, repr(plain), hash(plain))
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        made.body = b""  # type: ignore[misc]


@attrs.frozen(slots=True)
class PlainEncodedMessage:
    """EncodedMessage as it was written before it became a tuple: the plain version."""

    tenant: str
    message_id: str
    kind: EventKind | str
    body: bytes = attrs.field(repr=lambda b: f"<{len(b)} bytes>")


def _behaviour(make: Callable[..., Any], fields: tuple[Any, ...], other: Any) -> list[Any]:
    """What can be observed of ``make(*fields)`` through its API, its class name aside."""
    m, twin = make(*fields), make(*fields)
    seen: list[Any] = [
        [getattr(m, name) for name in ("tenant", "message_id", "kind", "body")],
        repr(m).replace("Plain", "", 1),
        m == twin,
        m != twin,
        hash(m) == hash(twin),
        {m: 1}[twin],
        m == other,
        other == m,
        m != other,
        other != m,
        m == fields,
        fields == m,
        m != fields,
        fields != m,
        m == make(*other) if isinstance(other, tuple) and len(other) == 4 else None,
        copy.copy(m) == m,
        pickle.loads(pickle.dumps(m)) == m,
    ]
    for change in (lambda: setattr(m, "body", b""), lambda: delattr(m, "tenant")):
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            change()
    for compare in (operator.lt, operator.le, operator.gt, operator.ge):
        with pytest.raises(TypeError):
            compare(m, twin)
    return seen


message_fields = st.tuples(
    st.text(max_size=20),
    st.text(max_size=40),
    st.one_of(st.sampled_from(list(EventKind)), st.sampled_from(["track", "identify"])),
    st.binary(max_size=60),
)


@SETTINGS
@given(message_fields, st.one_of(message_fields, st.none(), st.integers(), st.text()))
def test_encoded_message_behaves_as_the_attrs_class_it_was(
    fields: tuple[Any, ...], other: Any
) -> None:
    plain = _behaviour(PlainEncodedMessage, fields, other)
    assert _behaviour(EncodedMessage, fields, other) == plain
    assert _behaviour(_mapping._new_message, fields, other) == plain
    assert type(_mapping._new_message(*fields)) is EncodedMessage
    assert _mapping._make_message(fields) == EncodedMessage(*fields)


def test_encoded_messages_of_other_classes_are_not_equal() -> None:
    fields = ("t", "id", EventKind.OPENED, b"{}")
    message = EncodedMessage(*fields)
    assert message != PlainEncodedMessage(*fields)
    assert message != _mapping._EncodedFields(*fields)  # its base, a plain NamedTuple
    assert _mapping._EncodedFields(*fields) != message


def _refused_classes() -> Iterator[type[Any]]:
    @attrs.define(slots=False, frozen=True)
    class NotSlotted:
        a: int
        b: int
        c: int
        d: int

    @attrs.frozen(slots=True)
    class Three:
        a: int
        b: int
        c: int

    @attrs.frozen(slots=True)
    class Converted:
        a: int = attrs.field(converter=int)
        b: int = 0
        c: int = 0
        d: int = 0

    @attrs.frozen(slots=True)
    class Validated:
        a: int = attrs.field(validator=attrs.validators.instance_of(int))
        b: int = 0
        c: int = 0
        d: int = 0

    @attrs.frozen(slots=True)
    class NotInit:
        a: int
        b: int
        c: int
        d: int = attrs.field(init=False, default=0)

    @attrs.frozen(slots=True)
    class PostInit:
        a: int
        b: int
        c: int
        d: int

        def __attrs_post_init__(self) -> None:
            pass

    yield from (NotSlotted, Three, Converted, Validated, NotInit, PostInit)


@pytest.mark.parametrize("cls", list(_refused_classes()), ids=lambda c: c.__name__)
def test_slot_constructor_refuses_classes_it_cannot_build_the_same(cls: type[Any]) -> None:
    with pytest.raises(TypeError, match="is not a frozen slotted class of four plain fields"):
        slot_constructor(cls)


# == the per-kind methods of the Emitter =======================================================


class _Recorder:
    """Stands in for an Emitter: ``emit`` records what it is given and returns a value."""

    _emit_kind = Emitter._emit_kind

    def __init__(self, refuse: bool = False) -> None:
        self.emitted: list[dict[str, Any]] = []
        self.refuse = refuse

    def emit(self, fields: dict[str, Any]) -> Any:
        if self.refuse:
            raise InvalidEvent("email", "refused")
        self.emitted.append(fields)
        return len(self.emitted)


keyword_values = st.one_of(st.none(), st.text(max_size=3), st.integers(), st.just({"a": 1}))


@pytest.mark.slow  # half a second or more: the second step of .ci/run
@SETTINGS
@given(st.sampled_from(list(EventKind)), st.data())
def test_each_per_kind_method_equals_its_plain_body(kind: EventKind, data: st.DataObject) -> None:
    method = getattr(Emitter, kind.value)
    plain = method.__wrapped__
    names = list(inspect.signature(plain).parameters)[1:]
    given_ = data.draw(st.dictionaries(st.sampled_from(names), keyword_values))
    twin_self, plain_self = _Recorder(), _Recorder()
    assert method(twin_self, **given_) == plain(plain_self, **given_) == 1
    assert [list(d.items()) for d in twin_self.emitted] == [
        list(d.items()) for d in plain_self.emitted
    ]
    assert twin_self.emitted[0]["type"] is kind
    assert list(twin_self.emitted[0])[-1] == "type"  # the dict's order too
    with pytest.raises(InvalidEvent):  # what emit raises, both raise
        method(_Recorder(refuse=True), **given_)
    with pytest.raises(InvalidEvent):
        plain(_Recorder(refuse=True), **given_)


@pytest.mark.parametrize("kind", list(EventKind), ids=lambda k: k.value)
def test_a_per_kind_methods_twin_refuses_unknown_and_positional_arguments_alike(
    kind: EventKind,
) -> None:
    method = getattr(Emitter, kind.value)
    for call in (
        lambda f: f(_Recorder(), tenant_typo="x"),
        lambda f: f(_Recorder(), "x"),
        lambda f: f(_Recorder(), tenant="a", **{"tenant": "b"}),
    ):
        outcomes = []
        for function in (method, method.__wrapped__):
            with pytest.raises(TypeError) as refused:
                call(function)
            outcomes.append(str(refused.value).split("()", 1)[1])
        assert outcomes[0] == outcomes[1]
    assert inspect.signature(method) == inspect.signature(method.__wrapped__)
    assert method.__doc__ == method.__wrapped__.__doc__
    assert method.__name__ == kind.value


def _bad_positional(self: Any, a: Any = None) -> None: ...
def _bad_default(self: Any, *, a: Any = 1) -> None: ...
def _bad_keyword(self: Any, *, kind: Any = None) -> None: ...
def _no_self(*, a: Any = None) -> None: ...


@pytest.mark.parametrize("plain", [_bad_positional, _bad_default, _bad_keyword, _no_self])
def test_emits_keywords_refuses_methods_it_cannot_build_the_same(plain: Any) -> None:
    with pytest.raises(TypeError, match="is not a method"):
        emits_keywords(EventKind.OPENED)(plain)


# -- HTTP answer headers ---------------------------------------------------------------------


def plain_http_headers(lines: list[bytes]) -> http.client.HTTPMessage:
    """What ``http.client.parse_headers`` makes of a header block it has read."""
    parser = email.parser.Parser(_class=http.client.HTTPMessage)
    message: http.client.HTTPMessage = parser.parsestr(b"".join(lines).decode("iso-8859-1"))
    return message


_HEADER_NAMES = st.sampled_from(
    [b"Content-Type", b"content-TYPE", b"Content-Length", b"Retry-After", b"Connection"]
) | st.binary(min_size=0, max_size=6)
_HEADER_VALUES = st.sampled_from(
    [
        b"application/json",
        b"text/html; charset=utf-8",
        b"multipart/mixed",
        b"Multipart/Mixed; boundary=x",
        b"message/rfc822",
        b"MESSAGE/delivery-status",
        b"17",
        b" 2 ",
        b"close",
        b"\tx\t",
        b"",
        b"a:b",
        b"x\ry",
        b"\x85",
    ]
) | st.binary(max_size=8)
_LINE_ENDS = st.sampled_from([b"\r\n", b"\n", b"\r\n", b"\r\n", b"\r"])
_FIRST = st.sampled_from([b"", b" ", b"\t", b"From "])


@st.composite
def header_blocks(draw: st.DrawFn) -> list[bytes]:
    """Header blocks as ``http.client`` reads them: mostly plain ``Name: value`` lines,
    with folded lines, odd bytes, names without a colon, bare CRs and early ends."""
    lines = []
    for _ in range(draw(st.integers(0, 5))):
        name = draw(_HEADER_NAMES)
        colon = draw(st.sampled_from([b":", b": ", b":  \t", b" :", b""]))
        lines.append(draw(_FIRST) * draw(st.booleans()) + name + colon + draw(_HEADER_VALUES))
    block = [line + draw(_LINE_ENDS) for line in lines]
    block.append(draw(st.sampled_from([b"\r\n", b"\n", b""])))
    return block


@pytest.mark.slow  # half a second or more: the second step of .ci/run
@SETTINGS
@given(header_blocks())
@example([b"Content-Type: application/json\r\n", b"Content-Length: 17\r\n", b"\r\n"])
@example([b"\r\n"])
@example([b""])
@example([b"X: a\r\n", b" folded\r\n", b"\r\n"])
@example([b"X: a \t \r\n", b"\n"])
@example([b":empty name\r\n", b"\r\n"])
@example([b"Content-Type: multipart/mixed\r\n", b"\r\n"])
@example([b"Content-Type: multipart/mixed; boundary=x\r\n", b"\r\n"])
@example([b"Content-Type: message/rfc822\r\n", b"\r\n"])
@example([b"X: a\r\n", b""])
def test_http_headers_is_the_message_parse_headers_makes(lines: list[bytes]) -> None:
    assert message_state(http_headers(lines)) == message_state(plain_http_headers(lines))


def test_http_headers_sets_plain_lines_without_the_email_parser() -> None:
    lines = [b"Content-Type: application/json\r\n", b"Retry-After: 2\r\n", b"\r\n"]
    with mock.patch.object(email.parser.Parser, "parsestr", side_effect=AssertionError):
        message = http_headers(lines)
    assert message.items() == [("Content-Type", "application/json"), ("Retry-After", "2")]
