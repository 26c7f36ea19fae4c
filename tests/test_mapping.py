"""Tests of the mapping from a callback record to one Segment track message."""

from __future__ import annotations

import enum
import json
import re
import uuid
from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import orjson
import pytest
from freezegun import freeze_time

from selligent_segment import (
    CallbackRecord,
    EncodedMessage,
    EventKind,
    EventNaming,
    InvalidEvent,
    __version__,
    encode,
    message_id,
    track_message,
)
from selligent_segment._mapping import MAX_MESSAGE_BYTES, MESSAGE_ID_NAMESPACE, encode_fields

UTC = timezone.utc
NOW = datetime(2030, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
LIBRARY = {"name": "selligent-segment", "version": __version__}
INTEGRATION = {"name": "selligent", "version": __version__}
ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def event_id_uuid(tenant: str, kind: str, event_id: str) -> str:
    """The documented id: UUIDv5(namespace, compact JSON [tenant, kind, "event_id", id])."""
    name = json.dumps([tenant, kind, "event_id", event_id], separators=(",", ":"))
    return str(uuid.uuid5(MESSAGE_ID_NAMESPACE, name))


def content_uuid(tenant: str, kind: str, content: dict[str, Any]) -> str:
    """The documented id without event_id: over the sorted compact JSON of the content."""
    name = json.dumps([tenant, kind, "content", content], separators=(",", ":"), sort_keys=True)
    return str(uuid.uuid5(MESSAGE_ID_NAMESPACE, name))


def walk(value: Any, path: str = "$") -> Iterator[tuple[str, Any]]:
    yield path, value
    if isinstance(value, dict):
        for key, item in value.items():
            yield from walk(item, f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from walk(item, f"{path}[{i}]")


def nulls(message: dict[str, Any]) -> list[str]:
    return [path for path, value in walk(message) if value is None]


# --- the six kinds, whole messages -------------------------------------------------------

CASES: list[tuple[dict[str, Any], str, dict[str, Any]]] = [
    (
        {
            "type": "delivered",
            "tenant": "acme",
            "user_id": "u-1001",
            "email": " Ada@Example.COM ",
            "event_id": "evt-1",
            "timestamp": "2026-11-20T09:15:00+01:00",
            "email_id": "em-42",
            "email_subject": "November news",
            "campaign_id": 7,
            "campaign_name": "November newsletter",
        },
        "acme",
        {
            "type": "track",
            "event": "Email Delivered",
            "userId": "u-1001",
            "properties": {
                "email_id": "em-42",
                "email_subject": "November news",
                "campaign_id": "7",
                "campaign_name": "November newsletter",
            },
            "context": {
                "library": LIBRARY,
                "integration": INTEGRATION,
                "traits": {"email": "ada@example.com"},
            },
            "timestamp": "2026-11-20T08:15:00.000Z",
            "messageId": event_id_uuid("acme", "delivered", "evt-1"),
        },
    ),
    (
        {
            "type": "open",
            "email": "Grace@Example.org",
            "event_id": "evt-2",
            "timestamp": "2026-11-20T09:20:00.123456Z",
            "email_id": "em-43",
            "ip": "2001:DB8::9",
            "user_agent": "Mozilla/5.0",
        },
        "acme",
        {
            "type": "track",
            "event": "Email Opened",
            "anonymousId": "grace@example.org",
            "properties": {"email_id": "em-43"},
            "context": {
                "library": LIBRARY,
                "integration": INTEGRATION,
                "traits": {"email": "grace@example.org"},
                "ip": "2001:db8::9",
                "userAgent": "Mozilla/5.0",
            },
            "timestamp": "2026-11-20T09:20:00.123Z",
            "messageId": event_id_uuid("acme", "opened", "evt-2"),
        },
    ),
    (
        {
            "type": "click",
            "user_id": "U-1001",
            "event_id": 3,
            "timestamp": "2026-11-20T04:21:30.500-05:00",
            "email_id": "em-42",
            "campaign_id": "c-7",
            "link_url": "https://example.com/offer?a=1&b=2",
            "link_id": "l-1",
            "ip": "203.0.113.9",
        },
        "acme",
        {
            "type": "track",
            "event": "Email Link Clicked",
            "userId": "U-1001",
            "properties": {
                "email_id": "em-42",
                "campaign_id": "c-7",
                "link_url": "https://example.com/offer?a=1&b=2",
                "link_id": "l-1",
            },
            "context": {"library": LIBRARY, "integration": INTEGRATION, "ip": "203.0.113.9"},
            "timestamp": "2026-11-20T09:21:30.500Z",
            "messageId": event_id_uuid("acme", "link_clicked", "3"),
        },
    ),
    (
        {
            "type": "unsubscribe",
            "tenant": "globex",
            "email": "linus@example.net",
            "event_id": "evt-4",
            "timestamp": "2026-11-20T10:00:00Z",
            "campaign_name": "Weekly",
            "list_id": "weekly",
            "list_name": "Weekly digest",
            "user_agent": "Thunderbird",
        },
        "globex",
        {
            "type": "track",
            "event": "Email Unsubscribed",
            "anonymousId": "linus@example.net",
            "properties": {
                "campaign_name": "Weekly",
                "list_id": "weekly",
                "list_name": "Weekly digest",
            },
            "context": {
                "library": LIBRARY,
                "integration": INTEGRATION,
                "traits": {"email": "linus@example.net"},
                "userAgent": "Thunderbird",
            },
            "timestamp": "2026-11-20T10:00:00.000Z",
            "messageId": event_id_uuid("globex", "unsubscribed", "evt-4"),
        },
    ),
    (
        {
            "type": "bounce",
            "email": "nobody@example.net",
            "event_id": "evt-5",
            "timestamp": "2026-11-20T10:01:00Z",
            "email_id": "em-9",
            "bounce_type": "HARD",
            "bounce_reason": "550 5.1.1 user unknown",
            "smtp_status": "5.1.1",
            "properties": {"mta": "mx-3"},
        },
        "globex",
        {
            "type": "track",
            "event": "Email Bounced",
            "anonymousId": "nobody@example.net",
            "properties": {
                "mta": "mx-3",
                "email_id": "em-9",
                "bounce_type": "hard",
                "bounce_reason": "550 5.1.1 user unknown",
                "smtp_status": "5.1.1",
            },
            "context": {
                "library": LIBRARY,
                "integration": INTEGRATION,
                "traits": {"email": "nobody@example.net"},
            },
            "timestamp": "2026-11-20T10:01:00.000Z",
            "messageId": event_id_uuid("globex", "bounced", "evt-5"),
        },
    ),
    (
        {
            "type": "complaint",
            "user_id": "u-77",
            "email": "ken@example.net",
            "event_id": "evt-6",
            "timestamp": "2026-11-20T10:05:00Z",
            "campaign_id": "c-9",
            "properties": {"feedback_loop": "example-isp", "report": {"count": 2}},
        },
        "globex",
        {
            "type": "track",
            "event": "Email Marked as Spam",
            "userId": "u-77",
            "properties": {
                "feedback_loop": "example-isp",
                "report": {"count": 2},
                "campaign_id": "c-9",
            },
            "context": {
                "library": LIBRARY,
                "integration": INTEGRATION,
                "traits": {"email": "ken@example.net"},
            },
            "timestamp": "2026-11-20T10:05:00.000Z",
            "messageId": event_id_uuid("globex", "marked_as_spam", "evt-6"),
        },
    ),
]
CASE_IDS = [case[2]["event"] for case in CASES]


@pytest.mark.parametrize(("data", "tenant", "expected"), CASES, ids=CASE_IDS)
def test_exact_message_for_each_kind(
    data: dict[str, Any], tenant: str, expected: dict[str, Any]
) -> None:
    assert track_message(data, tenant=tenant) == expected
    assert track_message(CallbackRecord.from_dict(data), tenant=tenant) == expected


def test_cases_cover_all_six_kinds() -> None:
    assert {CallbackRecord.from_dict(data).kind for data, _, _ in CASES} == set(EventKind)


@pytest.mark.parametrize(("data", "tenant", "expected"), CASES, ids=CASE_IDS)
def test_encode_body_is_the_compact_json_of_track_message(
    data: dict[str, Any], tenant: str, expected: dict[str, Any]
) -> None:
    record = CallbackRecord.from_dict(data)
    encoded = encode(record, tenant=tenant)
    assert isinstance(encoded, EncodedMessage)
    assert encoded.body == orjson.dumps(track_message(record, tenant=tenant))
    assert orjson.loads(encoded.body) == expected
    assert encoded.tenant == tenant
    assert encoded.kind is record.kind
    assert encoded.message_id == expected["messageId"] == message_id(record, tenant)
    assert encode(data, tenant=tenant) == encoded
    assert encode_fields(record.fields(), tenant, EventNaming()) == encoded


def test_encoded_bodies_hold_only_their_own_bytes() -> None:
    # orjson's result keeps a 4 KiB buffer; a queued message must cost about its length.
    import tracemalloc

    fields = CallbackRecord.from_dict({"type": "open", "email": "a@b.co"}).fields()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = [encode_fields(fields, "acme", EventNaming()) for _ in range(500)]
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    body = len(kept[0].body)
    assert body < 400
    assert held < 500 * (body + 400)  # bodies, ids and objects; 4 KiB each would fail


@pytest.mark.parametrize(("data", "tenant", "expected"), CASES, ids=CASE_IDS)
def test_no_none_anywhere(data: dict[str, Any], tenant: str, expected: dict[str, Any]) -> None:
    assert nulls(track_message(data, tenant=tenant, now=NOW)) == []


def test_minimal_record_gives_minimal_message() -> None:
    message = track_message({"type": "delivered", "email": "a@b.co"}, now=NOW)
    assert message == {
        "type": "track",
        "event": "Email Delivered",
        "anonymousId": "a@b.co",
        "properties": {},
        "context": {"library": LIBRARY, "integration": INTEGRATION, "traits": {"email": "a@b.co"}},
        "timestamp": "2030-01-02T03:04:05.678Z",
        "messageId": content_uuid("default", "delivered", {"email": "a@b.co"}),
    }


def test_track_message_does_not_touch_its_input() -> None:
    data = {"type": "open", "email": " A@B.CO ", "properties": {"k": [1]}}
    snapshot = json.loads(json.dumps(data))
    track_message(data, now=NOW)
    assert data == snapshot


def test_invalid_dict_input_is_refused() -> None:
    with pytest.raises(InvalidEvent, match=r"^email: not a plausible"):
        track_message({"type": "opened", "email": "nope"})
    with pytest.raises(InvalidEvent, match=r"^colour: unknown field"):
        encode({"type": "opened", "email": "a@b.co", "colour": "red"})


# --- identity, traits, context -----------------------------------------------------------


def test_user_id_wins_and_email_goes_to_traits() -> None:
    message = track_message({"type": "opened", "user_id": " U-9 ", "email": "X@Y.Z"}, now=NOW)
    assert message["userId"] == "U-9"  # trimmed, case kept
    assert "anonymousId" not in message
    assert message["context"]["traits"] == {"email": "x@y.z"}


def test_email_only_is_the_anonymous_id_trimmed_and_lower_cased() -> None:
    message = track_message({"type": "opened", "email": "  Ada.Lovelace@Example.COM "}, now=NOW)
    assert message["anonymousId"] == "ada.lovelace@example.com"
    assert "userId" not in message
    assert message["context"]["traits"] == {"email": "ada.lovelace@example.com"}


def test_user_id_only_has_no_traits() -> None:
    message = track_message({"type": "opened", "user_id": 12}, now=NOW)
    assert message["userId"] == "12"
    assert "anonymousId" not in message
    assert "traits" not in message["context"]


def test_blank_user_id_falls_back_to_the_email() -> None:
    message = track_message({"type": "opened", "user_id": "  ", "email": "A@B.co"}, now=NOW)
    assert message["anonymousId"] == "a@b.co"
    assert "userId" not in message


@pytest.mark.parametrize(
    ("extra", "context"),
    [
        ({}, {}),
        ({"ip": "198.51.100.7"}, {"ip": "198.51.100.7"}),
        ({"ip": "2001:0DB8:0000::0001"}, {"ip": "2001:db8::1"}),
        ({"user_agent": " UA/1 "}, {"userAgent": "UA/1"}),
        ({"ip": "10.0.0.1", "user_agent": "UA"}, {"ip": "10.0.0.1", "userAgent": "UA"}),
        ({"ip": "", "user_agent": " "}, {}),
    ],
)
def test_ip_and_user_agent_only_when_given(extra: dict[str, Any], context: dict[str, Any]) -> None:
    message = track_message({"type": "opened", "user_id": "u", **extra}, now=NOW)
    assert message["context"] == {"library": LIBRARY, "integration": INTEGRATION, **context}


def test_context_library_and_integration() -> None:
    context = track_message({"type": "bounced", "user_id": "u"}, now=NOW)["context"]
    assert context["library"] == {"name": "selligent-segment", "version": __version__}
    assert context["integration"] == {"name": "selligent", "version": __version__}
    assert re.fullmatch(r"\d+\.\d+\.\d+", __version__)


def test_returned_context_is_not_shared_between_messages() -> None:
    first = track_message({"type": "opened", "user_id": "u"}, now=NOW)
    try:
        first["context"]["library"]["name"] = "changed"
        first["context"]["integration"]["version"] = "9.9.9"
        second = track_message({"type": "opened", "user_id": "u"}, now=NOW)
        assert second["context"]["library"] == LIBRARY
        assert second["context"]["integration"] == INTEGRATION
    finally:  # undo the damage for the rest of the session while the bug stands
        first["context"]["library"].update(LIBRARY)
        first["context"]["integration"].update(INTEGRATION)


def test_returned_properties_do_not_alias_the_record() -> None:
    record = CallbackRecord("opened", user_id="u", properties={"meta": {"n": 1}})
    message = track_message(record, now=NOW)
    message["properties"]["meta"]["n"] = 2
    assert record.properties == {"meta": {"n": 1}}


# --- properties ----------------------------------------------------------------------------


def test_spec_properties_only_when_present() -> None:
    message = track_message(
        {"type": "link_clicked", "user_id": "u", "email_id": "e", "link_url": " "}, now=NOW
    )
    assert message["properties"] == {"email_id": "e"}


def test_extras_are_merged_under_the_spec_properties() -> None:
    message = track_message(
        {
            "type": "bounced",
            "user_id": "u",
            "bounce_type": "soft",
            "email_subject": "Hi",
            "properties": {"attempt": 3, "mx": {"host": "mx1"}},
        },
        now=NOW,
    )
    assert message["properties"] == {
        "attempt": 3,
        "mx": {"host": "mx1"},
        "bounce_type": "soft",
        "email_subject": "Hi",
    }


def test_null_extra_property_is_not_sent() -> None:
    message = track_message(
        {"type": "opened", "user_id": "u", "properties": {"gone": None, "kept": 1}}, now=NOW
    )
    assert message["properties"] == {"kept": 1}


class Plan(enum.Enum):
    GOLD = "gold"


class Tier(str, enum.Enum):
    TOP = "top"


def test_rich_property_values_serialise_sensibly() -> None:
    record = CallbackRecord(
        "opened",
        user_id="u",
        properties={
            "seen_at": datetime(2026, 11, 20, 9, 15, 0, 42000, tzinfo=timezone(timedelta(hours=2))),
            "local_at": datetime(2026, 11, 20, 9, 15),
            "birthday": date(1815, 12, 10),
            "price": Decimal("19.99"),
            "qty": Decimal("2.000"),
            "ref": uuid.UUID("00000000-0000-4000-8000-000000000001"),
            "plan": Plan.GOLD,
            "tier": Tier.TOP,
            "tags": ("a", "b"),
        },
    )
    body = orjson.loads(encode(record).body)
    assert body["properties"] == {
        "seen_at": "2026-11-20T07:15:00.042Z",
        "local_at": "2026-11-20T09:15:00",
        "birthday": "1815-12-10",
        "price": 19.99,
        "qty": 2,
        "ref": "00000000-0000-4000-8000-000000000001",
        "plan": "gold",
        "tier": "top",
        "tags": ["a", "b"],
    }
    assert isinstance(body["properties"]["qty"], int)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), Decimal("-Infinity")])
def test_non_finite_numbers_are_refused(bad: object) -> None:
    with pytest.raises(InvalidEvent) as info:
        encode({"type": "opened", "user_id": "u", "properties": {"x": {"y": [bad]}}})
    assert info.value.field == "properties.x.y[0]"


# --- timestamps ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "sent"),
    [
        ("2026-11-20T09:15:00+01:00", "2026-11-20T08:15:00.000Z"),
        ("2026-11-20T09:15:00.100+05:30", "2026-11-20T03:45:00.100Z"),
        ("2026-11-20T09:15:00.999999-02:00", "2026-11-20T11:15:00.999Z"),
        ("2025-12-31T22:30:00-03:00", "2026-01-01T01:30:00.000Z"),
        ("2024-03-01T00:30:00+14:00", "2024-02-29T10:30:00.000Z"),
        ("2026-11-20T09:15:00Z", "2026-11-20T09:15:00.000Z"),
        (
            datetime(2026, 6, 1, 12, tzinfo=timezone(timedelta(hours=-7))),
            "2026-06-01T19:00:00.000Z",
        ),
    ],
)
def test_timestamp_is_utc_with_milliseconds(given: object, sent: str) -> None:
    message = track_message({"type": "opened", "user_id": "u", "timestamp": given}, now=NOW)
    assert message["timestamp"] == sent


def test_missing_timestamp_is_now() -> None:
    with freeze_time("2031-05-06 07:08:09.123456"):
        message = track_message({"type": "opened", "user_id": "u"})
        blank = track_message({"type": "opened", "user_id": "u", "timestamp": " "})
    assert message["timestamp"] == blank["timestamp"] == "2031-05-06T07:08:09.123Z"


def test_missing_timestamp_follows_the_clock() -> None:
    with freeze_time("2031-05-06 07:08:09") as clock:
        first = encode({"type": "opened", "user_id": "u"})
        clock.tick(1.5)
        second = encode({"type": "opened", "user_id": "u"})
    assert orjson.loads(first.body)["timestamp"] == "2031-05-06T07:08:09.000Z"
    assert orjson.loads(second.body)["timestamp"] == "2031-05-06T07:08:10.500Z"
    assert first.message_id == second.message_id  # the id never depends on the clock


def test_now_stands_in_only_for_a_missing_timestamp() -> None:
    other = datetime(2031, 1, 1, 1, tzinfo=timezone(timedelta(hours=1)))
    assert track_message({"type": "opened", "user_id": "u"}, now=other)["timestamp"] == (
        "2031-01-01T00:00:00.000Z"
    )
    given = {"type": "opened", "user_id": "u", "timestamp": "2026-11-20T09:15:00Z"}
    assert track_message(given, now=other)["timestamp"] == "2026-11-20T09:15:00.000Z"


# --- naming --------------------------------------------------------------------------------


def test_profiles_and_overrides_reach_the_message() -> None:
    data = {"type": "unsubscribed", "email": "a@b.co"}
    assert track_message(data, now=NOW)["event"] == "Email Unsubscribed"
    spec = EventNaming(profile="segment-spec")
    assert track_message(data, naming=spec, now=NOW)["event"] == "Unsubscribed"
    naming = EventNaming(
        overrides={"unsubscribed": "Opted Out"},
        tenant_overrides={"acme": {"unsubscribe": "Acme Opt-Out"}},
    )
    assert track_message(data, naming=naming, now=NOW)["event"] == "Opted Out"
    assert track_message(data, tenant="acme", naming=naming, now=NOW)["event"] == "Acme Opt-Out"
    assert encode(data, tenant="acme", naming=naming).body.count(b'"Acme Opt-Out"') == 1


# --- message ids -----------------------------------------------------------------------------

BASE = {
    "type": "link_clicked",
    "tenant": "acme",
    "email": "ada@example.com",
    "timestamp": "2026-11-20T09:15:00Z",
    "email_id": "em-1",
    "link_url": "https://example.com/a",
    "properties": {"position": 1},
}


def test_message_id_golden_values() -> None:
    # Never change: a replay by a newer version must deduplicate against an older one.
    assert message_id({"type": "delivered", "email": "a@b.co", "event_id": "evt-1"}, "acme") == (
        "cafcf1bd-3d7e-5f56-8380-be6c7da31bb0"
    )
    content = {
        "type": "opened",
        "email": "grace@example.org",
        "timestamp": "2026-11-20T09:20:00Z",
        "email_id": "em-43",
        "properties": {"b": 1, "a": [1, 2]},
    }
    assert message_id(content, "acme") == "320d0f50-f469-5c59-9ced-46f9df287c30"
    assert uuid.UUID("5d0b8f52-6a53-5f0e-9a4c-3c8e2f1f7a11") == MESSAGE_ID_NAMESPACE


def test_message_id_is_a_standard_uuid5() -> None:
    with_id = {"type": "bounce", "email": "a@b.co", "event_id": "mta-1"}
    assert message_id(with_id, "t") == event_id_uuid("t", "bounced", "mta-1")
    assert uuid.UUID(message_id(with_id, "t")).version == 5
    content = {**BASE, "properties": {"z": 1, "a": {"y": 2, "b": 3}}}
    expected = {k: v for k, v in content.items() if k not in ("type", "tenant")}
    expected["timestamp"] = "2026-11-20T09:15:00.000Z"
    assert message_id(content, "t") == content_uuid("t", "link_clicked", expected)


def test_same_tenant_kind_and_event_id_give_the_same_id() -> None:
    a = {**BASE, "event_id": "evt-9"}
    b = {
        "type": "click",
        "user_id": "someone-else",
        "event_id": " evt-9 ",
        "timestamp": "2026-01-01T00:00:00Z",
        "link_id": "other",
    }
    assert message_id(a, "acme") == message_id(b, "acme")
    assert encode(a, tenant="acme").message_id == encode(b, tenant="acme").message_id


def test_int_and_text_event_ids_agree() -> None:
    a = {"type": "opened", "user_id": "u", "event_id": 42}
    b = {"type": "opened", "user_id": "u", "event_id": "42"}
    assert message_id(a, "acme") == message_id(b, "acme")


def test_other_tenant_gives_another_id() -> None:
    data = {**BASE, "event_id": "evt-9"}
    ids = {message_id(data, t) for t in ["acme", "globex", "", "ACME", "acme "]}
    assert len(ids) == 5
    assert message_id(BASE, "acme") != message_id(BASE, "globex")


@pytest.mark.parametrize("with_event_id", [True, False])
def test_other_kind_gives_another_id(with_event_id: bool) -> None:
    extra = {"event_id": "evt-9"} if with_event_id else {}
    ids = {
        message_id({"type": kind.value, "email": "a@b.co", **extra}, "acme") for kind in EventKind
    }
    assert len(ids) == len(EventKind)


def test_record_tenant_is_used_when_no_tenant_argument_is_given() -> None:
    acme = CallbackRecord("opened", user_id="u", event_id="e1", tenant="acme")
    globex = CallbackRecord("opened", user_id="u", event_id="e1", tenant="globex")
    assert message_id(acme) != message_id(globex)
    naming = EventNaming(tenant_overrides={"acme": {"opened": "Acme Open"}})
    assert track_message(acme, naming=naming, now=NOW)["event"] == "Acme Open"


def test_identical_replay_without_event_id_gives_the_same_id() -> None:
    first = encode(CallbackRecord.from_dict(BASE), tenant="acme")
    again = encode(dict(BASE), tenant="acme")
    assert first.message_id == again.message_id
    assert first.body == again.body


def test_same_instant_in_another_offset_is_the_same_content() -> None:
    moved = {**BASE, "timestamp": "2026-11-20T10:15:00+01:00"}
    assert message_id(moved, "acme") == message_id(BASE, "acme")


def test_missing_timestamp_content_id_is_stable() -> None:
    data = {k: v for k, v in BASE.items() if k != "timestamp"}
    with freeze_time("2030-01-01"):
        a = message_id(data, "acme")
    with freeze_time("2031-01-01"):
        b = message_id(data, "acme")
    assert a == b
    assert a != message_id(BASE, "acme")


@pytest.mark.parametrize(
    "change",
    [
        {"type": "opened", "link_url": None},
        {"email": "grace@example.com"},
        {"user_id": "u-1"},
        {"timestamp": "2026-11-20T09:15:00.001Z"},
        {"timestamp": None},
        {"email_id": "em-2"},
        {"email_subject": "Hello"},
        {"campaign_id": "c-1"},
        {"campaign_name": "Camp"},
        {"link_url": "https://example.com/b"},
        {"link_id": "l-1"},
        {"ip": "203.0.113.1"},
        {"user_agent": "UA"},
        {"properties": {"position": 2}},
        {"properties": {"position": 1, "extra": True}},
        {"properties": None},
    ],
)
def test_any_content_change_changes_the_content_id(change: dict[str, Any]) -> None:
    changed = {**BASE, **change}
    assert message_id(changed, "acme") != message_id(BASE, "acme")


def test_tenant_field_is_not_content() -> None:
    without = {k: v for k, v in BASE.items() if k != "tenant"}
    assert message_id(without, "acme") == message_id(BASE, "acme")


def test_property_key_order_does_not_matter() -> None:
    a = {**BASE, "properties": {"a": 1, "b": {"x": 1, "y": 2}}}
    b = {**BASE, "properties": {"b": {"y": 2, "x": 1}, "a": 1}}
    assert message_id(a, "acme") == message_id(b, "acme")


@pytest.mark.parametrize(("data", "tenant", "expected"), CASES, ids=CASE_IDS)
def test_id_charset_and_length(data: dict[str, Any], tenant: str, expected: dict[str, Any]) -> None:
    for candidate in (data, {k: v for k, v in data.items() if k != "event_id"}):
        mid = message_id(candidate, tenant)
        assert ID_RE.match(mid)
        assert len(mid) == 36


def test_long_and_unicode_event_ids_still_give_short_ids() -> None:
    mid = message_id({"type": "opened", "user_id": "u", "event_id": "é/ø " * 2000}, "ténant")
    assert ID_RE.match(mid)


# --- size limit ------------------------------------------------------------------------------


def _with_blob(n: int) -> dict[str, Any]:
    return {"type": "opened", "user_id": "u", "event_id": "e", "properties": {"blob": "x" * n}}


def test_message_over_32_kb_is_refused_naming_its_size() -> None:
    data = _with_blob(40_000)
    size = len(orjson.dumps(track_message(data, now=NOW)))
    with pytest.raises(InvalidEvent) as info:
        encode(data, now=NOW)
    assert info.value.field == "record"
    assert f"{size} bytes" in info.value.reason
    assert "32 KB" in info.value.reason
    assert str(MAX_MESSAGE_BYTES) in info.value.reason


def test_size_limit_is_exactly_32768_bytes() -> None:
    assert MAX_MESSAGE_BYTES == 32768
    base = len(orjson.dumps(track_message(_with_blob(0), now=NOW)))
    fits = encode(_with_blob(MAX_MESSAGE_BYTES - base), now=NOW)
    assert len(fits.body) == MAX_MESSAGE_BYTES
    with pytest.raises(InvalidEvent, match=f"is {MAX_MESSAGE_BYTES + 1} bytes"):
        encode(_with_blob(MAX_MESSAGE_BYTES - base + 1), now=NOW)


def test_size_counts_utf8_bytes_not_characters() -> None:
    # 8,192 characters (the longest text field allowed) but 32,768 bytes of UTF-8.
    data = {"type": "opened", "user_id": "u", "email_subject": "😀" * 8192}
    with pytest.raises(InvalidEvent, match="over Segment's 32 KB limit"):
        encode(data, now=NOW)
