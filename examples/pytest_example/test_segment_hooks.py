"""Assert on what reaches Segment, with LocalSegment (a real HTTP server on loopback).

Run: python -m pytest examples/pytest_example -q
"""

from __future__ import annotations

import pytest
from segment_hooks import on_bounce, on_click, on_delivery, on_unsubscribe

from selligent_segment import Emitter, InvalidEvent
from selligent_segment.testing import FaultPlan, LocalSegment

BOUNCE = {
    "account": "acme",
    "recipient": "Ada@Example.com",
    "id": "mta-8812",
    "at": "2026-11-20T10:01:00+01:00",
    "dsn": "5.1.1",
    "diagnostic": "550 5.1.1 user unknown",
}


def test_a_hard_bounce_becomes_email_bounced(emitter: Emitter, local_segment: LocalSegment) -> None:
    on_bounce(emitter, BOUNCE)
    assert emitter.flush(timeout=10)
    (event,) = local_segment.events("key-acme")
    assert event["event"] == "Email Bounced"
    assert event["anonymousId"] == "ada@example.com"
    assert event["context"]["traits"] == {"email": "ada@example.com"}
    assert event["timestamp"] == "2026-11-20T09:01:00.000Z"
    assert event["properties"] == {
        "bounce_type": "hard",
        "smtp_status": "5.1.1",
        "bounce_reason": "550 5.1.1 user unknown",
    }


def test_each_tenant_goes_to_its_own_workspace(
    emitter: Emitter, local_segment: LocalSegment
) -> None:
    base = {"id": "d-1", "at": "2026-11-20T09:00:00Z", "recipient": "ken@example.net"}
    on_delivery(emitter, {**base, "account": "acme", "contact_id": "u-1"})
    on_unsubscribe(emitter, {**base, "account": "globex", "list": "weekly"})
    assert emitter.flush(timeout=10)
    assert [e["event"] for e in local_segment.events("key-acme")] == ["Email Delivered"]
    assert local_segment.events("key-acme")[0]["userId"] == "u-1"
    (unsubscribe,) = local_segment.events("key-globex")
    assert unsubscribe["event"] == "Email Unsubscribed"
    assert unsubscribe["properties"] == {"list_id": "weekly"}


def test_a_bad_payload_is_refused_at_once_and_nothing_is_sent(
    emitter: Emitter, local_segment: LocalSegment
) -> None:
    with pytest.raises(InvalidEvent) as refused:
        on_click(emitter, {**BOUNCE, "recipient": "not-an-address", "url": "https://x.test"})
    assert refused.value.field == "email"
    assert emitter.flush(timeout=10)
    assert local_segment.request_count == 0


def test_an_outage_delays_events_but_loses_none(
    emitter: Emitter, local_segment: LocalSegment
) -> None:
    local_segment.set_faults(FaultPlan(script=[503, "drop"]))  # a 503, then a cut connection
    on_click(emitter, {**BOUNCE, "url": "https://example.com/offer", "ip": "203.0.113.9"})
    assert emitter.flush(timeout=10)
    assert [r.status for r in local_segment.requests] == [503, 0, 200]
    (event,) = local_segment.events("key-acme")
    assert event["event"] == "Email Link Clicked"
    assert event["context"]["ip"] == "203.0.113.9"


def test_a_replayed_hook_is_deduplicated_by_its_message_id(
    emitter: Emitter, local_segment: LocalSegment
) -> None:
    on_bounce(emitter, BOUNCE)
    on_bounce(emitter, BOUNCE)  # the platform retried its hook
    assert emitter.flush(timeout=10)
    assert local_segment.accepted_count == 1
    assert local_segment.duplicates == 1


def test_a_test_may_also_hand_the_hooks_its_own_emitter(local_segment: LocalSegment) -> None:
    with Emitter(write_keys={"acme": "key-acme"}, endpoint=local_segment.url) as emitter:
        on_bounce(emitter, BOUNCE)
        assert emitter.flush(timeout=10)
    assert [e["event"] for e in local_segment.events("key-acme")] == ["Email Bounced"]
