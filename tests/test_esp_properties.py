"""The webhook routes never answer a 5xx other than the documented 503s, whatever a caller
sends: random bytes, random headers, and the providers' shapes filled with random values,
some of them correctly signed (so the checks after the signature run too), over real
loopback HTTP into an Emitter."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import http.client
import urllib.parse
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from selligent_segment import BatchPolicy, Emitter
from selligent_segment.inputs.esp import (
    MailgunConfig,
    PostmarkConfig,
    SendGridConfig,
    SesConfig,
    SparkPostConfig,
    webhooks_app,
)
from selligent_segment.inputs.esp._sns import canonical_string
from selligent_segment.testing import LocalSegment
from selligent_segment.testing._asgi_server import serve_asgi

pytestmark = pytest.mark.slow

NOW = 1_795_000_000.0
TOPIC = "arn:aws:sns:eu-west-1:123456789012:ses-events"
CERT_URL = "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-0a1b.pem"
MAILGUN_KEY = "mailgun-signing-key"
EC_KEY = ec.generate_private_key(ec.SECP256R1())
EC_PUBLIC = base64.b64encode(
    EC_KEY.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
).decode()
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
BASIC = "Basic " + base64.b64encode(b"hook:pass").decode()


def _pem() -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    moment = dt.datetime.fromtimestamp(NOW, dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(RSA_KEY.public_key())
        .serial_number(1)
        .not_valid_before(moment - dt.timedelta(days=1))
        .not_valid_after(moment + dt.timedelta(days=1))
        .sign(RSA_KEY, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


PEM = _pem()


def fetch(url: str) -> bytes:
    """The injected network: our certificate at CERT_URL, nothing anywhere else."""
    if url == CERT_URL:
        return PEM
    raise OSError("no such URL here")


# -- strategies --------------------------------------------------------------------------------

#: Header text as an HTTP client may send it (latin-1, no line breaks).
header_text = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, blacklist_characters="\x7f"),
    max_size=80,
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),  # what orjson writes
    st.floats(allow_nan=False),
    st.text(max_size=30),
    st.sampled_from(["", "acme", "1794999000", "ada@example.com", "17.0.0.1", "Permanent"]),
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
FIELDS = [
    # SendGrid, Mailgun, SparkPost, Postmark, SES event fields
    "event", "email", "timestamp", "sg_event_id", "sg_message_id", "type", "reason", "status",
    "ip", "useragent", "url", "asm_group_id", "tenant", "recipient", "id", "severity",
    "delivery-status", "user-variables", "message", "client-info", "rcpt_to", "event_id",
    "bounce_class", "rcpt_meta", "campaign_id", "ip_address", "target_link_url", "RecordType",
    "MessageID", "Recipient", "Email", "Type", "Metadata", "Geo", "DeliveredAt", "BouncedAt",
    "SuppressSending", "SuppressionReason", "eventType", "notificationType", "mail", "bounce",
    "delivery", "complaint", "open", "click",
]  # fmt: skip
EVENT_NAMES = [
    "delivered", "open", "opened", "click", "clicked", "bounce", "failed", "spamreport",
    "complained", "unsubscribe", "unsubscribed", "group_unsubscribe", "processed", "delivery",
    "out_of_band", "spam_complaint", "initial_open", "list_unsubscribe", "Delivery", "Open",
    "Click", "Bounce", "SpamComplaint", "SubscriptionChange", "Complaint", "Send",
]  # fmt: skip
events = st.dictionaries(
    st.sampled_from(FIELDS),
    st.one_of(json_values, st.sampled_from(EVENT_NAMES)),
    max_size=8,
)


def _random_body(draw: st.DrawFn, shaped: Any) -> bytes:
    if draw(st.booleans()):
        return draw(st.binary(max_size=300))
    return orjson.dumps(draw(shaped))


@st.composite
def sendgrid_requests(draw: st.DrawFn) -> tuple[bytes, dict[str, str]]:
    body = _random_body(draw, st.lists(events, max_size=4) | events)
    stamp = draw(st.sampled_from([str(int(NOW)), "nan", "1e400", "-0"]) | header_text)
    signature = draw(header_text)
    if draw(st.booleans()) and stamp.isascii():
        raw = EC_KEY.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        signature = base64.b64encode(raw).decode()
    headers = {
        "X-Twilio-Email-Event-Webhook-Signature": signature,
        "X-Twilio-Email-Event-Webhook-Timestamp": stamp,
    }
    return body, draw(
        st.sampled_from([headers, {}, {"X-Twilio-Email-Event-Webhook-Signature": signature}])
    )


@st.composite
def mailgun_requests(draw: st.DrawFn) -> tuple[bytes, dict[str, str]]:
    stamp = draw(st.sampled_from([str(int(NOW)), "nan", "1e400"]) | st.text(max_size=12))
    token = draw(st.text(max_size=12))
    signature: object = draw(st.text(max_size=70) | st.just("\u00e9" * 64) | json_values)
    if draw(st.booleans()):
        mac = hmac.new(MAILGUN_KEY.encode(), (stamp + token).encode(), hashlib.sha256)
        signature = mac.hexdigest()
    signed = draw(
        st.sampled_from(
            [{"timestamp": stamp, "token": token, "signature": signature}, {"token": token}, None]
        )
    )
    shaped = st.fixed_dictionaries(
        {"signature": st.just(signed), "event-data": events | json_values}
    )
    return _random_body(draw, shaped), {}


@st.composite
def ses_requests(draw: st.DrawFn) -> tuple[bytes, dict[str, str]]:
    notification = st.fixed_dictionaries(
        {"eventType": st.sampled_from(EVENT_NAMES) | st.text(max_size=8)}, optional={}
    ).flatmap(lambda head: events.map(lambda rest: {**rest, **head}))
    envelope: dict[str, Any] = {
        "Type": draw(
            st.sampled_from(["Notification", "SubscriptionConfirmation", "UnsubscribeConfirmation"])
            | st.text(max_size=8)
        ),
        "MessageId": draw(st.text(max_size=10)),
        "TopicArn": TOPIC,
        "Message": draw(
            notification.map(lambda n: orjson.dumps(n).decode()) | st.text(max_size=30)
        ),
        "Timestamp": draw(
            st.sampled_from(["2026-11-18T08:13:00Z", "2026-11-18T08:13:00", "9999-12-31T23:59:59Z"])
            | st.text(max_size=20)
        ),
        "SignatureVersion": draw(st.sampled_from(["1", "2", "3"])),
        "SigningCertURL": draw(st.sampled_from([CERT_URL, CERT_URL + "x"]) | st.text(max_size=40)),
        "Token": draw(st.text(max_size=5)),
        "SubscribeURL": draw(
            st.sampled_from(["https://sns.eu-west-1.amazonaws.com/?Action=x"])
            | st.text(max_size=20)
        ),
    }
    envelope.update(draw(st.dictionaries(st.sampled_from(list(envelope)), json_values, max_size=2)))
    if draw(st.booleans()):
        digest = hashes.SHA1() if envelope["SignatureVersion"] == "1" else hashes.SHA256()
        try:
            raw = RSA_KEY.sign(canonical_string(envelope), padding.PKCS1v15(), digest)
        except (TypeError, ValueError, UnicodeError):
            raw = b""
        envelope["Signature"] = base64.b64encode(raw).decode()
    else:
        envelope["Signature"] = draw(
            st.text(max_size=40) | st.just("\u00e9t\u00e9==") | json_values
        )
    return _random_body(draw, st.just(envelope)), {}


@st.composite
def basic_auth_requests(draw: st.DrawFn) -> tuple[bytes, dict[str, str]]:
    body = _random_body(draw, st.lists(events | json_values, max_size=3) | events)
    authorization = draw(st.just(BASIC) | header_text.map(lambda t: "Basic " + t) | header_text)
    return body, {"Authorization": authorization}


@st.composite
def sparkpost_requests(draw: st.DrawFn) -> tuple[bytes, dict[str, str]]:
    wrapped = st.lists(
        st.fixed_dictionaries({"msys": st.dictionaries(st.text(max_size=8), events, max_size=2)}),
        max_size=3,
    )
    body = _random_body(draw, wrapped | json_values)
    return body, {"Authorization": draw(st.just(BASIC) | header_text)}


REQUESTS = {
    "sendgrid": sendgrid_requests(),
    "mailgun": mailgun_requests(),
    "ses": ses_requests(),
    "postmark": basic_auth_requests(),
    "sparkpost": sparkpost_requests(),
}


# -- the test ----------------------------------------------------------------------------------


@pytest.fixture
def url(server: LocalSegment) -> Iterator[str]:
    emitter = Emitter(
        endpoint=server.url, write_keys={"acme": "key-acme"}, batch=BatchPolicy(linger=0.0)
    )
    providers = {
        "sendgrid": SendGridConfig(EC_PUBLIC, now=lambda: NOW),
        "mailgun": MailgunConfig(MAILGUN_KEY, now=lambda: NOW),
        "ses": SesConfig([TOPIC], fetch=fetch, now=lambda: NOW, confirm=True),
        "postmark": PostmarkConfig("hook", "pass"),
        "sparkpost": SparkPostConfig("hook", "pass"),
    }
    try:
        with serve_asgi(webhooks_app(emitter, providers)) as base:
            yield base
    finally:
        emitter.close(10)


def _post(base: str, path: str, body: bytes, headers: dict[str, str]) -> int:
    parts = urllib.parse.urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.request("POST", path, body=body, headers=headers)
        answer = conn.getresponse()
        answer.read()
        return answer.status
    finally:
        conn.close()


@pytest.mark.parametrize("provider", sorted(REQUESTS))
def test_no_request_gets_a_5xx_but_the_documented_503(provider: str, url: str) -> None:
    @settings(
        max_examples=60,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(request=REQUESTS[provider], tenant=st.sampled_from(["", "/acme", "/initech"]))
    def check(request: tuple[bytes, dict[str, str]], tenant: str) -> None:
        body, headers = request
        status = _post(url, f"/{provider}{tenant}", body, headers)
        assert status < 500 or status == 503, (status, body, headers)

    check()
