"""Mailgun: real HMAC-SHA256 signatures made here with our own signing key; forged, stale
and replayed requests refused; the bounded token cache; the event -> kind table."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import orjson
import pytest

from selligent_segment import EventKind
from selligent_segment.inputs.esp import PARSERS, MailgunConfig, MailgunWebhook, WebhookRefused
from selligent_segment.inputs.esp._hmac import SeenTokens
from selligent_segment.inputs.esp._mailgun import RETRY_WINDOW
from selligent_segment.testing import FakeClock

NOW = 1_795_000_000.0
SIGNING_KEY = "key-mailgun-test-0123456789"


def body(
    event: dict[str, Any], *, token: str = "tok-1", stamp: float = NOW, key: str = SIGNING_KEY
) -> bytes:
    text = str(int(stamp))
    signature = hmac.new(key.encode(), (text + token).encode(), hashlib.sha256).hexdigest()
    return orjson.dumps(
        {
            "signature": {"timestamp": text, "token": token, "signature": signature},
            "event-data": event,
        }
    )


def event(name: str = "delivered", **extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": f"mg-{name}",
        "timestamp": 1_794_999_000.25,
        "event": name,
        "recipient": "ada@example.com",
        "user-variables": {"tenant": "acme", "user_id": 42, "campaign_id": "c-1"},
        "message": {"headers": {"message-id": "abc@mg.example.com", "subject": "Hi"}},
    }
    base.update(extra)
    return base


def webhook(clock: FakeClock | None = None, **options: Any) -> MailgunWebhook:
    clock = clock or FakeClock(NOW)
    return MailgunWebhook(MailgunConfig(SIGNING_KEY, now=clock.monotonic, **options))


def test_a_signed_event_is_read() -> None:
    (record,) = webhook().handle(body(event()), {}).records
    assert (record.kind, record.tenant, record.user_id, record.campaign_id) == (
        EventKind.DELIVERED,
        "acme",
        "42",
        "c-1",
    )
    assert (record.event_id, record.email_subject) == ("mg-delivered", "Hi")
    assert record.properties["esp_message_id"] == "abc@mg.example.com"


def test_a_forged_event_or_key_is_refused() -> None:
    good = body(event())
    with pytest.raises(WebhookRefused, match="bad signature"):
        webhook().handle(body(event(), key="another-key"), {})
    tampered = orjson.loads(good)
    tampered["signature"]["token"] = "tok-2"
    with pytest.raises(WebhookRefused, match="bad signature"):
        webhook().handle(orjson.dumps(tampered), {})
    with pytest.raises(WebhookRefused) as unsigned:
        webhook().handle(orjson.dumps({"event-data": event()}), {})
    assert unsigned.value.status == 401


def test_a_stale_timestamp_is_refused() -> None:
    clock = FakeClock(NOW)
    hook = webhook(clock, max_age=300.0)
    clock.advance(301.0)
    with pytest.raises(WebhookRefused, match="stale timestamp"):
        hook.handle(body(event()), {})


def test_a_token_is_accepted_once() -> None:
    hook = webhook()
    assert len(hook.handle(body(event()), {}).records) == 1
    # the same signature on another body: the body is not signed, the token says replay
    with pytest.raises(WebhookRefused, match="replayed"):
        hook.handle(body(event("complained")), {})


def test_a_released_token_may_come_again() -> None:
    hook = webhook()
    request = body(event())
    hook.handle(request, {})
    hook.release(request, {})
    assert len(hook.handle(request, {}).records) == 1


def test_a_retry_after_a_503_is_accepted_with_its_first_signature_for_a_while() -> None:
    """Mailgun retries over 8 hours with the signature it first sent: a request answered
    503 may come again once, however old its timestamp, within RETRY_WINDOW."""
    clock = FakeClock(NOW)
    hook = webhook(clock)
    request = body(event())
    hook.handle(request, {})
    hook.release(request, {})  # answered 503
    clock.advance(3600.0)
    assert len(hook.handle(request, {}).records) == 1
    with pytest.raises(WebhookRefused, match="stale timestamp"):  # once: no allowance left
        hook.handle(request, {})
    late = body(event(), token="tok-late", stamp=NOW + 3600.0)
    hook.handle(late, {})
    hook.release(late, {})
    clock.advance(RETRY_WINDOW + 1.0)
    with pytest.raises(WebhookRefused, match="stale timestamp"):
        hook.handle(late, {})
    with pytest.raises(WebhookRefused, match="stale timestamp"):  # never answered 503
        hook.handle(body(event(), token="tok-never"), {})


def test_a_signature_is_accepted_once_however_its_text_is_split() -> None:
    """The HMAC covers timestamp + token: moving the token's first characters onto the
    timestamp ("1795000000" + "e0..." as "1795000000e0" + "...", the same number) gave
    the same signature a token never seen."""
    hook = webhook()
    request = body(event(), token="e0abc")
    hook.handle(request, {})
    shifted = orjson.loads(request)
    shifted["signature"]["timestamp"] += "e0"
    shifted["signature"]["token"] = "abc"
    with pytest.raises(WebhookRefused, match="not whole seconds"):
        hook.handle(orjson.dumps(shifted), {})
    digits = orjson.loads(body(event(), token="12abc"))
    digits["signature"]["timestamp"] += "12"
    digits["signature"]["token"] = "abc"
    with pytest.raises(WebhookRefused, match="stale timestamp"):
        hook.handle(orjson.dumps(digits), {})


def test_the_token_cache_is_bounded() -> None:
    seen = SeenTokens(2)
    assert seen.first_time("a")
    assert seen.first_time("b")
    assert not seen.first_time("a")
    assert seen.first_time("c")
    assert len(seen) == 2
    assert seen.first_time("a")  # the oldest was forgotten


def test_the_key_never_shows_in_the_config_repr() -> None:
    assert SIGNING_KEY not in repr(MailgunConfig(SIGNING_KEY))


@pytest.mark.parametrize(
    ("extra", "kind", "fields"),
    [
        ({"event": "delivered"}, EventKind.DELIVERED, {}),
        ({"event": "opened", "ip": "17.1.2.3"}, EventKind.OPENED, {"ip": "17.1.2.3"}),
        (
            {"event": "clicked", "url": "https://example.com/x"},
            EventKind.LINK_CLICKED,
            {"link_url": "https://example.com/x"},
        ),
        (
            {"event": "unsubscribed", "ip": "198.51.100.4", "client-info": {"user-agent": "UA"}},
            EventKind.UNSUBSCRIBED,
            {"ip": "198.51.100.4", "user_agent": "UA"},
        ),
        ({"event": "complained"}, EventKind.MARKED_AS_SPAM, {}),
        (
            {
                "event": "failed",
                "severity": "permanent",
                "reason": "bounce",
                "delivery-status": {"code": 550, "message": "5.1.1 no such user"},
            },
            EventKind.BOUNCED,
            {"bounce_type": "hard", "smtp_status": "550", "bounce_reason": "5.1.1 no such user"},
        ),
        (
            {"event": "failed", "severity": "temporary", "reason": "generic"},
            EventKind.BOUNCED,
            {"bounce_type": "soft"},
        ),
    ],
)
def test_each_event_maps_to_its_kind(
    extra: dict[str, Any], kind: EventKind, fields: dict[str, Any]
) -> None:
    (record,) = PARSERS["mailgun"](body(event(**extra)), "saved.json").records
    assert record.kind is kind
    for name, value in fields.items():
        assert getattr(record, name) == value


def test_an_apple_proxy_open_is_flagged_not_dropped() -> None:
    (record,) = PARSERS["mailgun"](body(event("opened", ip="17.1.2.3")), "f").records
    assert record.properties["machine_open"] is True


@pytest.mark.parametrize(
    "extra",
    [
        {"event": "accepted"},
        {"event": "rejected"},
        {"event": "failed", "severity": "permanent", "reason": "suppress-bounce"},
    ],
)
def test_other_events_are_skipped_and_reported(extra: dict[str, Any]) -> None:
    parsed = PARSERS["mailgun"](body(event(**extra)), "f")
    assert parsed.records == ()
    assert parsed.problems[0].reason.startswith("skipped: ")


@pytest.mark.parametrize("stamp", ["nan", "inf", "-inf"])
def test_a_signed_timestamp_that_is_not_a_finite_number_is_refused(stamp: str) -> None:
    """``abs(nan) > max_age`` is False: a signed "nan" passed the freshness check."""
    signature = hmac.new(SIGNING_KEY.encode(), (stamp + "tok-9").encode(), hashlib.sha256)
    payload = orjson.dumps(
        {
            "signature": {"timestamp": stamp, "token": "tok-9", "signature": signature.hexdigest()},
            "event-data": event(),
        }
    )
    with pytest.raises(WebhookRefused, match="the timestamp is not whole seconds"):
        webhook().handle(payload, {})
