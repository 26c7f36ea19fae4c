"""SendGrid's signed event webhook: real ECDSA signatures made here with our own key, the
timestamp window on a fake clock, and the event -> kind table."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from selligent_segment import EventKind
from selligent_segment.inputs import InputError
from selligent_segment.inputs.esp import PARSERS, SendGridConfig, SendGridWebhook, WebhookRefused
from selligent_segment.testing import FakeClock

NOW = 1_795_000_000.0  # 2026-11-18
KEY = ec.generate_private_key(ec.SECP256R1())
PUBLIC = base64.b64encode(
    KEY.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
).decode()


def signed(body: bytes, stamp: str, key: ec.EllipticCurvePrivateKey = KEY) -> dict[str, str]:
    signature = key.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return {
        "x-twilio-email-event-webhook-signature": base64.b64encode(signature).decode(),
        "x-twilio-email-event-webhook-timestamp": stamp,
    }


def event(name: str = "delivered", **extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "email": "ada@example.com",
        "timestamp": 1_794_999_000,
        "event": name,
        "sg_event_id": f"sg-{name}",
        "sg_message_id": "msg-1.filter",
        "tenant": "acme",
        "email_id": "e-7",
    }
    base.update(extra)
    return base


def webhook(clock: FakeClock | None = None, **options: Any) -> SendGridWebhook:
    clock = clock or FakeClock(NOW)
    return SendGridWebhook(SendGridConfig(PUBLIC, now=clock.monotonic, **options))


def test_a_request_signed_with_the_key_is_read() -> None:
    body = orjson.dumps([event("delivered"), event("open", sg_machine_open=True)])
    parsed = webhook().handle(body, signed(body, str(int(NOW))))
    assert parsed.problems == ()
    delivered, opened = parsed.records
    assert delivered.kind is EventKind.DELIVERED
    assert delivered.tenant == "acme"
    assert delivered.email == "ada@example.com"
    assert delivered.event_id == "sg-delivered"
    assert delivered.email_id == "e-7"
    assert delivered.properties["esp"] == "sendgrid"
    assert delivered.properties["esp_message_id"] == "msg-1.filter"
    assert delivered.timestamp is not None
    assert delivered.timestamp.timestamp() == 1_794_999_000
    assert opened.properties["machine_open"] is True
    assert opened.properties["machine_open_reason"] == "esp"


def test_a_forged_body_or_another_key_is_refused() -> None:
    body = orjson.dumps([event("delivered")])
    headers = signed(body, str(int(NOW)))
    with pytest.raises(WebhookRefused) as forged:
        webhook().handle(body.replace(b"ada", b"eve"), headers)
    assert forged.value.status == 403
    assert forged.value.reason == "bad signature"
    other = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(WebhookRefused, match="bad signature"):
        webhook().handle(body, signed(body, str(int(NOW)), other))
    with pytest.raises(WebhookRefused) as unsigned:
        webhook().handle(body, {})
    assert unsigned.value.status == 401


def test_a_signed_timestamp_outside_the_window_is_refused() -> None:
    body = orjson.dumps([event("delivered")])
    clock = FakeClock(NOW)
    hook = webhook(clock, max_skew=300.0)
    headers = signed(body, str(int(NOW)))
    assert len(hook.handle(body, headers).records) == 1
    clock.advance(300.0)
    assert len(hook.handle(body, headers).records) == 1
    clock.advance(1.0)
    with pytest.raises(WebhookRefused, match="stale timestamp"):
        hook.handle(body, headers)
    with pytest.raises(WebhookRefused, match="stale timestamp"):
        hook.handle(body, signed(body, str(int(NOW + 1000))))


def test_a_changed_timestamp_header_breaks_the_signature() -> None:
    body = orjson.dumps([event("delivered")])
    headers = signed(body, str(int(NOW) - 3600))
    headers["x-twilio-email-event-webhook-timestamp"] = str(int(NOW))
    with pytest.raises(WebhookRefused, match="bad signature"):
        webhook().handle(body, headers)


def test_a_key_looked_up_per_tenant() -> None:
    body = orjson.dumps([event("delivered")])
    keys = {"acme": PUBLIC}
    hook = SendGridWebhook(SendGridConfig(keys.get, now=FakeClock(NOW).monotonic))
    assert len(hook.handle(body, signed(body, str(int(NOW))), "acme").records) == 1
    with pytest.raises(WebhookRefused, match="no verification key"):
        hook.handle(body, signed(body, str(int(NOW))), "globex")


def test_the_key_never_shows_in_the_config_repr() -> None:
    assert PUBLIC not in repr(SendGridConfig(PUBLIC))


@pytest.mark.parametrize(
    ("extra", "kind", "fields"),
    [
        ({"event": "delivered"}, EventKind.DELIVERED, {}),
        ({"event": "open", "ip": "203.0.113.9"}, EventKind.OPENED, {"ip": "203.0.113.9"}),
        (
            {"event": "click", "url": "https://example.com/x"},
            EventKind.LINK_CLICKED,
            {"link_url": "https://example.com/x"},
        ),
        (
            {"event": "bounce", "type": "bounce", "reason": "550 5.1.1 unknown", "status": "5.1.1"},
            EventKind.BOUNCED,
            {"bounce_type": "hard", "bounce_reason": "550 5.1.1 unknown", "smtp_status": "5.1.1"},
        ),
        ({"event": "bounce", "type": "blocked"}, EventKind.BOUNCED, {"bounce_type": "soft"}),
        ({"event": "spamreport"}, EventKind.MARKED_AS_SPAM, {}),
        (
            {"event": "unsubscribe", "ip": "203.0.113.9", "useragent": "Mozilla/5.0"},
            EventKind.UNSUBSCRIBED,
            {"ip": "203.0.113.9", "user_agent": "Mozilla/5.0"},
        ),
        (
            {"event": "group_unsubscribe", "asm_group_id": 42, "ip": "203.0.113.9"},
            EventKind.UNSUBSCRIBED,
            {"list_id": "42", "ip": "203.0.113.9"},
        ),
    ],
)
def test_each_event_maps_to_its_kind(
    extra: dict[str, Any], kind: EventKind, fields: dict[str, str]
) -> None:
    parsed = PARSERS["sendgrid"](orjson.dumps([event(**extra)]), "saved.json")
    (record,) = parsed.records
    assert record.kind is kind
    assert record.properties["esp_event"] == extra["event"]
    for name, value in fields.items():
        assert getattr(record, name) == value


@pytest.mark.parametrize("name", ["processed", "deferred", "dropped", "group_resubscribe", "x"])
def test_other_events_are_skipped_and_reported(name: str) -> None:
    parsed = PARSERS["sendgrid"](orjson.dumps([event(name), event("delivered")]), "f")
    assert len(parsed.records) == 1
    (problem,) = parsed.problems
    assert problem.where == "f:event-1"
    assert problem.field == "event"
    assert problem.reason.startswith("skipped: ")


def test_a_bad_event_costs_only_itself() -> None:
    events = [event("delivered", email="not-an-address"), 7, event("open")]
    parsed = PARSERS["sendgrid"](orjson.dumps(events), "f")
    assert [r.kind for r in parsed.records] == [EventKind.OPENED]
    assert [(p.where, p.field) for p in parsed.problems] == [
        ("f:event-1", "email"),
        ("f:event-2", "event"),
    ]
    assert all("not-an-address" not in str(p) for p in parsed.problems)


def test_a_body_that_is_not_json_is_an_input_error() -> None:
    with pytest.raises(InputError) as info:
        PARSERS["sendgrid"](b"{nope", "f")
    assert info.value.where == "f"


@pytest.mark.parametrize("stamp", ["nan", "inf"])
def test_a_signed_timestamp_that_is_not_a_finite_number_is_refused(stamp: str) -> None:
    """``abs(nan) > max_skew`` is False: a signed "nan" passed the freshness check."""
    body = orjson.dumps([event("delivered")])
    with pytest.raises(WebhookRefused):
        webhook().handle(body, signed(body, stamp))
