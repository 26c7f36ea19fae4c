"""SES through SNS: real RSA signatures (versions 1 and 2) made here under our own
self-signed certificate, handed to the verifier through the injected fetcher; the
certificate host and topic allow-lists, the age window on a fake clock, subscription
confirmation, and the SES notification -> kind table."""

from __future__ import annotations

import base64
import datetime as dt
import logging
from typing import Any

import orjson
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from selligent_segment import EventKind
from selligent_segment.inputs.esp import PARSERS, SesConfig, SesWebhook, SnsMessage, WebhookRefused
from selligent_segment.inputs.esp._sns import (
    FAILURE_TTL,
    MAX_NEW_FETCHES,
    allowed_sns_url,
    canonical_string,
)
from selligent_segment.testing import FakeClock

NOW = dt.datetime(2026, 11, 20, 9, 15, tzinfo=dt.timezone.utc)
TOPIC = "arn:aws:sns:eu-west-1:123456789012:ses-events"
CERT_URL = "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-abc.pem"
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def certificate(key: rsa.RSAPrivateKey, days: int = 365) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=days))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


PEM = certificate(KEY)


class Fetcher:
    """The injected network: serves our certificate at CERT_URL, counts the fetches."""

    def __init__(self, pem: bytes = PEM) -> None:
        self.pem = pem
        self.urls: list[str] = []

    def __call__(self, url: str) -> bytes:
        self.urls.append(url)
        if url.endswith(".pem"):
            return self.pem
        return b"<ConfirmSubscriptionResponse/>"


def envelope(
    message: Any,
    *,
    kind: str = "Notification",
    version: str = "1",
    key: rsa.RSAPrivateKey = KEY,
    **extra: Any,
) -> dict[str, Any]:
    env: dict[str, Any] = {
        "Type": kind,
        "MessageId": "sns-1",
        "TopicArn": TOPIC,
        "Message": message if isinstance(message, str) else orjson.dumps(message).decode(),
        "Timestamp": "2026-11-20T09:14:00.000Z",
        "SignatureVersion": version,
        "SigningCertURL": CERT_URL,
    }
    if kind != "Notification":
        env["Token"] = "tok"
        env["SubscribeURL"] = (
            "https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription&Token=tok"
        )
    else:
        env["Subject"] = "Amazon SES Email Event Notification"
    env.update(extra)
    digest = hashes.SHA1() if version == "1" else hashes.SHA256()
    env["Signature"] = base64.b64encode(
        key.sign(canonical_string(env), padding.PKCS1v15(), digest)
    ).decode()
    return env


def mail(**extra: Any) -> dict[str, Any]:
    base = {
        "timestamp": "2026-11-20T09:10:00.000Z",
        "messageId": "ses-msg-1",
        "destination": ["ada@example.com"],
        "commonHeaders": {"subject": "Hello"},
        "tags": {"tenant": ["acme"], "email_id": ["e-9"], "ses:configuration-set": ["cs"]},
    }
    base.update(extra)
    return base


def bounce(bounce_type: str = "Permanent") -> dict[str, Any]:
    return {
        "eventType": "Bounce",
        "mail": mail(),
        "bounce": {
            "bounceType": bounce_type,
            "bounceSubType": "General",
            "timestamp": "2026-11-20T09:11:00.000Z",
            "feedbackId": "fb-1",
            "bouncedRecipients": [
                {
                    "emailAddress": "ada@example.com",
                    "status": "5.1.1",
                    "diagnosticCode": "smtp; 550 5.1.1 unknown",
                },
                {"emailAddress": "bob@example.com", "status": "5.1.1"},
            ],
        },
    }


def webhook(
    fetch: Fetcher | None = None, clock: FakeClock | None = None, **options: Any
) -> SesWebhook:
    clock = clock or FakeClock(NOW.timestamp())
    return SesWebhook(SesConfig([TOPIC], fetch=fetch or Fetcher(), now=clock.monotonic, **options))


@pytest.mark.parametrize("version", ["1", "2"])
def test_a_signed_notification_is_read(version: str) -> None:
    fetch = Fetcher()
    parsed = webhook(fetch).handle(orjson.dumps(envelope(bounce(), version=version)), {})
    assert parsed.problems == ()
    first, second = parsed.records
    assert (first.kind, first.bounce_type, first.smtp_status) == (
        EventKind.BOUNCED,
        "hard",
        "5.1.1",
    )
    assert first.bounce_reason == "smtp; 550 5.1.1 unknown"
    assert (first.tenant, first.email_id, first.email_subject) == ("acme", "e-9", "Hello")
    assert (first.event_id, second.event_id) == ("sns-1:0", "sns-1:1")
    assert second.email == "bob@example.com"
    assert first.properties["esp_bounce_classification"] == "Permanent/General"
    assert fetch.urls == [CERT_URL]


def test_the_certificate_is_fetched_once_per_url_and_the_cache_is_bounded() -> None:
    fetch = Fetcher()
    hook = webhook(fetch, cache_size=1)
    body = orjson.dumps(envelope(bounce()))
    hook.handle(body, {})
    hook.handle(body, {})
    assert fetch.urls == [CERT_URL]
    other = CERT_URL.replace("abc", "def")
    hook.handle(orjson.dumps(envelope(bounce(), SigningCertURL=other)), {})
    assert hook.verifier.cached == 1
    hook.handle(body, {})
    assert fetch.urls == [CERT_URL, other, CERT_URL]


def test_a_forged_message_is_refused() -> None:
    env = envelope(bounce())
    env["Message"] = env["Message"].replace("ada@", "eve@")
    with pytest.raises(WebhookRefused) as info:
        webhook().handle(orjson.dumps(env), {})
    assert (info.value.status, info.value.reason) == (403, "bad signature")
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(WebhookRefused, match="bad signature"):
        webhook().handle(orjson.dumps(envelope(bounce(), key=stranger)), {})


@pytest.mark.parametrize(
    "url",
    [
        "http://sns.eu-west-1.amazonaws.com/x.pem",
        "https://sns.eu-west-1.amazonaws.com.evil.example/x.pem",
        "https://evil.example/sns.eu-west-1.amazonaws.com/x.pem",
        "https://sns.eu-west-1.amazonaws.com@evil.example/x.pem",
        "https://sns.eu-west-1.amazonaws.com:8443/x.pem",
        "https://s3.amazonaws.com/x.pem",
        # an S3 bucket named "sns": its owner serves the certificate
        "https://sns.s3.amazonaws.com/SimpleNotificationService-abc.pem",
        "https://sns.s3-us-west-2.amazonaws.com/SimpleNotificationService-abc.pem",
        "https://sns.s3-accelerate.amazonaws.com/SimpleNotificationService-abc.pem",
        "https://sns.s3.dualstack.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem",
        # an SNS host, but not the path SNS signs from
        "https://sns.eu-west-1.amazonaws.com/x.pem",
        "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-xyz.pem",
        "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-abc.pem/x",
        "https://sns.eu-west-1.amazonaws.com/a/SimpleNotificationService-abc.pem",
        "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-abc.pem?x=1",
        "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-abc.pem#x",
    ],
)
def test_a_certificate_url_off_the_sns_hosts_is_refused_without_a_fetch(url: str) -> None:
    fetch = Fetcher()
    with pytest.raises(WebhookRefused, match="SigningCertURL"):
        webhook(fetch).handle(orjson.dumps(envelope(bounce(), SigningCertURL=url)), {})
    assert fetch.urls == []


def test_the_china_and_government_regions_are_sns_hosts() -> None:
    assert allowed_sns_url("https://sns.cn-north-1.amazonaws.com.cn/x.pem")
    assert allowed_sns_url("https://sns.us-gov-west-1.amazonaws.com/x.pem")
    assert allowed_sns_url("https://sns.ap-southeast-2.amazonaws.com/x.pem")


def test_certificates_not_yet_known_are_fetched_a_few_a_minute_at_most() -> None:
    """Each forged request may name a certificate URL of its own (the <hex> is the
    sender's): each cost a fetch, on threads every provider shares. Past the budget the
    answer is a 503 (SNS retries) without a fetch, until the minute has passed."""
    clock = FakeClock(NOW.timestamp())
    urls: list[str] = []

    def fetch(url: str) -> bytes:
        urls.append(url)
        raise OSError("HTTP 404")

    hook = SesWebhook(SesConfig([TOPIC], fetch=fetch, now=clock.monotonic))
    for n in range(MAX_NEW_FETCHES + 3):
        url = CERT_URL.replace("abc", f"{n:04x}")
        body = orjson.dumps(envelope(bounce(), SigningCertURL=url))
        with pytest.raises(WebhookRefused) as info:
            hook.handle(body, {})
        assert info.value.status == 503
    assert len(urls) == MAX_NEW_FETCHES
    assert "too many signing certificates" in info.value.reason
    clock.advance(FAILURE_TTL)
    with pytest.raises(WebhookRefused, match="could not fetch"):
        hook.handle(orjson.dumps(envelope(bounce(), SigningCertURL=CERT_URL)), {})
    assert urls[-1] == CERT_URL


def test_a_topic_not_allowed_is_refused_before_any_fetch() -> None:
    fetch = Fetcher()
    body = orjson.dumps(envelope(bounce(), TopicArn=TOPIC + "-other"))
    with pytest.raises(WebhookRefused, match="topic not allowed"):
        webhook(fetch).handle(body, {})
    assert fetch.urls == []


def test_a_stale_message_and_an_expired_certificate_are_refused() -> None:
    clock = FakeClock(NOW.timestamp())
    hook = webhook(clock=clock, max_age=3600.0)
    body = orjson.dumps(envelope(bounce()))
    assert len(hook.handle(body, {}).records) == 2
    clock.advance(3600.0)
    with pytest.raises(WebhookRefused, match="stale message"):
        hook.handle(body, {})
    expired = webhook(Fetcher(certificate(KEY, days=-0)), FakeClock(NOW.timestamp() + 60))
    with pytest.raises(WebhookRefused, match="validity period"):
        expired.handle(body, {})


def test_a_certificate_that_cannot_be_fetched_is_a_503() -> None:
    def down(url: str) -> bytes:
        raise OSError("no route")

    hook = SesWebhook(SesConfig([TOPIC], fetch=down, now=lambda: NOW.timestamp()))
    with pytest.raises(WebhookRefused) as info:
        hook.handle(orjson.dumps(envelope(bounce())), {})
    assert info.value.status == 503


def test_a_failed_fetch_is_remembered_briefly_and_evicts_no_certificate() -> None:
    clock = FakeClock(NOW.timestamp())
    urls: list[str] = []
    missing = CERT_URL.replace("abc", "f00")

    def fetch(url: str) -> bytes:
        urls.append(url)
        if url == missing:
            raise OSError("HTTP 404")
        return PEM

    hook = SesWebhook(SesConfig([TOPIC], fetch=fetch, now=clock.monotonic, cache_size=1))
    good = orjson.dumps(envelope(bounce()))
    forged = orjson.dumps(envelope(bounce(), SigningCertURL=missing))
    hook.handle(good, {})
    for _ in range(3):
        with pytest.raises(WebhookRefused) as info:
            hook.handle(forged, {})
        assert info.value.status == 503
    assert urls == [CERT_URL, missing]  # one fetch for the failing URL, not three
    hook.handle(good, {})  # still cached: the failures took no room
    assert urls == [CERT_URL, missing]
    clock.advance(FAILURE_TTL)
    with pytest.raises(WebhookRefused):
        hook.handle(forged, {})
    assert urls == [CERT_URL, missing, missing]  # asked again once the failure is old


def test_a_certificate_fetch_that_failed_is_tried_again_at_snss_next_retry() -> None:
    """A failed fetch of SNS's real certificate was remembered for 60 s, longer than SNS
    retries (3 times, 20 s apart, then the message is dropped): every retry got the same
    503 without a fetch, and the notification was lost."""
    clock = FakeClock(NOW.timestamp())
    answers: list[Exception | bytes] = [TimeoutError(), PEM]
    urls: list[str] = []

    def fetch(url: str) -> bytes:
        urls.append(url)
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    hook = SesWebhook(SesConfig([TOPIC], fetch=fetch, now=clock.monotonic))
    body = orjson.dumps(envelope(bounce()))
    with pytest.raises(WebhookRefused) as info:
        hook.handle(body, {})
    assert info.value.status == 503
    clock.advance(20.0)  # SNS's first retry
    assert hook.handle(body, {}).records
    assert urls == [CERT_URL, CERT_URL]


def test_a_subscription_is_confirmed_through_the_fetcher_only_when_asked() -> None:
    body = orjson.dumps(envelope("You have chosen to subscribe", kind="SubscriptionConfirmation"))
    fetch = Fetcher()
    assert webhook(fetch).handle(body, {}).records == ()
    assert fetch.urls == [CERT_URL]  # logged, not visited
    fetch = Fetcher()
    webhook(fetch, confirm=True).handle(body, {})
    assert fetch.urls[-1].startswith(
        "https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription"
    )
    seen: list[SnsMessage] = []
    webhook(on_subscription=seen.append).handle(body, {})
    assert [m.topic_arn for m in seen] == [TOPIC]


def test_a_failing_subscription_hook_is_a_503_naming_its_exception_type_only() -> None:
    body = orjson.dumps(envelope("x", kind="SubscriptionConfirmation"))

    def hook(message: SnsMessage) -> None:
        raise RuntimeError(f"could not store {message.subscribe_url}")

    with pytest.raises(WebhookRefused) as info:
        webhook(on_subscription=hook).handle(body, {}, "acme")
    assert (info.value.status, info.value.reason) == (
        503,
        "the on_subscription hook failed (RuntimeError)",
    )
    assert "Token" not in str(info.value)


def test_the_confirmation_log_line_has_no_token_and_an_escaped_tenant(
    caplog: pytest.LogCaptureFixture,
) -> None:
    subscribe = envelope("x", kind="SubscriptionConfirmation")
    unsubscribe = envelope("x", kind="UnsubscribeConfirmation")
    with caplog.at_level(logging.INFO, logger="selligent_segment.inputs.esp"):
        for env in (subscribe, unsubscribe):
            webhook().handle(orjson.dumps(env), {}, "acme\nFORGED line")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2
    assert all("'acme\\nFORGED line'" in line and "\n" not in line for line in lines)
    assert not any("Token=" in line or "Action=" in line for line in lines)  # no query
    assert "https://sns.eu-west-1.amazonaws.com/" in lines[0]


def test_a_signed_subscription_to_another_topic_is_never_confirmed() -> None:
    body = orjson.dumps(envelope("x", kind="SubscriptionConfirmation", TopicArn=TOPIC + "-x"))
    fetch = Fetcher()
    with pytest.raises(WebhookRefused, match="topic not allowed"):
        webhook(fetch, confirm=True).handle(body, {})
    assert fetch.urls == []


def test_a_confirmation_link_off_the_sns_hosts_is_not_visited() -> None:
    env = envelope(
        "x", kind="SubscriptionConfirmation", SubscribeURL="https://evil.example/confirm"
    )
    fetch = Fetcher()
    with pytest.raises(WebhookRefused, match="SubscribeURL"):
        webhook(fetch, confirm=True).handle(orjson.dumps(env), {})
    assert fetch.urls == [CERT_URL]


def test_the_topics_may_be_a_check_per_tenant() -> None:
    hook = SesWebhook(
        SesConfig(
            lambda tenant, arn: tenant == "acme" and arn == TOPIC,
            fetch=Fetcher(),
            now=lambda: NOW.timestamp(),
        )
    )
    body = orjson.dumps(envelope(bounce()))
    assert {r.tenant for r in hook.handle(body, {}, "acme").records} == {"acme"}
    with pytest.raises(WebhookRefused, match="topic not allowed"):
        hook.handle(body, {}, "globex")


def test_a_topic_check_that_raises_is_a_503_which_sns_retries() -> None:
    """The caller's check (a database lookup) failing for a moment was answered 400:
    SNS retries no 4xx, so the notification was lost."""

    def check(tenant: str | None, arn: str) -> bool:
        raise ConnectionError("the tenants database is away")

    hook = SesWebhook(SesConfig(check, fetch=Fetcher(), now=lambda: NOW.timestamp()))
    with pytest.raises(WebhookRefused) as caught:
        hook.handle(orjson.dumps(envelope(bounce())), {}, "acme")
    assert caught.value.status == 503
    assert caught.value.reason == "the topic check raised ConnectionError; retry"


def note(name: str, detail: dict[str, Any], **mail_extra: Any) -> dict[str, Any]:
    key = name[0].lower() + name[1:]
    return {
        "eventType": name,
        "mail": mail(**mail_extra),
        key: {"timestamp": "2026-11-20T09:12:00Z", **detail},
    }


@pytest.mark.parametrize(
    ("notification", "kind", "fields", "properties"),
    [
        (bounce("Permanent"), EventKind.BOUNCED, {"bounce_type": "hard"}, {}),
        (bounce("Transient"), EventKind.BOUNCED, {"bounce_type": "soft"}, {}),
        (bounce("Undetermined"), EventKind.BOUNCED, {"bounce_type": None}, {}),
        (
            note(
                "Complaint",
                {
                    "complainedRecipients": [{"emailAddress": "ada@example.com"}],
                    "complaintFeedbackType": "abuse",
                },
            ),
            EventKind.MARKED_AS_SPAM,
            {},
            {"esp_complaint_type": "abuse"},
        ),
        (
            note("Delivery", {"recipients": ["ada@example.com"], "smtpResponse": "250 ok"}),
            EventKind.DELIVERED,
            {},
            {},
        ),
        (
            note("Open", {"ipAddress": "17.58.1.2", "userAgent": "Mozilla/5.0"}),
            EventKind.OPENED,
            {"ip": "17.58.1.2"},
            {"machine_open": True, "machine_open_reason": "apple_proxy_ip"},
        ),
        (
            note(
                "Open",
                {
                    "ipAddress": "203.0.113.5",
                    "userAgent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0)",
                },
            ),
            EventKind.OPENED,
            {},
            {"machine_open": False},
        ),
        (
            note("Click", {"ipAddress": "203.0.113.5", "link": "https://example.com/a"}),
            EventKind.LINK_CLICKED,
            {"link_url": "https://example.com/a"},
            {},
        ),
        (
            {
                "notificationType": "Delivery",
                "mail": mail(),
                "delivery": {"recipients": ["ada@example.com"]},
            },
            EventKind.DELIVERED,
            {},
            {},
        ),
    ],
)
def test_each_notification_maps_to_its_kind(
    notification: dict[str, Any],
    kind: EventKind,
    fields: dict[str, Any],
    properties: dict[str, Any],
) -> None:
    parsed = PARSERS["ses"](orjson.dumps(envelope(notification)), "saved.json")
    assert parsed.problems == ()
    record = parsed.records[0]
    assert record.kind is kind
    assert record.email == "ada@example.com"
    for name, value in fields.items():
        assert getattr(record, name) == value
    for name, value in properties.items():
        assert record.properties[name] == value


@pytest.mark.parametrize(
    "name", ["Send", "Reject", "DeliveryDelay", "Rendering Failure", "Subscription"]
)
def test_the_other_event_types_are_skipped_and_reported(name: str) -> None:
    parsed = PARSERS["ses"](orjson.dumps(envelope(note(name, {}))), "f")
    assert parsed.records == ()
    (problem,) = parsed.problems
    assert problem.reason.startswith("skipped: ")


def _suppressed_bounce(subtype: str) -> dict[str, Any]:
    notification = bounce()
    notification["bounce"]["bounceSubType"] = subtype
    return notification


@pytest.mark.parametrize(
    ("notification", "field"),
    [
        (
            note(
                "Complaint",
                {
                    "complainedRecipients": [{"emailAddress": "ada@example.com"}],
                    "complaintSubType": "OnAccountSuppressionList",
                },
            ),
            "complaintSubType",
        ),
        (_suppressed_bounce("OnAccountSuppressionList"), "bounceSubType"),
        (_suppressed_bounce("Suppressed"), "bounceSubType"),
    ],
    ids=["complaint-account-list", "bounce-account-list", "bounce-global-list"],
)
def test_what_ses_did_not_send_because_the_address_is_suppressed_is_skipped(
    notification: dict[str, Any], field: str
) -> None:
    """SES reports a send to a suppressed address as a complaint (``complaintSubType:
    OnAccountSuppressionList``: "SES accepted the message, but didn't attempt to send
    it") or a bounce (``bounceSubType`` ``OnAccountSuppressionList`` / ``Suppressed``).
    Neither is a new complaint or bounce of the recipient: skipped and reported, as
    Mailgun's ``suppress-*`` bounces and SendGrid's ``dropped`` are."""
    parsed = PARSERS["ses"](orjson.dumps(envelope(notification)), "f")
    assert parsed.records == ()
    (problem,) = parsed.problems
    assert problem.field == field
    assert problem.reason.startswith("skipped: ")
    assert "SES did not send it" in problem.reason


def test_an_open_of_a_message_to_several_recipients_is_a_problem() -> None:
    two = note("Open", {"ipAddress": "203.0.113.5"}, destination=["a@example.com", "b@example.com"])
    parsed = PARSERS["ses"](orjson.dumps(envelope(two)), "f")
    assert parsed.records == ()
    assert parsed.problems[0].field == "mail.destination"


def test_a_bare_notification_takes_its_ids_from_ses() -> None:
    parsed = PARSERS["ses"](orjson.dumps(bounce()), "f")
    assert [r.event_id for r in parsed.records] == ["fb-1:0", "fb-1:1"]
    # a redelivery of the same SNS message gives the same ids (so the same messageIds)
    again = PARSERS["ses"](orjson.dumps(envelope(bounce())), "f")
    assert [r.event_id for r in again.records] == ["sns-1:0", "sns-1:1"]
    assert PARSERS["ses"](orjson.dumps(envelope(bounce())), "f") == again


def bare_ids(*notifications: dict[str, Any]) -> list[str | None]:
    """The event ids of the records of bare notifications (no SNS envelope)."""
    return [
        record.event_id
        for notification in notifications
        for record in PARSERS["ses"](orjson.dumps(notification), "f").records
    ]


def test_bare_opens_and_clicks_of_one_message_have_different_ids() -> None:
    opens = [note("Open", {"timestamp": t}) for t in ("2026-11-20T11:00Z", "2026-11-21T09:30Z")]
    clicks = [
        note("Click", {"timestamp": "2026-11-20T11:01Z", "link": "https://example.com/a"}),
        note("Click", {"timestamp": "2026-11-20T11:01Z", "link": "https://example.com/b"}),
        note("Click", {"timestamp": "2026-11-20T11:05Z", "link": "https://example.com/a"}),
    ]
    ids = bare_ids(*opens, *clicks)
    assert None not in ids
    assert len(set(ids)) == 5
    assert ids[0] == "ses-msg-1:Open:2026-11-20T11:00Z:0:ada@example.com"
    assert bare_ids(*opens, *clicks) == ids  # a redelivery keeps its id


def test_bare_deliveries_of_one_message_to_two_recipients_have_different_ids() -> None:
    at = {"timestamp": "2026-11-20T09:12:00.000Z"}
    ids = bare_ids(
        note("Delivery", {**at, "recipients": ["ada@example.com"]}),
        note("Delivery", {**at, "recipients": ["Bob@example.com"]}),
    )
    assert ids == [
        "ses-msg-1:Delivery:2026-11-20T09:12:00.000Z:0:ada@example.com",
        "ses-msg-1:Delivery:2026-11-20T09:12:00.000Z:0:bob@example.com",
    ]


def test_the_ids_of_an_sns_message_do_not_change() -> None:
    opens = [note("Open", {"timestamp": t}) for t in ("2026-11-20T11:00Z", "2026-11-21T09:30Z")]
    for notification in opens:
        (record,) = PARSERS["ses"](orjson.dumps(envelope(notification)), "f").records
        assert record.event_id == "sns-1:0"
    assert bare_ids(bounce()) == ["fb-1:0", "fb-1:1"]  # a feedbackId is kept as it was
