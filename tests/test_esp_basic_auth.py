"""Postmark and SparkPost: basic-auth credentials (wrong ones refused with 401), and each
provider's event -> kind table."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest

from selligent_segment import EventKind, message_id
from selligent_segment.inputs.esp import (
    PARSERS,
    PostmarkConfig,
    PostmarkWebhook,
    SparkPostConfig,
    SparkPostWebhook,
    WebhookRefused,
)
from selligent_segment.inputs.esp._basic_auth import basic_auth_ok


def auth(user: str, password: str) -> dict[str, str]:
    return {"authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.mark.parametrize(
    ("header", "ok"),
    [
        (auth("hook", "s3cret")["authorization"], True),
        (auth("hook", "s3cret!")["authorization"], False),
        (auth("hoo", "s3cret")["authorization"], False),
        ("Basic " + base64.b64encode(b"hooks3cret").decode(), False),
        ("Bearer abc", False),
        ("Basic %%%", False),
        (None, False),
    ],
)
def test_basic_auth_accepts_exactly_the_credentials(header: str | None, ok: bool) -> None:
    assert basic_auth_ok(header, "hook", "s3cret") is ok


def postmark(record_type: str, **extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "RecordType": record_type,
        "MessageID": "pm-1",
        "Recipient": "ada@example.com",
        "Metadata": {"tenant": "acme", "email_id": "e-1"},
        "Tag": "welcome",
    }
    base.update(extra)
    return base


def test_postmark_wants_its_credentials() -> None:
    hook = PostmarkWebhook(PostmarkConfig("hook", "s3cret"))
    request = orjson.dumps(postmark("Delivery", DeliveredAt="2026-11-20T09:15:00.1234567Z"))
    (record,) = hook.handle(request, auth("hook", "s3cret")).records
    assert (record.tenant, record.email_id, record.event_id) == (
        "acme",
        "e-1",
        "Delivery:pm-1:ada@example.com",
    )
    with pytest.raises(WebhookRefused) as info:
        hook.handle(request, auth("hook", "guess"))
    assert info.value.status == 401
    assert "s3cret" not in str(info.value)
    assert "s3cret" not in repr(hook.config)


def test_sparkpost_wants_its_credentials_per_tenant() -> None:
    hook = SparkPostWebhook(SparkPostConfig("hook", {"acme": "a-pass"}.get))
    request = orjson.dumps([{"msys": {"message_event": sparkpost("delivery")}}])
    assert len(hook.handle(request, auth("hook", "a-pass"), "acme").records) == 1
    with pytest.raises(WebhookRefused):
        hook.handle(request, auth("hook", "a-pass"), "globex")


@pytest.mark.parametrize(
    ("event", "kind", "fields"),
    [
        (postmark("Delivery"), EventKind.DELIVERED, {}),
        (
            postmark("Open", UserAgent="Mozilla/5.0", ReceivedAt="2026-11-20T09:15:00Z"),
            EventKind.OPENED,
            {},
        ),
        (
            postmark("Click", OriginalLink="https://example.com/"),
            EventKind.LINK_CLICKED,
            {"link_url": "https://example.com/"},
        ),
        (
            postmark("Bounce", Type="HardBounce", Email="ada@example.com", ID=7),
            EventKind.BOUNCED,
            {"bounce_type": "hard", "event_id": "Bounce:pm-1:7"},
        ),
        (
            postmark("Bounce", Type="SoftBounce", Email="ada@example.com"),
            EventKind.BOUNCED,
            {"bounce_type": "soft"},
        ),
        (
            postmark("Bounce", Type="Transient", Email="ada@example.com"),
            EventKind.BOUNCED,
            {"bounce_type": "soft"},
        ),
        (
            postmark("Bounce", Type="Unknown", Email="ada@example.com"),
            EventKind.BOUNCED,
            {"bounce_type": None},
        ),
        (
            postmark("SpamComplaint", Type="SpamComplaint", Email="ada@example.com"),
            EventKind.MARKED_AS_SPAM,
            {},
        ),
        (
            postmark(
                "SubscriptionChange", SuppressSending=True, SuppressionReason="ManualSuppression"
            ),
            EventKind.UNSUBSCRIBED,
            {},
        ),
    ],
)
def test_postmark_events_map_to_their_kinds(
    event: dict[str, Any], kind: EventKind, fields: dict[str, Any]
) -> None:
    parsed = PARSERS["postmark"](orjson.dumps(event), "f")
    assert parsed.problems == ()
    (record,) = parsed.records
    assert (record.kind, record.email) == (kind, "ada@example.com")
    assert record.properties["esp_event"] == event["RecordType"]
    for name, value in fields.items():
        assert getattr(record, name) == value


def test_postmark_open_of_apples_proxy_is_flagged() -> None:
    (record,) = PARSERS["postmark"](
        orjson.dumps(postmark("Open", UserAgent="Mozilla/5.0")), "f"
    ).records
    assert record.properties["machine_open_reason"] == "apple_proxy_user_agent"


@pytest.mark.parametrize(
    "event",
    [
        postmark("Bounce", Type="AutoResponder", Email="ada@example.com"),
        postmark("SubscriptionChange", SuppressSending=False),
        postmark("SubscriptionChange", SuppressSending=True, SuppressionReason="HardBounce"),
        postmark("Inbound"),
    ],
)
def test_postmark_other_records_are_skipped(event: dict[str, Any]) -> None:
    parsed = PARSERS["postmark"](orjson.dumps(event), "f")
    assert parsed.records == ()
    assert parsed.problems[0].reason.startswith("skipped: ")


def test_postmark_deliveries_of_one_message_to_two_recipients_have_different_ids() -> None:
    at = "2026-11-20T09:15:00Z"
    batch = [
        postmark("Delivery", Recipient="ada@example.com", DeliveredAt=at),
        postmark("Delivery", Recipient="bob@example.com", DeliveredAt=at),
    ]
    parsed = PARSERS["postmark"](orjson.dumps(batch), "f")
    assert [r.event_id for r in parsed.records] == [
        "Delivery:pm-1:ada@example.com",
        "Delivery:pm-1:bob@example.com",
    ]
    assert len({message_id(r) for r in parsed.records}) == 2  # Segment keeps both


#: A JSON value nested deeper than repr() can go (str() of it raises RecursionError).
DEEP = b"[" * 1000 + b"]" * 1000


def with_deep(events: list[dict[str, Any]]) -> bytes:
    """``events`` as JSON, every ``"DEEP"`` text replaced by :data:`DEEP`."""
    return orjson.dumps(events).replace(b'"DEEP"', DEEP)


@pytest.mark.parametrize(
    ("event", "field"),
    [
        (postmark("Bounce", Type=["HardBounce"], Email="bob@example.com", ID=7), "Type"),
        (postmark("Bounce", Type={"name": "HardBounce"}, Email="bob@example.com"), "Type"),
        (postmark("Bounce", Type="HardBounce", Email="bob@example.com", ID="DEEP"), "ID"),
        (postmark("Open", ReceivedAt="DEEP"), "ReceivedAt"),
        (postmark("Click", ReceivedAt="2026-11-20T09:15:00Z", OriginalLink="DEEP"), "OriginalLink"),
        (postmark("Click", OriginalLink={"href": "https://example.com/"}), "OriginalLink"),
        (
            postmark(
                "SubscriptionChange",
                SuppressSending=True,
                SuppressionReason="ManualSuppression",
                ChangedAt="DEEP",
            ),
            "ChangedAt",
        ),
    ],
)
def test_a_postmark_field_holding_a_list_or_object_is_that_events_problem(
    event: dict[str, Any], field: str
) -> None:
    delivery = postmark("Delivery", DeliveredAt="2026-11-20T09:15:00Z")
    parsed = PARSERS["postmark"](with_deep([delivery, event, delivery]), "f")
    assert [r.kind for r in parsed.records] == [EventKind.DELIVERED] * 2
    (problem,) = parsed.problems
    assert (problem.where, problem.field) == ("f:event-2", field)
    assert "got " in problem.reason or problem.reason.startswith("not text: ")


@pytest.mark.parametrize("bounce_class", ["DEEP", [10], {"class": 10}])
def test_a_sparkpost_bounce_class_holding_a_list_or_object_is_that_events_problem(
    bounce_class: object,
) -> None:
    batch = [
        {"msys": {"message_event": sparkpost("delivery")}},
        {"msys": {"message_event": sparkpost("bounce", bounce_class=bounce_class)}},
        {"msys": {"message_event": sparkpost("bounce", bounce_class=10)}},
    ]
    parsed = PARSERS["sparkpost"](with_deep(batch), "f")
    assert [(r.kind, r.bounce_type) for r in parsed.records] == [
        (EventKind.DELIVERED, None),
        (EventKind.BOUNCED, "hard"),
    ]
    (problem,) = parsed.problems
    assert (problem.where, problem.field) == ("f:event-2", "bounce_class")
    assert problem.reason.startswith("expected a number, got ")


def sparkpost(kind: str, **extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "type": kind,
        "event_id": f"sp-{kind}",
        "timestamp": "1794999000",
        "rcpt_to": "ada@example.com",
        "rcpt_meta": {"tenant": "acme", "user_id": "u-1"},
        "campaign_id": "spring",
        "message_id": "sp-msg",
    }
    base.update(extra)
    return base


@pytest.mark.parametrize(
    ("wrapper", "event", "kind", "fields"),
    [
        ("message_event", sparkpost("delivery"), EventKind.DELIVERED, {}),
        (
            "message_event",
            sparkpost("bounce", bounce_class="10", raw_reason="550 5.1.1"),
            EventKind.BOUNCED,
            {"bounce_type": "hard", "bounce_reason": "550 5.1.1"},
        ),
        (
            "message_event",
            sparkpost("bounce", bounce_class="21"),
            EventKind.BOUNCED,
            {"bounce_type": "soft"},
        ),
        (
            "message_event",
            sparkpost("out_of_band", bounce_class="51"),
            EventKind.BOUNCED,
            {"bounce_type": "soft"},
        ),
        (
            "message_event",
            sparkpost("bounce", bounce_class="1"),
            EventKind.BOUNCED,
            {"bounce_type": None},
        ),
        (
            "message_event",
            sparkpost("spam_complaint", fbtype="abuse"),
            EventKind.MARKED_AS_SPAM,
            {},
        ),
        ("track_event", sparkpost("open"), EventKind.OPENED, {}),
        ("track_event", sparkpost("initial_open"), EventKind.OPENED, {}),
        (
            "track_event",
            sparkpost("click", target_link_url="https://example.com/"),
            EventKind.LINK_CLICKED,
            {"link_url": "https://example.com/"},
        ),
        ("unsubscribe_event", sparkpost("list_unsubscribe"), EventKind.UNSUBSCRIBED, {}),
        (
            "unsubscribe_event",
            sparkpost("link_unsubscribe", ip_address="192.0.2.8", user_agent="UA"),
            EventKind.UNSUBSCRIBED,
            {"ip": "192.0.2.8", "user_agent": "UA"},
        ),
    ],
)
def test_sparkpost_events_map_to_their_kinds(
    wrapper: str, event: dict[str, Any], kind: EventKind, fields: dict[str, Any]
) -> None:
    parsed = PARSERS["sparkpost"](orjson.dumps([{"msys": {wrapper: event}}]), "f")
    assert parsed.problems == ()
    (record,) = parsed.records
    assert (record.kind, record.tenant, record.user_id, record.campaign_id) == (
        kind,
        "acme",
        "u-1",
        "spring",
    )
    assert record.event_id == event["event_id"]
    for name, value in fields.items():
        assert getattr(record, name) == value


def test_sparkpost_ping_and_other_events() -> None:
    batch = [
        {"msys": {}},
        {"msys": {"message_event": sparkpost("injection")}},
        {"msys": {"message_event": sparkpost("bounce", bounce_class="25")}},
        {"msys": {"message_event": sparkpost("delivery", rcpt_to="broken")}},
        {"msys": {"track_event": sparkpost("open")}},
    ]
    parsed = PARSERS["sparkpost"](orjson.dumps(batch), "f")
    assert [r.kind for r in parsed.records] == [EventKind.OPENED]
    assert [(p.where, p.field) for p in parsed.problems] == [
        ("f:event-2", "type"),
        ("f:event-3", "bounce_class"),
        ("f:event-4", "email"),
    ]
