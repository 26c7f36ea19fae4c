"""The webhook routes over real loopback HTTP (serve_asgi) into an Emitter delivering to a
LocalSegment: 2xx only once the records are accepted, refusals with their status and one
WARNING line, replays deduplicated by the stable messageId."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import http.client
import logging
import urllib.parse
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from _asgi_calls import beside_a_held_body, call_asgi, chunk, post_scope
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from selligent_segment import BatchPolicy, ConfigurationError, Emitter, SpoolError
from selligent_segment.inputs.esp import (
    MailgunConfig,
    MailgunWebhook,
    PostmarkConfig,
    SendGridConfig,
    SesConfig,
    webhooks_app,
)
from selligent_segment.testing import FakeClock, LocalSegment
from selligent_segment.testing._asgi_server import serve_asgi

NOW = 1_795_000_000.0
KEY = ec.generate_private_key(ec.SECP256R1())
PUBLIC = base64.b64encode(
    KEY.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
).decode()
MAILGUN_KEY = "mailgun-signing-key"


def post(
    url: str, path: str, body: bytes, headers: dict[str, str] | None = None, method: str = "POST"
) -> tuple[int, dict[str, Any], dict[str, str]]:
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        answer = conn.getresponse()
        raw = answer.read()
        return (
            answer.status,
            orjson.loads(raw) if raw.startswith(b"{") else {},
            dict(answer.getheaders()),
        )
    finally:
        conn.close()


def sendgrid_request(events: list[dict[str, Any]]) -> tuple[bytes, dict[str, str]]:
    body = orjson.dumps(events)
    stamp = str(int(NOW))
    signature = KEY.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return body, {
        "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
        "X-Twilio-Email-Event-Webhook-Timestamp": stamp,
        "Content-Type": "application/json",
    }


def mailgun_body(token: str, event: dict[str, Any]) -> bytes:
    """A Mailgun post of ``event`` (its ``timestamp`` added), signed now with ``token``."""
    stamp = str(int(NOW))
    signature = hmac.new(MAILGUN_KEY.encode(), (stamp + token).encode(), hashlib.sha256).hexdigest()
    return orjson.dumps(
        {
            "signature": {"timestamp": stamp, "token": token, "signature": signature},
            "event-data": {**event, "timestamp": 1_794_999_000},
        }
    )


def sg_event(i: int, name: str = "delivered", **extra: Any) -> dict[str, Any]:
    return {
        "email": f"user{i}@example.com",
        "timestamp": 1_794_999_000,
        "event": name,
        "sg_event_id": f"sg-{i}",
        **extra,
    }


@pytest.fixture
def emitter(server: LocalSegment) -> Iterator[Emitter]:
    em = Emitter(
        endpoint=server.url,
        write_keys={"acme": "key-acme", "globex": "key-globex"},
        batch=BatchPolicy(linger=0.0),
    )
    yield em
    em.close(10)


def providers(clock: FakeClock) -> dict[str, Any]:
    return {
        "sendgrid": SendGridConfig(PUBLIC, now=clock.monotonic),
        "mailgun": MailgunWebhook(MailgunConfig(MAILGUN_KEY, now=clock.monotonic)),
        "postmark": PostmarkConfig("hook", "pm-pass"),
    }


def test_signed_events_reach_the_tenants_workspace_and_replays_dedup(
    server: LocalSegment, emitter: Emitter
) -> None:
    app = webhooks_app(emitter, providers(FakeClock(NOW)))
    body, headers = sendgrid_request([sg_event(1), sg_event(2, "open"), sg_event(3, "processed")])
    with serve_asgi(app) as url:
        status, answer, _ = post(url, "/sendgrid/acme", body, headers)
        assert (status, answer) == (200, {"accepted": 2, "skipped": 1, "problems": []})
        assert emitter.flush(10)
        first = server.message_ids
        status, _, _ = post(url, "/sendgrid/acme", body, headers)  # SendGrid's retry
        assert status == 200
        assert emitter.flush(10)
    assert len(server.events("key-acme")) == 2
    assert server.message_ids == first
    events = sorted(server.events("key-acme"), key=lambda e: e["event"])
    assert [e["event"] for e in events] == ["Email Delivered", "Email Opened"]
    assert events[0]["properties"]["esp"] == "sendgrid"


def test_the_tenant_may_come_from_the_custom_args(server: LocalSegment, emitter: Emitter) -> None:
    app = webhooks_app(emitter, providers(FakeClock(NOW)))
    body, headers = sendgrid_request([sg_event(1, tenant="globex"), sg_event(2, tenant="acme")])
    with serve_asgi(app) as url:
        assert post(url, "/sendgrid", body, headers)[0] == 200
        assert emitter.flush(10)
        # with the tenant in the URL, an event naming another tenant is refused
        status, answer, _ = post(url, "/sendgrid/acme", body, headers)
    assert status == 200
    assert answer["accepted"] == 1
    assert answer["problems"] == [
        "sendgrid:event-1: tenant: the event names another tenant than the URL"
    ]
    assert len(server.events("key-globex")) == 1


def test_a_forged_request_is_refused_with_a_log_line(
    server: LocalSegment, emitter: Emitter, caplog: pytest.LogCaptureFixture
) -> None:
    app = webhooks_app(emitter, providers(FakeClock(NOW)))
    body, headers = sendgrid_request([sg_event(1)])
    with (
        caplog.at_level(logging.WARNING, logger="selligent_segment.inputs.esp"),
        serve_asgi(app) as url,
    ):
        status, answer, _ = post(url, "/sendgrid/acme", body.replace(b"user1", b"user9"), headers)
        unauthorised = post(url, "/postmark/acme", b"{}", {"Authorization": "Basic bm86bm8="})
    assert (status, answer) == (403, {"error": "bad signature"})
    assert unauthorised[0] == 401
    assert unauthorised[2]["www-authenticate"].startswith("Basic")
    lines = [r.getMessage() for r in caplog.records]
    assert (
        "esp webhook refused: provider=sendgrid tenant='acme' status=403 reason=bad signature"
        in lines
    )
    assert not any("user" in line and "@" in line for line in lines)
    assert not any("pm-pass" in line for line in lines)
    assert server.accepted_count == 0


def test_mailgun_replay_refused_but_a_retry_after_a_503_accepted(
    server: LocalSegment, emitter: Emitter
) -> None:
    clock = FakeClock(NOW)
    hook = MailgunWebhook(MailgunConfig(MAILGUN_KEY, now=clock.monotonic))
    body = mailgun_body(
        "tok-1", {"id": "mg-1", "event": "delivered", "recipient": "ada@example.com"}
    )
    closed = Emitter(endpoint=server.url, write_keys={"acme": "key-acme"})
    closed.close(1)
    with serve_asgi(webhooks_app(closed, {"mailgun": hook})) as url:
        assert post(url, "/mailgun/acme", body)[0] == 503
    # Mailgun's first retry comes 10 minutes later, with the same signature: its timestamp
    # is then stale, and the retry was refused (the event lost).
    clock.advance(600.0)
    with serve_asgi(webhooks_app(emitter, {"mailgun": hook})) as url:
        assert post(url, "/mailgun/acme", body)[0] == 200
        assert post(url, "/mailgun/acme", body)[0] == 403
        assert emitter.flush(10)
    assert server.accepted_count == 1


class _FailingOnce:
    """An emitter whose first ``emit_many`` raises ``error`` (a spool that cannot write:
    an I/O error, PostgreSQL away), then hands on to ``emitter``."""

    def __init__(self, emitter: Emitter, error: Exception) -> None:
        self.emitter, self.error = emitter, error

    def emit_many(self, records: Any) -> Any:
        error, self.error = self.error, None
        if error is not None:
            raise error
        return self.emitter.emit_many(records)


@pytest.mark.parametrize(
    "error", [SpoolError("cannot write the spool journal: I/O error"), RuntimeError("a bug")]
)
def test_an_emitter_that_raises_is_a_503_and_mailguns_retry_is_accepted(
    server: LocalSegment, emitter: Emitter, error: Exception
) -> None:
    """A spool that cannot write raised through the app: a 500, and the token stayed
    remembered, so Mailgun's retry was refused as a replay and the event lost."""
    clock = FakeClock(NOW)
    hook = MailgunWebhook(MailgunConfig(MAILGUN_KEY, now=clock.monotonic))
    body = mailgun_body(
        "tok-9", {"id": "mg-9", "event": "unsubscribed", "recipient": "a@example.com"}
    )
    failing = _FailingOnce(emitter, error)
    with serve_asgi(webhooks_app(failing, {"mailgun": hook})) as url:  # type: ignore[arg-type]
        assert post(url, "/mailgun/acme", body)[:2] == (503, {"error": "not accepted now; retry"})
        clock.advance(600.0)  # Mailgun's retry, with the first signature
        assert post(url, "/mailgun/acme", body)[0] == 200
        assert emitter.flush(10)
    assert server.accepted_count == 1


def test_a_request_failing_before_its_token_is_recorded_does_not_free_a_captured_one(
    server: LocalSegment, emitter: Emitter
) -> None:
    """The app forgot the token of any request that raised: a captured body posted once
    to a tenant whose key lookup raises erased its token, and its replay was accepted."""

    def key_of(tenant: str | None) -> str:
        return {"acme": MAILGUN_KEY}[tenant or ""]  # KeyError for any other tenant

    hook = MailgunWebhook(MailgunConfig(key_of, now=FakeClock(NOW).monotonic))
    body = mailgun_body("tok-7", {"id": "mg-7", "event": "delivered", "recipient": "a@example.com"})
    with serve_asgi(webhooks_app(emitter, {"mailgun": hook})) as url:
        assert post(url, "/mailgun/acme", body)[0] == 200
        assert post(url, "/mailgun/acme", body)[0] == 403
        assert post(url, "/mailgun/nosuch", body)[0] == 503  # KeyError in the lookup
        assert post(url, "/mailgun/acme", body)[0] == 403  # still a replay
        assert emitter.flush(10)
    assert server.accepted_count == 1


def _no_fetch(url: str) -> bytes:
    raise AssertionError("no certificate is fetched for a body too large")


def test_a_provider_whose_body_is_read_before_its_check_has_a_lower_body_limit(
    emitter: Emitter,
) -> None:
    """Mailgun's and SNS's bodies are parsed before their signature can be checked, in
    one call holding the GIL: 16 MiB of JSON from anyone stalled every route for a second.
    Their bodies are one event (an SNS message is at most 256 KB): larger is a 413."""
    big = b"[" + b"{}," * 800_000 + b"{}]"  # 2.4 MB
    ses = SesConfig(["arn:aws:sns:eu-west-1:123456789012:ses"], fetch=_no_fetch)
    with serve_asgi(webhooks_app(emitter, {**providers(FakeClock(NOW)), "ses": ses})) as url:
        assert post(url, "/mailgun/acme", big)[0] == 413
        assert post(url, "/ses/acme", big)[0] == 413
        assert post(url, "/sendgrid/acme", big)[0] == 401  # unsigned: checked first


def test_an_unknown_tenant_is_a_503_so_the_provider_retries(
    server: LocalSegment, emitter: Emitter
) -> None:
    body, headers = sendgrid_request([sg_event(1), sg_event(2)])
    with serve_asgi(webhooks_app(emitter, providers(FakeClock(NOW)))) as url:
        assert post(url, "/sendgrid/initech", body, headers)[0] == 503
        assert emitter.flush(10)
    assert server.accepted_count == 0  # nothing accepted: the retry duplicates nothing


def test_a_batch_with_an_unknown_tenant_is_never_both_accepted_and_retried(
    server: LocalSegment, emitter: Emitter, caplog: pytest.LogCaptureFixture
) -> None:
    # Without the tenant in the URL, one batch may mix a known and an unknown tenant: the
    # known one's record is accepted, so the answer is a 200 listing the other (a 503
    # would make SendGrid re-post the batch for hours, re-accepting the good record).
    events = [sg_event(1, tenant="acme"), sg_event(2, tenant="initech")]
    body, headers = sendgrid_request(events)
    with (
        caplog.at_level(logging.WARNING, logger="selligent_segment.inputs.esp"),
        serve_asgi(webhooks_app(emitter, providers(FakeClock(NOW)))) as url,
    ):
        status, answer, _ = post(url, "/sendgrid", body, headers)
        assert emitter.flush(10)
    assert (status, answer) == (
        200,
        {
            "accepted": 1,
            "skipped": 0,
            "problems": ["sendgrid:event-2: emit: no write key configured for tenant 'initech'"],
        },
    )
    assert len(server.events("key-acme")) == 1
    assert (
        "esp webhook: provider=sendgrid tenant=-: 1 record(s) of tenants without a write key "
        "not accepted and not retried, first: 'initech'"
    ) in [r.getMessage() for r in caplog.records]


def test_a_record_refused_at_emit_is_named_by_its_event_not_its_index_among_records(
    server: LocalSegment, emitter: Emitter
) -> None:
    # The first event is skipped: the unknown tenant's record is the second record but
    # the third event, and the answer names it as the problems of the reading do.
    events = [sg_event(0, "processed"), sg_event(1, tenant="acme"), sg_event(2, tenant="initech")]
    body, headers = sendgrid_request(events)
    with serve_asgi(webhooks_app(emitter, providers(FakeClock(NOW)))) as url:
        status, answer, _ = post(url, "/sendgrid", body, headers)
        assert emitter.flush(10)
    assert (status, answer["accepted"], answer["skipped"]) == (200, 1, 1)
    assert answer["problems"] == [
        "sendgrid:event-3: emit: no write key configured for tenant 'initech'"
    ]


def test_routes_methods_and_sizes(emitter: Emitter) -> None:
    app = webhooks_app(emitter, providers(FakeClock(NOW)), max_body=100)
    with serve_asgi(app) as url:
        assert post(url, "/nope/acme", b"")[0] == 404
        assert post(url, "/sendgrid/acme/extra", b"")[0] == 404
        assert post(url, "/sendgrid/acme", b"", method="GET")[0] == 405
        assert post(url, "/sendgrid/acme", b"x" * 101)[0] == 413
        assert (
            post(
                url,
                "/postmark/acme",
                b"[",
                {"Authorization": "Basic " + base64.b64encode(b"hook:pm-pass").decode()},
            )[0]
            == 400
        )


def test_bodies_past_the_budget_or_the_deadline_are_refused(emitter: Emitter) -> None:
    """As the destination's receiver (found by its review): the bodies being read at once
    hold at most ``max_bodies_bytes`` (503: the provider retries), and a body that is not
    whole within ``body_deadline`` is refused (408)."""
    app = webhooks_app(emitter, providers(FakeClock(NOW)), max_body=100, max_bodies_bytes=100)
    scope = post_scope("/sendgrid/acme", {})
    status, body = asyncio.run(beside_a_held_body(app, scope, scope, [chunk(b"[" * 50)]))
    assert (status, orjson.loads(body)) == (
        503,
        {"error": "too many requests being read at once; retry"},
    )
    app = webhooks_app(emitter, providers(FakeClock(NOW)), max_body=100, body_deadline=1e-6)
    status, body = call_asgi(app, scope, [chunk(b"[", more=True)])
    assert (status, orjson.loads(body)) == (
        408,
        {"error": "the request body did not arrive within 1e-06 s"},
    )
    with pytest.raises(ConfigurationError, match="max_bodies_bytes"):
        webhooks_app(emitter, providers(FakeClock(NOW)), max_body=100, max_bodies_bytes=99)
    webhooks_app(emitter, providers(FakeClock(NOW)), max_body=100 << 20)  # the budget follows


def test_a_prefix_is_stripped_on_a_segment_boundary_only(emitter: Emitter) -> None:
    """Mounted, the path keeps the prefix that ``root_path`` names; a path given relative
    already is not cut mid-segment (``/send`` off ``/sendgrid/acme`` left ``grid/acme``: a
    404 the provider would not retry; found by a review)."""
    app = webhooks_app(emitter, providers(FakeClock(NOW)))
    for path, root in [("/hooks/nope/acme", "/hooks"), ("/nope/acme", "/no")]:
        assert call_asgi(app, post_scope(path, {}, root_path=root), [chunk(b"")])[0] == 404
    for path, root in [("/hooks/sendgrid/acme", "/hooks"), ("/sendgrid/acme", "/send")]:
        status, _ = call_asgi(app, post_scope(path, {}, root_path=root), [chunk(b"[]")])
        assert status == 401, (path, root)  # found, and refused for its missing signature


class _Broken:
    """A webhook object whose check fails with an unexpected exception."""

    provider = "broken"

    def handle(self, body: bytes, headers: Any, tenant: str | None = None) -> Any:
        raise RuntimeError("sk_live_SECRET details of ada@example.com")

    def release(self, body: bytes, headers: Any) -> None:
        """Nothing to forget."""


def test_an_unexpected_exception_is_a_400_logged_by_its_type_only(
    emitter: Emitter, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.WARNING, logger="selligent_segment.inputs.esp"),
        serve_asgi(webhooks_app(emitter, {"broken": _Broken()})) as url,
    ):
        status, answer, _ = post(url, "/broken/acme", b"{}")
    assert (status, answer) == (400, {"error": "unreadable request (RuntimeError)"})
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "esp webhook refused: provider=broken tenant='acme' status=400 "
        "reason=unreadable request (RuntimeError)"
    ]
    assert not any(r.exc_info for r in caplog.records)
