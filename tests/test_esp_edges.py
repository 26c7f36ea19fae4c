"""Malformed input to the ESP adapters: each body that is not the provider's shape is an
InputError or a 400, each malformed signature a refusal, each bad event one problem."""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import hashlib
import hmac
from typing import Any

import orjson
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from selligent_segment import ConfigurationError, Emitter, EventKind, SelligentSegmentError
from selligent_segment.cli._ingest import INGEST, REPORT_KINDS
from selligent_segment.inputs import InputError
from selligent_segment.inputs.esp import (
    PARSERS,
    MailgunConfig,
    MailgunWebhook,
    PlatformIds,
    SendGridConfig,
    SendGridWebhook,
    SesConfig,
    SesWebhook,
    WebhookRefused,
    _common,
    _mailgun,
    _postmark,
    _sendgrid,
    _sparkpost,
    ids_from,
    webhook_for,
    webhooks_app,
)
from selligent_segment.inputs.esp import _ses as ses_module
from selligent_segment.inputs.esp._common import Collector, load_json_events, load_json_object
from selligent_segment.inputs.esp._crypto import crypto
from selligent_segment.inputs.esp._ecdsa import EcdsaKeys
from selligent_segment.inputs.esp._hmac import hmac_ok
from selligent_segment.inputs.esp._sendgrid import parse as parse_sendgrid
from selligent_segment.inputs.esp._sns import canonical_string

NOW = dt.datetime(2026, 11, 20, 9, 15, tzinfo=dt.timezone.utc)
TOPIC = "arn:aws:sns:eu-west-1:123456789012:ses-events"
CERT_URL = "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-ce47.pem"


@pytest.mark.parametrize("provider", ["ses", "sendgrid", "mailgun", "postmark", "sparkpost"])
@pytest.mark.parametrize("body", [b"{nope", b"42", b'"text"'])
def test_a_body_that_is_not_the_providers_shape_is_an_input_error(
    provider: str, body: bytes
) -> None:
    with pytest.raises(InputError) as info:
        PARSERS[provider](body, "saved.json")
    assert info.value.where == "saved.json"


def test_mailgun_needs_event_data() -> None:
    with pytest.raises(InputError, match="event-data"):
        PARSERS["mailgun"](b'{"signature": {}}', "f")


@pytest.mark.parametrize(
    ("provider", "body", "field"),
    [
        ("sendgrid", [{"email": "a@example.com"}], "event"),
        (
            "sendgrid",
            [{"event": "delivered", "email": "a@example.com", "timestamp": "soon"}],
            "timestamp",
        ),
        (
            "sendgrid",
            [{"event": "delivered", "email": "a@example.com", "timestamp": True}],
            "timestamp",
        ),
        ("sparkpost", [{"msys": {"message_event": {"rcpt_to": "a@example.com"}}}], "type"),
        ("sparkpost", [{"nothing": 1}], "msys"),
        ("sparkpost", [{"msys": {"message_event": 3}}], "msys"),
        (
            "sparkpost",
            [
                {
                    "msys": {
                        "message_event": {
                            "type": "delivery",
                            "rcpt_to": "a@example.com",
                            "timestamp": "x",
                        }
                    }
                }
            ],
            "timestamp",
        ),
        ("mailgun", {"event-data": {"recipient": "a@example.com"}}, "event"),
        (
            "mailgun",
            {"event-data": {"event": "delivered", "recipient": "a@example.com", "timestamp": "x"}},
            "timestamp",
        ),
        ("postmark", [{"Recipient": "a@example.com"}, 5], "RecordType"),
        ("ses", {"mail": {}}, "eventType"),
        (
            "ses",
            {"eventType": "Bounce", "mail": {}, "bounce": {"bounceType": "Permanent"}},
            "bounce.bouncedRecipients",
        ),
    ],
)
def test_a_malformed_event_is_one_problem(provider: str, body: Any, field: str) -> None:
    parsed = PARSERS[provider](orjson.dumps(body), "f")
    assert parsed.records == ()
    assert parsed.problems[0].field == field
    assert parsed.problems[0].where == "f:event-1"


def test_single_objects_are_read_where_arrays_are_expected() -> None:
    event = {"event": "delivered", "email": "a@example.com", "sg_event_id": "x"}
    assert len(PARSERS["sendgrid"](orjson.dumps(event), "f").records) == 1
    wrapper = {"msys": {"message_event": {"type": "delivery", "rcpt_to": "a@example.com"}}}
    assert len(PARSERS["sparkpost"](orjson.dumps(wrapper), "f").records) == 1


def test_ids_convention_and_the_resolver_hook() -> None:
    assert ids_from(
        None, {"tenant": ["acme"], "user_id": 7, "email_id": True, "campaign_id": " "}
    ) == PlatformIds(tenant="acme", user_id="7")
    assert ids_from({"tenant": "a"}, {"tenant": "b", "campaign_name": "Spring"}) == PlatformIds(
        tenant="a", campaign_name="Spring"
    )
    calls: list[str] = []

    def resolver(provider: str, raw: Any, found: PlatformIds) -> PlatformIds:
        calls.append(provider)
        if raw.get("sg_event_id") == "boom":
            raise RuntimeError("lookup failed")
        return PlatformIds(tenant="acme", user_id=f"u-{raw['sg_event_id']}")

    events = [
        {"event": "delivered", "email": "a@example.com", "sg_event_id": "1"},
        {"event": "delivered", "email": "a@example.com", "sg_event_id": "boom"},
    ]
    parsed = parse_sendgrid(orjson.dumps(events), "f", resolver=resolver)
    assert [(r.tenant, r.user_id) for r in parsed.records] == [("acme", "u-1")]
    assert [(p.field, p.reason) for p in parsed.problems] == [
        ("resolver", "the id resolver failed: RuntimeError")
    ]
    assert calls == ["sendgrid", "sendgrid"]


def test_ecdsa_keys_pem_bad_keys_and_the_bounded_cache() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    signature = base64.b64encode(key.sign(b"payload", ec.ECDSA(hashes.SHA256()))).decode()
    keys = EcdsaKeys(size=1)
    assert keys.verify(pem, signature, b"payload")
    assert not keys.verify(pem, "%%%", b"payload")
    with pytest.raises(ValueError, match="not base64"):
        keys.verify("%%%", signature, b"payload")
    rsa_der = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(ValueError, match="not an elliptic-curve"):
        keys.verify(base64.b64encode(rsa_der).decode(), signature, b"payload")
    hook = SendGridWebhook(SendGridConfig("%%%", now=lambda: 100.0))
    with pytest.raises(WebhookRefused, match="unusable"):
        hook.handle(
            b"[]",
            {
                "x-twilio-email-event-webhook-signature": signature,
                "x-twilio-email-event-webhook-timestamp": "100",
            },
        )
    with pytest.raises(WebhookRefused) as info:
        hook.handle(
            b"[]",
            {
                "x-twilio-email-event-webhook-signature": signature,
                "x-twilio-email-event-webhook-timestamp": "x",
            },
        )
    assert info.value.status == 400


def test_mailgun_refusals() -> None:
    hook = MailgunWebhook(MailgunConfig({"acme": "k"}.get, now=lambda: 100.0))
    with pytest.raises(WebhookRefused) as info:
        hook.handle(b"[", {})
    assert info.value.status == 400
    signed = {
        "timestamp": "x",
        "token": "t",
        "signature": hmac.new(b"k", b"xt", hashlib.sha256).hexdigest(),
    }
    body = orjson.dumps({"signature": signed, "event-data": {}})
    with pytest.raises(WebhookRefused, match="no signing key"):
        hook.handle(body, {}, "globex")
    with pytest.raises(WebhookRefused, match="not whole seconds"):
        hook.handle(body, {}, "acme")
    hook.release(b"[", {})  # nothing to forget, no error


def test_a_non_ascii_signature_is_a_bad_signature_not_a_crash() -> None:
    assert not hmac_ok("k", "100", "t", "\u00e9" * 64)
    hook = MailgunWebhook(MailgunConfig("k", now=lambda: 100.0))
    signed = {"timestamp": "100", "token": "t", "signature": "\u00e9" * 64}
    with pytest.raises(WebhookRefused) as info:
        hook.handle(orjson.dumps({"signature": signed, "event-data": {}}), {})
    assert (info.value.status, info.value.reason) == (403, "bad signature")
    key = ec.generate_private_key(ec.SECP256R1())
    public = base64.b64encode(
        key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    ).decode()
    assert not EcdsaKeys().verify(public, "\u00e9t\u00e9==", b"payload")
    sendgrid = SendGridWebhook(SendGridConfig(public, now=lambda: 100.0))
    headers = {
        "x-twilio-email-event-webhook-signature": "\u00e9t\u00e9==",  # as latin-1 decoded
        "x-twilio-email-event-webhook-timestamp": "100",
    }
    with pytest.raises(WebhookRefused) as info:
        sendgrid.handle(b"[]", headers)
    assert (info.value.status, info.value.reason) == (403, "bad signature")
    headers["x-twilio-email-event-webhook-timestamp"] = "\u0661\u0660\u0660"  # float() takes it
    with pytest.raises(WebhookRefused) as info:
        sendgrid.handle(b"[]", headers)
    assert (info.value.status, info.value.reason) == (400, "the timestamp is not a number")


# -- SNS envelopes ---------------------------------------------------------------------------


def _cert(key: Any) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns")])
    signer = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=1))
    )
    return builder.sign(signer, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _ses(pem: bytes = b"", **options: Any) -> SesWebhook:
    return SesWebhook(
        SesConfig(
            [TOPIC], fetch=lambda url: pem or _cert(RSA_KEY), now=lambda: NOW.timestamp(), **options
        )
    )


def _envelope(**changes: Any) -> dict[str, Any]:
    env: dict[str, Any] = {
        "Type": "Notification",
        "MessageId": "m",
        "TopicArn": TOPIC,
        "Message": orjson.dumps(
            {
                "notificationType": "Delivery",
                "mail": {},
                "delivery": {"recipients": ["a@example.com"]},
            }
        ).decode(),
        "Timestamp": "2026-11-20T09:14:00Z",
        "SignatureVersion": "2",
        "SigningCertURL": CERT_URL,
    }
    env.update(changes)
    env.setdefault(
        "Signature",
        base64.b64encode(
            RSA_KEY.sign(canonical_string(env), padding.PKCS1v15(), hashes.SHA256())
        ).decode(),
    )
    return {k: v for k, v in env.items() if v is not None}


@pytest.mark.parametrize(
    ("changes", "status", "reason"),
    [
        ({"Type": "Other"}, 400, "not an SNS message"),
        ({"MessageId": None}, 400, "MessageId is missing"),
        ({"SignatureVersion": "3"}, 403, "SignatureVersion"),
        ({"Signature": None}, 401, "no Signature"),
        ({"Signature": "%%%"}, 403, "bad signature"),
        ({"Signature": "\u00e9t\u00e9=="}, 403, "bad signature"),
        ({"Timestamp": "yesterday"}, 400, "not a date"),
    ],
)
def test_malformed_sns_envelopes_are_refused(
    changes: dict[str, Any], status: int, reason: str
) -> None:
    with pytest.raises(WebhookRefused, match=reason) as info:
        _ses().handle(orjson.dumps(_envelope(**changes)), {})
    assert info.value.status == status


def test_sns_bodies_that_are_not_envelopes_are_400() -> None:
    for body in (b"[", b"[1]"):
        with pytest.raises(WebhookRefused) as info:
            _ses().handle(body, {})
        assert info.value.status == 400


def test_a_certificate_that_is_not_pem_or_not_rsa_is_refused() -> None:
    with pytest.raises(WebhookRefused, match="not a PEM certificate"):
        _ses(b"garbage").handle(orjson.dumps(_envelope()), {})
    with pytest.raises(WebhookRefused, match="not RSA"):
        _ses(_cert(ec.generate_private_key(ec.SECP256R1()))).handle(orjson.dumps(_envelope()), {})


def test_an_unsubscribe_confirmation_and_an_unreadable_message() -> None:
    env = _envelope(
        Type="UnsubscribeConfirmation",
        Token="t",
        SubscribeURL="https://sns.eu-west-1.amazonaws.com/?x",
    )
    assert _ses().handle(orjson.dumps(env), {}).records == ()
    parsed = _ses().handle(orjson.dumps(_envelope(Message="{not json")), {})
    assert parsed.records == ()
    assert parsed.problems[0].field == "body"
    assert PARSERS["ses"](orjson.dumps(env), "f").records == ()
    with pytest.raises(InputError, match="Message"):
        PARSERS["ses"](orjson.dumps({"Type": "Notification"}), "f")
    with pytest.raises(InputError, match="SES notification"):
        PARSERS["ses"](orjson.dumps({"Type": "Notification", "Message": "[1]"}), "f")


def test_a_subscription_confirmation_that_cannot_be_fetched_is_a_503() -> None:
    env = _envelope(
        Type="SubscriptionConfirmation",
        Token="t",
        SubscribeURL="https://sns.eu-west-1.amazonaws.com/?x",
    )
    pem = _cert(RSA_KEY)

    def fetch(url: str) -> bytes:
        if url.endswith(".pem"):
            return pem
        raise OSError("down")

    hook = SesWebhook(SesConfig([TOPIC], fetch=fetch, confirm=True, now=lambda: NOW.timestamp()))
    with pytest.raises(WebhookRefused) as info:
        hook.handle(orjson.dumps(env), {})
    assert info.value.status == 503


def test_a_bare_notification_without_ids_has_no_event_id() -> None:
    parsed = PARSERS["ses"](
        orjson.dumps(
            {
                "notificationType": "Delivery",
                "mail": {},
                "delivery": {"recipients": ["a@example.com"]},
            }
        ),
        "f",
    )
    (record,) = parsed.records
    assert record.kind is EventKind.DELIVERED
    assert record.event_id is None


def test_webhook_for_takes_configs_and_webhooks_only() -> None:
    hook = MailgunWebhook(MailgunConfig("k"))
    assert webhook_for(hook) is hook
    with pytest.raises(ConfigurationError, match="not an ESP webhook config: str") as info:
        webhook_for("sendgrid")  # type: ignore[arg-type]
    assert isinstance(info.value, SelligentSegmentError)
    with (
        Emitter(write_key="k", endpoint="http://127.0.0.1:9") as emitter,
        pytest.raises(ConfigurationError, match="not an ESP webhook config: int"),
    ):
        webhooks_app(emitter, {"x": 1})  # type: ignore[dict-item]


def test_the_parsers_are_the_providers_parse_functions() -> None:
    for name, module in [
        ("ses", ses_module),
        ("sendgrid", _sendgrid),
        ("mailgun", _mailgun),
        ("postmark", _postmark),
        ("sparkpost", _sparkpost),
    ]:
        assert PARSERS[name] is module.parse
    assert list(PARSERS) == ["ses", "sendgrid", "mailgun", "postmark", "sparkpost"]


def test_the_ingest_commands_kinds_are_the_reports_and_the_parsers_keys() -> None:
    parser = argparse.ArgumentParser()
    INGEST.configure(parser)
    (kind,) = [a for a in parser._actions if a.dest == "kind"]
    assert list(kind.choices or ()) == [*REPORT_KINDS, *PARSERS]


def test_the_collector_reads_kinds_and_timestamps_and_notes_the_rest() -> None:
    out = Collector("p", "w")
    kinds = {"delivered": EventKind.DELIVERED}
    assert out.kind_of(0, "event", "delivered", kinds) is EventKind.DELIVERED
    assert out.kind_of(1, "event", "processed", kinds, {"processed": "not yet"}) is None
    assert out.kind_of(2, "event", "x", kinds) is None
    assert out.kind_of(3, "event", 5, kinds) is None
    assert out.kind_of(4, "type", "x", kinds, unknown="") is None
    fields: dict[str, Any] = {}
    assert out.timestamp(5, fields, 1_794_999_000)
    assert fields == {"timestamp": dt.datetime(2026, 11, 18, 10, 50, tzinfo=dt.timezone.utc)}
    assert out.timestamp(6, fields, None)
    assert fields == {"timestamp": None}
    assert not out.timestamp(7, fields, "soon")
    assert [str(p) for p in out.problems] == [
        "w:event-2: event: skipped: 'processed' is not one of the six email events (not yet)",
        "w:event-3: event: skipped: 'x' is not one of the six email events "
        "(unknown to this adapter)",
        "w:event-4: event: missing or not text: 5",
        "w:event-5: type: skipped: 'x' is not one of the six email events",
        "w:event-8: timestamp: not a UNIX time: 'soon'",
    ]


def test_load_json_object_and_events_check_the_shape() -> None:
    assert load_json_object(b'{"a": 1}', "f", "X") == {"a": 1}
    assert load_json_events(b'{"a": 1}', "f", "X") == [{"a": 1}]
    assert load_json_events(b"[1, {}]", "f", "X") == [1, {}]
    for load, body, reason in [
        (load_json_object, b"[]", "expected a JSON object (X)"),
        (load_json_events, b"42", "expected a JSON array of X"),
    ]:
        with pytest.raises(InputError) as info:
            load(body, "f", "X")
        assert (info.value.where, info.value.field, info.value.reason) == ("f", "body", reason)
    with pytest.raises(InputError, match="not JSON"):
        load_json_object(b"{", "f", "X")


def test_the_shared_helpers_are_exported() -> None:
    assert {"Collector", "epoch", "text", "load_json"} <= set(_common.__all__)


def test_crypto_is_built_once() -> None:
    assert crypto() is crypto()  # one namespace, not one per signature check


def test_an_event_an_adapter_cannot_read_is_its_problem_and_costs_no_other() -> None:
    # Whatever an adapter's reading of one event raises besides its own problems (a shape
    # no rule foresaw): that event's problem, its half-made records taken back; the
    # events around it are read as usual.
    out = Collector("sendgrid", "request")

    def one(collector: Collector, index: int, event: dict[str, Any]) -> None:
        collector.add(index, EventKind.DELIVERED, event, PlatformIds(), {}, email=event["to"])
        if event.get("then") == "raise":
            raise RecursionError("maximum recursion depth exceeded")

    events = [{"to": "a@example.com"}, {"to": "b@example.com", "then": "raise"}]
    events.append({"to": "c@example.com"})
    for index, event in enumerate(events):
        out.read(index, one, event)
    parsed = out.parsed()
    assert [r.email for r in parsed.records] == ["a@example.com", "c@example.com"]
    assert parsed.places == ("request:event-1", "request:event-3")
    assert [(p.where, p.field, p.reason) for p in parsed.problems] == [
        ("request:event-2", "event", "cannot be read (RecursionError)")
    ]
