"""Tests of the callback record: validation, normalisation, aliases, immutability."""

from __future__ import annotations

import contextlib
import enum
import uuid
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import attrs
import orjson
import pytest
from freezegun import freeze_time
from hypothesis import given
from hypothesis import strategies as st

from selligent_segment import (
    CallbackRecord,
    EventKind,
    EventNaming,
    InvalidEvent,
    SelligentSegmentError,
    encode,
)
from selligent_segment._mapping import encode_fields
from selligent_segment._record import (
    FIELD_NAMES,
    RESERVED_PROPERTIES,
    format_timestamp,
    normalize,
    parse_timestamp,
    revive,
)

UTC = timezone.utc
EMAIL = "ada@example.com"


def rec(**fields: Any) -> CallbackRecord:
    """A record from its dict form, with defaults for type and identity."""
    data: dict[str, Any] = {"type": "opened", "email": EMAIL}
    data.update(fields)
    return CallbackRecord.from_dict(data)


def refused(data: dict[str, Any]) -> InvalidEvent:
    with pytest.raises(InvalidEvent) as info:
        CallbackRecord.from_dict(data)
    return info.value


# --- event kinds and aliases -------------------------------------------------------------

CANONICAL = [
    ("delivered", EventKind.DELIVERED),
    ("opened", EventKind.OPENED),
    ("link_clicked", EventKind.LINK_CLICKED),
    ("unsubscribed", EventKind.UNSUBSCRIBED),
    ("bounced", EventKind.BOUNCED),
    ("marked_as_spam", EventKind.MARKED_AS_SPAM),
]
ALIASES = [
    ("delivery", EventKind.DELIVERED),
    ("open", EventKind.OPENED),
    ("click", EventKind.LINK_CLICKED),
    ("clicked", EventKind.LINK_CLICKED),
    ("unsubscribe", EventKind.UNSUBSCRIBED),
    ("bounce", EventKind.BOUNCED),
    ("spam", EventKind.MARKED_AS_SPAM),
    ("complaint", EventKind.MARKED_AS_SPAM),
]


def test_there_are_exactly_six_kinds() -> None:
    assert {k.value for k in EventKind} == {name for name, _ in CANONICAL}


@pytest.mark.parametrize(("name", "kind"), CANONICAL + ALIASES)
def test_every_kind_and_alias_is_accepted(name: str, kind: EventKind) -> None:
    record = rec(type=name)
    assert record.kind is kind
    assert record.to_dict()["type"] == kind.value
    assert EventKind.parse(name) is kind


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("  Opened ", EventKind.OPENED),
        ("LINK-CLICKED", EventKind.LINK_CLICKED),
        ("marked as spam", EventKind.MARKED_AS_SPAM),
        ("Complaint", EventKind.MARKED_AS_SPAM),
    ],
)
def test_type_is_case_and_separator_insensitive(text: str, kind: EventKind) -> None:
    assert rec(type=text).kind is kind


def test_kind_accepts_an_event_kind_member() -> None:
    assert rec(type=EventKind.BOUNCED).kind is EventKind.BOUNCED
    assert CallbackRecord(EventKind.BOUNCED, email=EMAIL).kind is EventKind.BOUNCED


@pytest.mark.parametrize("name", ["sent", "openedd", "click_link", "unsub"])
def test_unknown_type_is_refused(name: str) -> None:
    err = refused({"type": name, "email": EMAIL})
    assert err.field == "type"
    assert "unknown event type" in err.reason
    assert repr(name) in err.reason
    assert str(err) == f"type: {err.reason}"


def test_blank_type_is_refused() -> None:
    assert refused({"type": "  ", "email": EMAIL}).field == "type"


@pytest.mark.parametrize("data", [{"email": EMAIL}, {"type": None, "email": EMAIL}])
def test_missing_type_is_refused(data: dict[str, Any]) -> None:
    err = refused(data)
    assert (err.field, err.reason) == ("type", "missing")


def test_non_string_type_is_refused() -> None:
    err = refused({"type": 3, "email": EMAIL})
    assert (err.field, err.reason) == ("type", "expected a string, got int")


# --- identity ------------------------------------------------------------------------------


def test_email_only_identity() -> None:
    record = CallbackRecord.from_dict({"type": "opened", "email": "  Ada@Example.COM  "})
    assert record.email == "Ada@Example.COM"  # trimmed, case kept in the record
    assert record.user_id is None


def test_user_id_only_identity() -> None:
    record = CallbackRecord.from_dict({"type": "opened", "user_id": " u-1 "})
    assert record.user_id == "u-1"
    assert record.email is None


def test_both_identities_are_kept() -> None:
    record = CallbackRecord.from_dict({"type": "opened", "user_id": "u-1", "email": EMAIL})
    assert (record.user_id, record.email) == ("u-1", EMAIL)


@pytest.mark.parametrize(
    "data",
    [
        {"type": "opened"},
        {"type": "opened", "email": None, "user_id": None},
        {"type": "opened", "email": "", "user_id": "   "},
    ],
)
def test_neither_email_nor_user_id_is_refused(data: dict[str, Any]) -> None:
    err = refused(data)
    assert err.field == "email"
    assert "needs an email or a user_id" in err.reason


@pytest.mark.parametrize(
    "email",
    [
        "not-an-address",
        "ada@",
        "@example.com",
        "ada@example",
        "ada@@example.com",
        "ada smith@example.com",
        "ada@example..com",
        "ada@.example.com",
        "ada@example.com.",
        "a" * 250 + "@example.com",
    ],
)
def test_implausible_email_is_refused(email: str) -> None:
    err = refused({"type": "opened", "email": email, "user_id": "u-1"})
    assert (err.field, err.reason) == ("email", "not a plausible email address")


@pytest.mark.parametrize(
    "email", ["a@b.co", "first.last+tag@mail.example.org", "Ada@Example.COM", "josé@exämple.de"]
)
def test_plausible_email_is_accepted(email: str) -> None:
    assert rec(email=email).email == email


# --- timestamps ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-20T09:15:00+01:00", datetime(2026, 11, 20, 8, 15, tzinfo=UTC)),
        ("2026-11-20T08:15:00Z", datetime(2026, 11, 20, 8, 15, tzinfo=UTC)),
        ("2026-11-20T08:15:00z", datetime(2026, 11, 20, 8, 15, tzinfo=UTC)),
        ("2026-11-20T03:15:00.250-05:00", datetime(2026, 11, 20, 8, 15, 0, 250000, tzinfo=UTC)),
        (" 2026-11-20T08:15:00+00:00 ", datetime(2026, 11, 20, 8, 15, tzinfo=UTC)),
    ],
)
def test_timestamp_text_with_offset_is_accepted(text: str, expected: datetime) -> None:
    record = rec(timestamp=text)
    assert record.timestamp == expected
    assert record.timestamp is not None
    assert record.timestamp.utcoffset() is not None


def test_aware_datetime_is_accepted_as_is() -> None:
    moment = datetime(2026, 11, 20, 9, 15, tzinfo=timezone(timedelta(hours=1)))
    assert rec(timestamp=moment).timestamp == moment


@pytest.mark.parametrize("value", ["2026-11-20T09:15:00", "2026-11-20", "2026-11-20 09:15"])
def test_naive_timestamp_text_is_refused(value: str) -> None:
    err = refused({"type": "opened", "email": EMAIL, "timestamp": value})
    assert err.field == "timestamp"
    assert "has no UTC offset" in err.reason


def test_naive_timestamp_datetime_is_refused() -> None:
    err = refused({"type": "opened", "email": EMAIL, "timestamp": datetime(2026, 11, 20, 9)})
    assert err.field == "timestamp"
    assert "has no UTC offset" in err.reason
    with pytest.raises(InvalidEvent, match=r"^timestamp: has no UTC offset"):
        CallbackRecord("opened", email=EMAIL, timestamp=datetime(2026, 11, 20, 9))


@pytest.mark.parametrize("value", ["yesterday", "2026-13-01T00:00:00Z", "2026-11-20T25:00Z"])
def test_bad_timestamp_text_is_refused(value: str) -> None:
    err = refused({"type": "opened", "email": EMAIL, "timestamp": value})
    assert err.field == "timestamp"
    assert err.reason.startswith("not an ISO-8601 date-time")
    assert repr(value) in err.reason


@pytest.mark.parametrize("value", [1732094100, 17.5, True, [2026, 11, 20]])
def test_non_text_timestamp_is_refused(value: object) -> None:
    err = refused({"type": "opened", "email": EMAIL, "timestamp": value})
    assert err.field == "timestamp"
    assert err.reason.startswith("expected an ISO-8601 string or a datetime")


@pytest.mark.parametrize("value", [None, "", "   "])
def test_missing_or_blank_timestamp_is_absent(value: object) -> None:
    assert rec(timestamp=value).timestamp is None
    assert "timestamp" not in rec(timestamp=value).to_dict()


def test_parse_timestamp_names_the_field_it_was_given() -> None:
    with pytest.raises(InvalidEvent) as info:
        parse_timestamp("nope", field="sent_at")
    assert info.value.field == "sent_at"


@pytest.mark.parametrize(
    ("moment", "text"),
    [
        (
            datetime(2026, 11, 20, 9, 15, tzinfo=timezone(timedelta(hours=1))),
            "2026-11-20T08:15:00.000Z",
        ),
        (datetime(2026, 1, 1, 0, 0, 0, 999999, tzinfo=UTC), "2026-01-01T00:00:00.999Z"),
        (
            datetime(2026, 12, 31, 23, 30, tzinfo=timezone(timedelta(hours=-5, minutes=-30))),
            "2027-01-01T05:00:00.000Z",
        ),
    ],
)
def test_format_timestamp(moment: datetime, text: str) -> None:
    assert format_timestamp(moment) == text


# --- text fields ---------------------------------------------------------------------------

TEXT_FIELDS = [
    "tenant",
    "event_id",
    "email_id",
    "email_subject",
    "campaign_id",
    "campaign_name",
    "user_agent",
]


@pytest.mark.parametrize("field", TEXT_FIELDS)
def test_text_fields_are_trimmed(field: str) -> None:
    assert getattr(rec(**{field: "  x y  "}), field) == "x y"


@pytest.mark.parametrize("field", [*TEXT_FIELDS, "user_id", "ip"])
@pytest.mark.parametrize("blank", ["", " ", "\t\n"])
def test_blank_strings_are_absent(field: str, blank: str) -> None:
    record = rec(user_id="u-1", **{field: blank}) if field != "user_id" else rec(user_id=blank)
    assert getattr(record, field) is None
    assert field not in record.to_dict()


def test_blank_kind_specific_fields_are_absent_on_other_kinds() -> None:
    record = rec(type="opened", link_url=" ", list_id="", bounce_type="  ", smtp_status="")
    assert record.to_dict() == {"type": "opened", "email": EMAIL}


@pytest.mark.parametrize(
    ("field", "kind"),
    [
        ("user_id", "opened"),
        ("event_id", "opened"),
        ("email_id", "opened"),
        ("campaign_id", "opened"),
        ("link_id", "link_clicked"),
        ("list_id", "unsubscribed"),
        ("smtp_status", "bounced"),
    ],
)
def test_int_ids_are_accepted_as_text(field: str, kind: str) -> None:
    record = rec(type=kind, **{field: 550})
    assert getattr(record, field) == "550"
    assert rec(type=kind, **{field: 0}).to_dict()[field] == "0"


@pytest.mark.parametrize(
    ("field", "value", "got"),
    [
        ("tenant", 7, "int"),
        ("email_subject", 7, "int"),
        ("campaign_name", ["x"], "list"),
        ("user_agent", {"a": 1}, "dict"),
        ("email", 7, "int"),
        ("ip", 2130706433, "int"),
        ("user_id", True, "bool"),
        ("event_id", 1.5, "float"),
        ("email_id", False, "bool"),
    ],
)
def test_non_string_fields_are_refused(field: str, value: object, got: str) -> None:
    err = refused({"type": "opened", "email": EMAIL, "user_id": "u-1", field: value})
    assert (err.field, err.reason) == (field, f"expected a string, got {got}")


def test_overlong_text_is_refused() -> None:
    err = refused({"type": "opened", "email": EMAIL, "email_subject": "x" * 8193})
    assert err.field == "email_subject"
    assert "longer than 8192 characters" in err.reason
    assert rec(email_subject="x" * 8192).email_subject == "x" * 8192


def test_unknown_field_is_refused() -> None:
    err = refused({"type": "opened", "email": EMAIL, "colour": "red"})
    assert (err.field, err.reason) == ("colour", "unknown field")
    assert str(err) == "colour: unknown field"


def test_attribute_name_kind_is_not_a_dict_field() -> None:
    assert refused({"kind": "opened", "email": EMAIL}).field == "kind"


def test_non_mapping_record_is_refused() -> None:
    with pytest.raises(InvalidEvent) as info:
        CallbackRecord.from_dict([1, 2])  # type: ignore[arg-type]
    assert (info.value.field, info.value.reason) == ("record", "expected a JSON object, got list")


# --- bounce details ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "stored"), [("hard", "hard"), (" SOFT ", "soft"), ("Hard", "hard")]
)
def test_bounce_type_is_hard_or_soft(given: str, stored: str) -> None:
    assert rec(type="bounced", bounce_type=given).bounce_type == stored


@pytest.mark.parametrize("value", ["transient", "permanent", "h", "hard bounce"])
def test_other_bounce_types_are_refused(value: str) -> None:
    err = refused({"type": "bounced", "email": EMAIL, "bounce_type": value})
    assert err.field == "bounce_type"
    assert err.reason.startswith("expected 'hard' or 'soft'")


# --- kind-specific fields ------------------------------------------------------------------

KIND_FIELDS = {
    "link_url": "link_clicked",
    "link_id": "link_clicked",
    "list_id": "unsubscribed",
    "list_name": "unsubscribed",
    "bounce_type": "bounced",
    "bounce_reason": "bounced",
    "smtp_status": "bounced",
}
HARD = {"bounce_type": "hard"}


@pytest.mark.parametrize("field", sorted(KIND_FIELDS))
@pytest.mark.parametrize("kind", [name for name, _ in CANONICAL])
def test_kind_specific_fields_only_on_their_kind(field: str, kind: str) -> None:
    value = "hard" if field == "bounce_type" else "x"
    data = {"type": kind, "email": EMAIL, field: value}
    if KIND_FIELDS[field] == kind:
        assert getattr(CallbackRecord.from_dict(data), field) == value
    else:
        err = refused(data)
        assert err.field == field
        assert err.reason == f"applies only to {KIND_FIELDS[field]} events, not {kind}"


def test_kind_specific_field_via_alias_uses_the_canonical_kind() -> None:
    err = refused({"type": "open", "email": EMAIL, "link_url": "https://x.example"})
    assert err.reason == "applies only to link_clicked events, not opened"


@pytest.mark.parametrize("field", ["email_id", "email_subject", "campaign_id", "campaign_name"])
@pytest.mark.parametrize("kind", [name for name, _ in CANONICAL])
def test_common_spec_fields_on_every_kind(field: str, kind: str) -> None:
    assert getattr(rec(type=kind, **{field: "v"}), field) == "v"


# --- ip --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("203.0.113.9", "203.0.113.9"),
        (" 198.51.100.1 ", "198.51.100.1"),
        ("2001:DB8:0:0:0:0:0:1", "2001:db8::1"),
        ("::1", "::1"),
    ],
)
def test_valid_ip_is_accepted_and_normalised(given: str, stored: str) -> None:
    assert rec(ip=given).ip == stored


@pytest.mark.parametrize(
    "value", ["256.1.1.1", "1.2.3", "example.com", "203.0.113.9:443", "2001:db8::g", "1.2.3.4/24"]
)
def test_bad_ip_is_refused(value: str) -> None:
    err = refused({"type": "opened", "email": EMAIL, "ip": value})
    assert err.field == "ip"
    assert err.reason.startswith("not a valid IPv4 or IPv6 address")


# --- extra properties ------------------------------------------------------------------------


def test_properties_are_kept_as_plain_json() -> None:
    props = {"feedback_loop": "isp", "score": 3, "ratio": 0.5, "flags": [True, None], "a1_b2": {}}
    assert rec(properties=props).properties == props


def test_empty_properties_are_absent() -> None:
    assert rec(properties={}).to_dict() == {"type": "opened", "email": EMAIL}
    assert rec(properties=None).properties == {}


@pytest.mark.parametrize(
    "name",
    ["FeedbackLoop", "feedback-loop", "_private", "1st", "a__b", "trailing_", "", "a b", "name\n"],
)
def test_non_snake_case_property_names_are_refused(name: str) -> None:
    err = refused({"type": "opened", "email": EMAIL, "properties": {name: 1}})
    assert err.field == "properties"
    assert err.reason == f"property name {name!r} is not snake_case"


def test_non_string_property_name_is_refused() -> None:
    with pytest.raises(InvalidEvent, match="not snake_case"):
        CallbackRecord("opened", email=EMAIL, properties={1: "x"})


def test_nested_keys_need_not_be_snake_case() -> None:
    assert rec(properties={"meta": {"Some Key": 1}}).properties == {"meta": {"Some Key": 1}}


@pytest.mark.parametrize("name", sorted(RESERVED_PROPERTIES))
def test_reserved_property_names_are_refused(name: str) -> None:
    err = refused({"type": "opened", "email": EMAIL, "properties": {name: "x"}})
    assert err.field == f"properties.{name}"
    assert "is a spec property" in err.reason


def test_reserved_names_are_the_spec_fields() -> None:
    assert {
        "email_id",
        "email_subject",
        "campaign_id",
        "campaign_name",
        "link_url",
        "link_id",
        "list_id",
        "list_name",
        "bounce_type",
        "bounce_reason",
        "smtp_status",
    } == RESERVED_PROPERTIES


def test_properties_must_be_an_object() -> None:
    err = refused({"type": "opened", "email": EMAIL, "properties": [1]})
    assert (err.field, err.reason) == ("properties", "expected an object, got list")


@pytest.mark.parametrize(
    ("props", "path"),
    [
        ({"x": float("nan")}, "properties.x"),
        ({"x": float("inf")}, "properties.x"),
        ({"x": {"y": float("-inf")}}, "properties.x.y"),
        ({"x": [1, {"z": float("nan")}]}, "properties.x[1].z"),
        ({"x": Decimal("NaN")}, "properties.x"),
        ({"x": {"y": [Decimal("Infinity")]}}, "properties.x.y[0]"),
    ],
)
def test_nan_and_infinity_are_refused_with_their_path(props: dict[str, Any], path: str) -> None:
    err = refused({"type": "opened", "email": EMAIL, "properties": props})
    assert err.field == path
    assert "cannot be sent as JSON" in err.reason


@pytest.mark.parametrize(
    ("props", "path", "name"),
    [
        ({"x": object()}, "properties.x", "object"),
        ({"x": {"y": b"raw"}}, "properties.x.y", "bytes"),
        ({"x": [{1, 2}]}, "properties.x[0]", "set"),
        ({"x": {"y": {"z": 1j}}}, "properties.x.y.z", "complex"),
    ],
)
def test_unsupported_types_are_refused_with_their_path(
    props: dict[str, Any], path: str, name: str
) -> None:
    err = refused({"type": "opened", "email": EMAIL, "properties": props})
    assert (err.field, err.reason) == (path, f"a {name} cannot be sent as JSON")


def test_non_string_nested_key_is_refused() -> None:
    err = refused({"type": "opened", "email": EMAIL, "properties": {"x": {1: "a"}}})
    assert (err.field, err.reason) == ("properties.x", "key 1 is not a string")


def test_too_deep_nesting_is_refused() -> None:
    deep: Any = "leaf"
    for _ in range(20):
        deep = {"d": deep}
    err = refused({"type": "opened", "email": EMAIL, "properties": {"x": deep}})
    assert err.field.startswith("properties.x.d")
    assert "nested deeper than" in err.reason


class Colour(enum.Enum):
    RED = "red"


class Size(enum.IntEnum):
    BIG = 3


def test_rich_property_values_become_json_data() -> None:
    props = {
        "at": datetime(2026, 11, 20, 9, 15, 0, 123456, tzinfo=timezone(timedelta(hours=1))),
        "naive_at": datetime(2026, 11, 20, 9, 15),
        "day": date(2026, 11, 20),
        "price": Decimal("12.50"),
        "count": Decimal("3"),
        "ref": uuid.UUID("12345678-1234-5678-1234-567812345678"),
        "colour": Colour.RED,
        "size": Size.BIG,
        "pair": (1, "a"),
    }
    assert rec(properties=props).properties == {
        "at": "2026-11-20T08:15:00.123Z",
        "naive_at": "2026-11-20T09:15:00",
        "day": "2026-11-20",
        "price": 12.5,
        "count": 3,
        "ref": "12345678-1234-5678-1234-567812345678",
        "colour": "red",
        "size": 3,
        "pair": [1, "a"],
    }


def test_properties_are_copied_from_the_input() -> None:
    nested = {"k": [1]}
    props: dict[str, Any] = {"meta": nested}
    record = rec(properties=props)
    props["other"] = 1
    nested["k"].append(2)
    assert record.properties == {"meta": {"k": [1]}}


def test_record_properties_cannot_be_mutated() -> None:
    record = rec(properties={"score": 1})
    moment = datetime(2026, 11, 20, tzinfo=UTC)
    before = encode(record, now=moment).body
    with contextlib.suppress(TypeError):  # a read-only mapping is one acceptable fix
        record.properties["score"] = 2  # type: ignore[index]
    assert record.properties == {"score": 1}
    assert encode(record, now=moment).body == before


@pytest.mark.parametrize("value", [2**64, -(2**63) - 1, Decimal("1e30")])
def test_out_of_range_integers_are_refused(value: object) -> None:
    err = refused({"type": "opened", "email": EMAIL, "properties": {"big": value}})
    assert err.field == "properties.big"


@pytest.mark.parametrize(
    "data",
    [
        {"email_subject": "hi \ud800"},
        {"properties": {"note": "\udfff"}},
    ],
)
def test_lone_surrogates_are_refused(data: dict[str, Any]) -> None:
    with pytest.raises(InvalidEvent):
        encode(rec(**data))


@pytest.mark.parametrize("value", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_timestamp_out_of_utc_range_is_refused(value: str) -> None:
    err = refused({"type": "opened", "email": EMAIL, "timestamp": value})
    assert err.field == "timestamp"


# --- errors ----------------------------------------------------------------------------------


def test_invalid_event_is_a_library_error_and_a_value_error() -> None:
    err = refused({"type": "opened"})
    assert isinstance(err, SelligentSegmentError)
    assert isinstance(err, ValueError)
    assert str(err) == f"{err.field}: {err.reason}"


# --- construction, round trip, immutability --------------------------------------------------

FULL = {
    "type": "link_clicked",
    "tenant": "acme",
    "email": "Ada@Example.com",
    "user_id": "u-1",
    "event_id": "evt-1",
    "timestamp": "2026-11-20T09:15:00.250+01:00",
    "email_id": "em-1",
    "email_subject": "News",
    "campaign_id": "c-1",
    "campaign_name": "Campaign",
    "link_url": "https://example.com/a",
    "link_id": "l-1",
    "ip": "203.0.113.9",
    "user_agent": "Mozilla/5.0",
    "properties": {"position": 2, "meta": {"x": [1, "y"]}},
}


def test_keyword_construction_equals_from_dict() -> None:
    kwargs = {k: v for k, v in FULL.items() if k != "type"}
    assert CallbackRecord("click", **kwargs) == CallbackRecord.from_dict(FULL)
    assert CallbackRecord(kind="click", **kwargs) == CallbackRecord.from_dict(FULL)


def test_keyword_construction_normalises_like_from_dict() -> None:
    record = CallbackRecord(
        "bounce", user_id=42, email=" Ada@Example.com ", bounce_type="SOFT", tenant="  "
    )
    assert record == CallbackRecord.from_dict(
        {"type": "bounced", "user_id": "42", "email": "Ada@Example.com", "bounce_type": "soft"}
    )
    assert record.tenant is None
    assert record.user_id == "42"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"kind": "sent", "email": EMAIL}, "type"),
        ({"kind": "opened"}, "email"),
        ({"kind": "opened", "email": "nope"}, "email"),
        ({"kind": "opened", "email": EMAIL, "link_id": "l"}, "link_id"),
        ({"kind": "opened", "email": EMAIL, "ip": "999.0.0.1"}, "ip"),
        ({"kind": "opened", "email": EMAIL, "timestamp": "2026-11-20T09:00"}, "timestamp"),
        ({"kind": "bounced", "email": EMAIL, "bounce_type": "medium"}, "bounce_type"),
        ({"kind": "opened", "email": EMAIL, "properties": {"Bad": 1}}, "properties"),
        ({"kind": "opened", "email": EMAIL, "properties": {"x": float("nan")}}, "properties.x"),
        ({"kind": "opened", "email": EMAIL, "tenant": 3}, "tenant"),
    ],
)
def test_keyword_construction_validates_like_from_dict(kwargs: dict[str, Any], field: str) -> None:
    data = dict(kwargs)
    data["type"] = data.pop("kind")
    with pytest.raises(InvalidEvent) as by_keywords:
        CallbackRecord(**kwargs)
    assert by_keywords.value.field == field
    assert str(by_keywords.value) == str(refused(data))


def test_to_dict_is_json_ready_and_only_holds_set_fields() -> None:
    record = CallbackRecord.from_dict(FULL)
    out = record.to_dict()
    assert out == {**FULL, "timestamp": "2026-11-20T09:15:00.250000+01:00"}
    assert set(out) <= FIELD_NAMES
    minimal = CallbackRecord("delivered", user_id="u").to_dict()
    assert minimal == {"type": "delivered", "user_id": "u"}


@pytest.mark.parametrize(
    "data",
    [
        FULL,
        {"type": "delivered", "user_id": 7},
        {"type": "bounced", "email": EMAIL, "bounce_type": "Hard", "smtp_status": 550},
        {"type": "unsubscribe", "email": EMAIL, "list_id": "w", "list_name": "Weekly"},
        {"type": "spam", "email": EMAIL, "timestamp": "2026-11-20T10:05:00-08:00"},
    ],
)
def test_to_dict_from_dict_round_trip(data: dict[str, Any]) -> None:
    record = CallbackRecord.from_dict(data)
    again = CallbackRecord.from_dict(record.to_dict())
    assert again == record
    assert again.to_dict() == record.to_dict()
    assert hash(again) == hash(record)


def test_round_trip_keeps_sub_millisecond_timestamps() -> None:
    record = rec(timestamp="2026-11-20T09:15:00.123456+00:00")
    assert CallbackRecord.from_dict(record.to_dict()) == record


def test_fields_returns_a_fresh_normalised_dict() -> None:
    record = CallbackRecord.from_dict(FULL)
    fields = record.fields()
    assert fields["type"] is EventKind.LINK_CLICKED
    assert fields["timestamp"] == datetime(2026, 11, 20, 8, 15, 0, 250000, tzinfo=UTC)
    fields["tenant"] = "other"
    assert record.fields()["tenant"] == "acme"
    assert normalize(FULL) == record.fields()


@pytest.mark.parametrize("name", ["kind", "email", "tenant", "timestamp", "properties", "ip"])
def test_records_are_immutable(name: str) -> None:
    record = CallbackRecord.from_dict(FULL)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        setattr(record, name, None)
    assert record == CallbackRecord.from_dict(FULL)


def test_records_are_hashable_and_compare_by_value() -> None:
    a = CallbackRecord.from_dict(FULL)
    b = CallbackRecord.from_dict(dict(FULL))
    c = CallbackRecord.from_dict({**FULL, "event_id": "evt-2"})
    assert a == b
    assert hash(a) == hash(b)
    assert a != c
    assert len({a, b, c}) == 2


def test_evolve_revalidates() -> None:
    record = CallbackRecord.from_dict(FULL)
    with pytest.raises(InvalidEvent, match=r"^email: not a plausible"):
        attrs.evolve(record, email="nope")
    assert attrs.evolve(record, tenant=" globex ").tenant == "globex"


@given(st.floats(min_value=0, max_value=2**32, allow_nan=False, allow_infinity=False))
def test_format_epoch_matches_format_timestamp(seconds: float) -> None:
    from selligent_segment._record import format_epoch

    expected = format_timestamp(datetime.fromtimestamp(seconds, timezone.utc))
    assert format_epoch(seconds) == expected


@pytest.mark.parametrize(
    "data",
    [
        {"type": "delivery", "email": " Ada@Example.com ", "user_id": 42, "event_id": 7},
        {"type": "opened", "email": EMAIL, "timestamp": "2026-11-20T12:01:00.123456+02:00"},
        {"type": "opened", "email": EMAIL, "timestamp": datetime(2026, 1, 1, tzinfo=UTC)},
        {
            "type": "bounced",
            "user_id": "u-1",
            "bounce_type": "HARD",
            "ip": "2001:db8::1",
            "properties": {"when": date(2026, 1, 2), "n": Decimal("2.5"), "deep": {"a": [1]}},
        },
        {"type": "link_clicked", "email": "zoë@example.com", "link_url": "https://é.example/"},
    ],
)
def test_revive_gives_back_what_normalize_returned_through_json(data: dict[str, Any]) -> None:
    import orjson

    fields = normalize(data)
    revived = revive(orjson.loads(orjson.dumps(fields)))
    assert revived == fields
    assert type(revived["type"]) is EventKind
    # And so the same message, byte for byte: ids derived from the content included.
    for event_id in (fields.get("event_id"), None):
        if event_id is None:
            fields.pop("event_id", None)
            revived.pop("event_id", None)
        now = 1.7e9
        naming = EventNaming()
        assert (
            encode_fields(revived, "t", naming, now).body
            == encode_fields(fields, "t", naming, now).body
        )


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ([], "record"),
        ({"email": EMAIL}, "type"),
        ({"type": ["opened"]}, "type"),
        ({"type": "opened", "timestamp": "yesterday"}, "timestamp"),
        ({"type": "opened", "timestamp": 12}, "timestamp"),
    ],
)
def test_revive_refuses_what_is_not_a_journaled_record(raw: Any, field: str) -> None:
    with pytest.raises(InvalidEvent) as info:
        revive(raw)
    assert info.value.field == field


# --- control and format characters, echoed names ---------------------------------------------

CONTROLS = [
    ("\x00", "a control character (U+0000)"),
    ("\x07", "a control character (U+0007)"),
    ("\x1b", "a control character (U+001B)"),
    ("\x7f", "a control character (U+007F)"),
    ("\x85", "a control character (U+0085)"),
    ("\u202e", "an invisible format character (U+202E)"),
    ("\u200b", "an invisible format character (U+200B)"),
    ("\ufeff", "an invisible format character (U+FEFF)"),
]


@pytest.mark.parametrize(("char", "what"), CONTROLS)
@pytest.mark.parametrize("where", ["local", "domain"])
def test_email_with_a_control_or_format_character_is_refused(
    char: str, what: str, where: str
) -> None:
    email = f"ad{char}a@example.com" if where == "local" else f"ada@exa{char}mple.com"
    for text in (email, email.replace("ada", "zoë")):  # ASCII fast path and the other one
        err = refused({"type": "opened", "email": text})
        assert (err.field, err.reason) == ("email", f"contains {what}")
        with pytest.raises(InvalidEvent, match=r"^email: contains"):
            CallbackRecord("opened", email=text)


@pytest.mark.parametrize(("char", "what"), CONTROLS)
def test_tenant_with_a_control_or_format_character_is_refused(char: str, what: str) -> None:
    made_of_it = [] if char.isspace() else [char * 3]  # U+0085 is trimmed, like a space
    for tenant in [f"ac{char}me", f"zoë{char}x", *made_of_it]:
        err = refused({"type": "opened", "email": EMAIL, "tenant": tenant})
        assert (err.field, err.reason) == ("tenant", f"contains {what}")


def test_printable_unicode_tenants_and_emails_are_still_fine() -> None:
    record = rec(tenant=" Zoë & Co ", email="zoë@exämple.com")
    assert (record.tenant, record.email) == ("Zoë & Co", "zoë@exämple.com")


def test_unknown_field_name_is_escaped_and_short() -> None:
    err = refused({"type": "opened", "email": EMAIL, "\x1b[31mred\x1b[0m": 1})
    assert err.field == "'\\x1b[31mred\\x1b[0m'"
    assert str(err) == "'\\x1b[31mred\\x1b[0m': unknown field"
    err = refused({"type": "opened", "email": EMAIL, "\u202etxt.exe": 1})
    assert str(err) == "'\\u202etxt.exe': unknown field"
    err = refused({"type": "opened", "email": EMAIL, "n" * 100_000: 1})
    assert str(err) == "n" * 100 + "... (100,000 characters): unknown field"


@pytest.mark.parametrize(
    ("data", "text"),
    [
        ({"type": "\x1b]0;pwned\x07"}, "type: unknown event type '\\x1b]0;pwned\\x07'"),
        ({"type": "x" * 100_000}, "type: unknown event type '" + "x" * 100 + "'... (100,000 "),
        ({"ip": "\x1b[2J"}, "ip: not a valid IPv4 or IPv6 address: '\\x1b[2J'"),
        ({"timestamp": "\u202e2026"}, "timestamp: not an ISO-8601 date-time: '\\u202e2026'"),
        ({"properties": {"\x1bx": 1}}, "properties: property name '\\x1bx' is not snake_case"),
        ({"properties": {"m": {"\x1b": b""}}}, "'properties.m.\\x1b': a bytes cannot be sent"),
        ({"properties": {"m": {"k" * 100_000: b""}}}, "properties.m." + "k" * 87 + "... (100,013 "),
    ],
    ids=["type", "long-type", "ip", "timestamp", "property", "nested-key", "long-nested-key"],
)
def test_values_and_names_echoed_in_errors_are_escaped_and_capped(
    data: dict[str, Any], text: str
) -> None:
    err = refused({"type": "bounced", "email": EMAIL, **data})
    assert str(err).startswith(text)
    assert "\x1b" not in str(err)
    assert "\u202e" not in str(err)
    assert len(str(err)) < 300


# --- integer ids ------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["user_id", "event_id", "email_id", "campaign_id"])
def test_integer_id_over_4300_digits_is_an_invalid_event(field: str) -> None:
    for value in (10**4300, -(10**4300), 10**10_000):
        err = refused({"type": "opened", "email": EMAIL, field: value})
        assert (err.field, err.reason) == (
            field,
            "integer too long (over 4300 digits); give a long id as text",
        )
    assert getattr(rec(**{field: 10**4300 - 1}), field) == "9" * 4300


@pytest.mark.parametrize("value", [1e20, -1e19, 1.5e300, float("inf"), float("-inf")])
def test_integer_id_beyond_64_bits_read_as_a_float_is_refused_as_too_large(value: float) -> None:
    err = refused({"type": "opened", "email": EMAIL, "user_id": value})
    assert err.field == "user_id"
    assert err.reason == (
        "integer too large to read exactly: integer ids in JSON must be within "
        "-9223372036854775808 and 18446744073709551615; give a longer id as text"
    )


def test_small_floats_in_id_fields_are_still_the_wrong_type() -> None:
    assert refused({"type": "opened", "email": EMAIL, "user_id": 5.0}).reason == (
        "expected a string, got float"
    )


# --- the timestamp window ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("9999-12-31T00:00:00Z", "9999-12-31T00:00:00.000Z is more than a day in the future"),
        ("2026-12-01T12:00:00.001Z", "2026-12-01T12:00:00.001Z is more than a day in the future"),
        ("2026-12-01T13:00:01+01:00", "2026-12-01T12:00:01.000Z is more than a day in the future"),
        (
            "1999-12-31T23:59:59.999Z",
            "1999-12-31T23:59:59.999Z is before 2000-01-01T00:00:00Z, the earliest accepted",
        ),
        (
            "1970-01-01T00:00:00Z",
            "1970-01-01T00:00:00.000Z is before 2000-01-01T00:00:00Z, the earliest accepted",
        ),
    ],
)
def test_timestamps_outside_the_window_are_refused(value: str, reason: str) -> None:
    with freeze_time("2026-11-30 12:00:00"):
        err = refused({"type": "opened", "email": EMAIL, "timestamp": value})
        assert (err.field, err.reason) == ("timestamp", reason)
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        with pytest.raises(InvalidEvent, match=r"^timestamp: "):
            CallbackRecord("opened", email=EMAIL, timestamp=moment)  # a datetime alike


@pytest.mark.parametrize(
    "value", ["2000-01-01T00:00:00Z", "2026-12-01T12:00:00Z", "2026-12-01T13:00:00+01:00"]
)
def test_timestamps_inside_the_window_are_accepted(value: str) -> None:
    with freeze_time("2026-11-30 12:00:00"):
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        assert rec(timestamp=value).timestamp == moment
        assert CallbackRecord("opened", email=EMAIL, timestamp=moment).timestamp == moment


def test_the_timestamp_window_follows_the_clock_both_ways() -> None:
    data = {"type": "opened", "email": EMAIL, "timestamp": "2030-06-01T00:00:00Z"}
    with freeze_time("2030-06-01 00:00:00") as clock:
        assert CallbackRecord.from_dict(data).timestamp is not None
        clock.move_to("2026-11-30 00:00:00")  # back in time: the bound moves back too
        assert refused(data).reason.endswith("is more than a day in the future")
        clock.move_to("2030-05-31 00:00:01")
        assert CallbackRecord.from_dict(data).timestamp is not None


class _Score(float):
    """A float subclass, as numpy's float64 is."""


class _Stamp(datetime):
    """A datetime subclass, as pandas' Timestamp is."""


class _Key(str):
    """A str subclass."""


def test_subclasses_of_plain_values_become_the_plain_values() -> None:
    # orjson refuses float and datetime subclasses and str-subclass keys: accepted as
    # they were, such values made the durable emit raise TypeError and the memory
    # encoder lose its chunk.
    moment = _Stamp(2026, 11, 20, 9, 15, 0, 123456, tzinfo=UTC)
    fields = normalize(
        {
            "type": "opened",
            "email": EMAIL,
            "timestamp": moment,
            "properties": {"score": _Score(1.5), "nested": {_Key("k"): [_Score(2.5)]}},
        }
    )
    assert type(fields["timestamp"]) is datetime
    assert fields["timestamp"] == datetime(2026, 11, 20, 9, 15, 0, 123456, tzinfo=UTC)
    properties = fields["properties"]
    assert type(properties["score"]) is float
    assert [type(k) for k in properties["nested"]] == [str]
    assert type(properties["nested"]["k"][0]) is float
    assert fields == normalize({**fields, "timestamp": moment})  # the same as plain values
    assert isinstance(orjson.dumps(fields), bytes)


class _Field(str, enum.Enum):
    """Field and property names kept in an enum of str, as callers do (a StrEnum)."""

    TYPE = "type"
    EMAIL = "email"
    CAMPAIGN = "campaign_ref"
    HUBSPOT = "HubSpot"
    LOCALE = "locale"

    def __str__(self) -> str:
        return f"_Field.{self.name}"


def test_str_subclass_keys_of_the_record_and_its_objects_become_plain_text() -> None:
    """A StrEnum's members as the keys of ``properties``, ``integrations`` or
    ``context`` stayed members: orjson refuses them as keys, so the message could not be
    written (a TypeError from ``emit``; with a spool file ``emit_many`` lost the records
    beside)."""
    fields = normalize(
        {
            _Field.TYPE: "opened",
            _Field.EMAIL: EMAIL,
            "properties": {_Field.CAMPAIGN: 7},
            "integrations": {_Field.HUBSPOT: False},
            "context": {_Field.LOCALE: "fr-FR"},
        }
    )
    for inner in ("properties", "integrations", "context"):
        assert all(type(key) is str for key in fields[inner])
    assert fields["properties"] == {"campaign_ref": 7}
    body = orjson.loads(encode_fields(fields, "acme", EventNaming(), None).body)
    assert body["properties"]["campaign_ref"] == 7
    assert body["integrations"]["HubSpot"] is False
    assert body["context"]["locale"] == "fr-FR"


def test_an_offset_of_seconds_is_taken_in_utc_so_the_journal_keeps_it() -> None:
    """``+00:00:30`` was kept: orjson writes offsets in whole minutes, so a record read
    back from a journal or a queue row had another timestamp and another messageId."""
    moment = parse_timestamp("2024-03-01T12:00:00+00:00:30")
    assert moment == datetime(2024, 3, 1, 11, 59, 30, tzinfo=UTC)
    assert moment.utcoffset() == timedelta(0)
    fields = normalize({"type": "opened", "email": EMAIL, "timestamp": moment})
    again = revive(orjson.loads(orjson.dumps(fields)))
    naming = EventNaming()
    assert encode_fields(again, "acme", naming, None) == encode_fields(fields, "acme", naming, None)


def test_a_huge_integral_decimal_is_refused_without_building_the_integer() -> None:
    with pytest.raises(InvalidEvent) as info:
        normalize({"type": "opened", "email": EMAIL, "properties": {"n": Decimal("1e100000")}})
    assert (info.value.field, info.value.reason) == (
        "properties.n",
        "integer out of JSON's 64-bit range",
    )


def test_an_int_enum_id_is_sent_as_its_digits_not_its_name() -> None:
    class Campaign(int, enum.Enum):
        SPRING = 42

    fields = normalize({"type": "opened", "email": EMAIL, "campaign_id": Campaign.SPRING})
    assert fields["campaign_id"] == "42"
