"""Property-based tests: any valid callback record maps to a message Segment would accept."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from selligent_segment import (
    PROFILES,
    CallbackRecord,
    EventKind,
    EventNaming,
    InvalidEvent,
    encode,
    message_id,
    track_message,
)
from selligent_segment._mapping import MAX_MESSAGE_BYTES
from selligent_segment._record import RESERVED_PROPERTIES

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
NOW = datetime(2030, 1, 2, 3, 4, 5, 678000, tzinfo=timezone.utc)
ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
TS_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
KNOWN_EVENTS = {name for profile in PROFILES.values() for name in profile.values()}

KIND_NAMES: dict[EventKind, list[str]] = {
    EventKind.DELIVERED: ["delivered", "delivery"],
    EventKind.OPENED: ["opened", "open"],
    EventKind.LINK_CLICKED: ["link_clicked", "click", "clicked"],
    EventKind.UNSUBSCRIBED: ["unsubscribed", "unsubscribe"],
    EventKind.BOUNCED: ["bounced", "bounce"],
    EventKind.MARKED_AS_SPAM: ["marked_as_spam", "spam", "complaint"],
}
KIND_FIELDS: dict[EventKind, tuple[str, ...]] = {
    EventKind.LINK_CLICKED: ("link_url", "link_id"),
    EventKind.UNSUBSCRIBED: ("list_id", "list_name"),
    EventKind.BOUNCED: ("bounce_type", "bounce_reason", "smtp_status"),
}
ID_FIELDS = ("event_id", "email_id", "campaign_id", "link_id", "list_id", "smtp_status")

# Random unicode text (hypothesis leaves out surrogates by default); blank text means absent.
text = st.text(max_size=40)
_no_space = st.characters(
    blacklist_categories=("Cs", "Cc", "Cf", "Zs", "Zl", "Zp"), blacklist_characters="@."
).filter(lambda c: not c.isspace())
_label_chars = _no_space
non_blank = st.builds(lambda head, tail: head + tail, _label_chars, text)
ids = st.one_of(text, st.integers(min_value=-(2**63), max_value=2**64 - 1))
# A tenant holds no control (Cc) or format (Cf) character.
tenants = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Cf")), max_size=40)


@st.composite
def type_names(draw: st.DrawFn, kind: EventKind) -> str:
    name = draw(st.sampled_from(KIND_NAMES[kind]))
    name = draw(st.sampled_from([name, name.upper(), name.title(), name.replace("_", "-")]))
    pad = draw(st.sampled_from(["", " ", "\t"]))
    return pad + name + pad


_label = st.text(_no_space, min_size=1, max_size=12)


@st.composite
def emails(draw: st.DrawFn) -> str:
    local = draw(st.lists(_label, min_size=1, max_size=2).map(".".join))
    domain = draw(st.lists(_label, min_size=2, max_size=3).map(".".join))
    pad = draw(st.sampled_from(["", " ", "  "]))
    return pad + local + "@" + domain + pad


_offsets = st.integers(min_value=-14 * 60, max_value=14 * 60).map(
    lambda m: timezone(timedelta(minutes=m))
)


@st.composite
def timestamps(draw: st.DrawFn, ms_only: bool) -> object:
    # Timestamps are accepted from 2000-01-01 to a day after now.
    moment = draw(st.datetimes(min_value=datetime(2000, 1, 2), max_value=datetime(2026, 1, 1)))
    if ms_only:
        moment = moment.replace(microsecond=moment.microsecond // 1000 * 1000)
    moment = moment.replace(tzinfo=draw(_offsets))
    form = draw(st.sampled_from(["datetime", "iso", "z", "absent"]))
    if form == "datetime":
        return moment
    if form == "iso":
        return moment.isoformat()
    if form == "z":
        return moment.astimezone(timezone.utc).replace(tzinfo=None).isoformat() + "Z"
    return draw(st.sampled_from([None, "", "  "]))


snake_keys = st.from_regex(r"\A[a-z][a-z0-9]{0,8}(_[a-z0-9]{1,5}){0,2}\Z").filter(
    lambda k: k not in RESERVED_PROPERTIES
)
json_leaves = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    text,
)
json_values = st.recursive(
    st.none() | json_leaves,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=12,
)
# Top-level property values are never null here: see test_null_extra_property_is_not_sent.
top_values = (
    json_leaves | st.lists(json_values, max_size=4) | st.dictionaries(text, json_values, max_size=4)
)
properties = st.dictionaries(snake_keys, top_values, max_size=5)
integrations = st.dictionaries(
    st.sampled_from(["All", "Mixpanel", "Google Analytics", "Amplitude"]),
    st.booleans() | st.dictionaries(text, json_values, max_size=3),
    max_size=4,
)
contexts = st.dictionaries(
    st.sampled_from(["locale", "timezone", "campaign", "groupId", "traits"]), top_values, max_size=4
).map(
    lambda c: {**c, "traits": {"name": "Ada"}} if "traits" in c else c  # traits: an object
)


@st.composite
def record_dicts(draw: st.DrawFn, ms_only: bool = False) -> dict[str, Any]:
    kind = draw(st.sampled_from(list(EventKind)))
    data: dict[str, Any] = {"type": draw(type_names(kind))}
    identity = draw(st.sampled_from(["email", "user_id", "both"]))
    if identity in ("email", "both"):
        data["email"] = draw(emails())
    if identity in ("user_id", "both"):
        data["user_id"] = draw(st.one_of(non_blank, st.integers(min_value=0)))
    optional = ["tenant", "event_id", "timestamp", "email_id", "email_subject", "campaign_id"]
    optional += ["campaign_name", "ip", "user_agent", "properties", *KIND_FIELDS.get(kind, ())]
    optional += ["integrations", "context"]
    for field in draw(st.lists(st.sampled_from(optional), unique=True)):
        if field == "timestamp":
            data[field] = draw(timestamps(ms_only))
        elif field == "ip":
            data[field] = str(draw(st.ip_addresses()))
        elif field == "bounce_type":
            data[field] = draw(st.sampled_from(["hard", "soft", "HARD", " Soft ", ""]))
        elif field == "properties":
            data[field] = draw(properties)
        elif field == "integrations":
            data[field] = draw(integrations)
        elif field == "context":
            data[field] = draw(contexts)
        elif field in ID_FIELDS:
            data[field] = draw(ids)
        elif field == "tenant":
            data[field] = draw(tenants)
        else:
            data[field] = draw(text)
    return data


def _no_null_values(value: Any) -> bool:
    if value is None:
        return False
    if isinstance(value, dict):
        return all(_no_null_values(v) for v in value.values())
    return True


@pytest.mark.slow  # half a second or more: the second step of .ci/run
@SETTINGS
@given(data=record_dicts(), tenant=text, profile=st.sampled_from(sorted(PROFILES)))
def test_any_valid_record_encodes_to_an_acceptable_message(
    data: dict[str, Any], tenant: str, profile: str
) -> None:
    record = CallbackRecord.from_dict(data)
    naming = EventNaming(profile=profile)
    size = len(orjson.dumps(track_message(record, tenant=tenant, naming=naming, now=NOW)))
    if size > MAX_MESSAGE_BYTES:  # only the size limit may refuse a valid record
        with pytest.raises(InvalidEvent, match=f"is {size} bytes"):
            encode(record, tenant=tenant, naming=naming, now=NOW)
        return
    encoded = encode(record, tenant=tenant, naming=naming, now=NOW)
    assert len(encoded.body) <= MAX_MESSAGE_BYTES
    message = orjson.loads(encoded.body)
    assert message["type"] == "track"
    assert message["event"] in KNOWN_EVENTS
    assert message["event"] == PROFILES[profile][record.kind]
    identities = [message.get(key) for key in ("userId", "anonymousId")]
    assert sum(1 for value in identities if isinstance(value, str) and value) == 1
    assert ("userId" in message) != ("anonymousId" in message)
    assert ID_RE.match(message["messageId"])
    assert message["messageId"] == encoded.message_id == message_id(record, tenant)
    assert TS_RE.match(message["timestamp"])
    assert isinstance(message["properties"], dict)
    assert all(value is not None for value in message["properties"].values())
    own = {k: v for k, v in message["context"].items() if k not in record.context}
    assert _no_null_values(own)  # what the library sets (the record's may hold nested nulls)
    assert message["context"]["library"]["name"] == "selligent-segment"
    assert message["context"]["integration"]["name"] == "selligent"
    extra_traits = record.context.get("traits", {})
    if record.email is not None:
        assert message["context"]["traits"] == {**extra_traits, "email": record.email.lower()}
    elif extra_traits:
        assert message["context"]["traits"] == extra_traits
    for key, value in record.context.items():  # the record's context fields, merged
        if key != "traits":
            assert message["context"][key] == value
    assert message.get("integrations") == (dict(record.integrations) or None)
    # integrations and context are not part of the id: a replay that changes them keeps it.
    bare = {k: v for k, v in data.items() if k not in ("integrations", "context")}
    assert message_id(bare, tenant) == encoded.message_id
    if record.user_id is None:
        assert message["anonymousId"] == record.email.lower()  # type: ignore[union-attr]
    else:
        assert message["userId"] == record.user_id
    # The dict form maps exactly like the record built from it.
    assert encode(data, tenant=tenant, naming=naming, now=NOW) == encoded
    # A replay of the same record gives the same message; another tenant another id.
    assert encode(CallbackRecord.from_dict(data), tenant=tenant, naming=naming, now=NOW) == encoded
    assert message_id(record, tenant + "x") != encoded.message_id


@pytest.mark.slow  # half a second or more: the second step of .ci/run
@SETTINGS
@given(data=record_dicts(ms_only=True))
def test_to_dict_from_dict_round_trip(data: dict[str, Any]) -> None:
    record = CallbackRecord.from_dict(data)
    again = CallbackRecord.from_dict(record.to_dict())
    assert again == record
    assert again.to_dict() == record.to_dict()
    # The round trip is JSON-safe: what a hook writes to JSON Lines reads back the same.
    assert CallbackRecord.from_dict(orjson.loads(orjson.dumps(record.to_dict()))) == record


@SETTINGS
@given(
    st.sampled_from(sorted(PROFILES)),
    st.dictionaries(st.sampled_from(list(EventKind)), non_blank, max_size=3),
    st.dictionaries(
        st.sampled_from(["acme", "globex", "default"]),
        st.dictionaries(st.sampled_from(list(EventKind)), non_blank, max_size=3),
        max_size=2,
    ),
    st.sampled_from(list(EventKind)),
    st.sampled_from(["acme", "globex", "default", "initech"]),
)
def test_the_event_name_sent_is_the_namings_for_the_tenant(
    profile: str,
    overrides: dict[EventKind, str],
    tenant_overrides: dict[str, dict[EventKind, str]],
    kind: EventKind,
    tenant: str,
) -> None:
    # encode_fields reads the names without calling name() when no tenant has its own.
    naming = EventNaming(profile=profile, overrides=overrides, tenant_overrides=tenant_overrides)
    record: dict[str, Any] = {"type": kind.value, "email": "a@example.com"}
    if kind is EventKind.LINK_CLICKED:
        record["link_url"] = "https://example.com/"
    body = orjson.loads(encode(record, tenant=tenant, naming=naming, now=NOW).body)
    assert body["event"] == naming.name(kind, tenant)
