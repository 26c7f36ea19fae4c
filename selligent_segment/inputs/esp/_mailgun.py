"""Mailgun's webhooks: one JSON object per request, ``{"signature": {"timestamp",
"token", "signature"}, "event-data": {...}}``, signed with HMAC-SHA256 over timestamp +
token (the body is not signed: stale timestamps and reused tokens are refused; a token is
remembered by this process only, see docs/inputs.md for several workers).

Mapping (``event-data.event`` -> kind): delivered -> delivered; opened -> opened; clicked
-> link_clicked; unsubscribed -> unsubscribed; complained -> marked_as_spam; failed ->
bounced (``severity`` permanent -> hard, temporary -> soft), except a failure whose
``reason`` is ``suppress-*`` (Mailgun did not send it), skipped; accepted, rejected,
stored and the rest -> skipped. The event id is ``event-data.id``; the platform's ids come
from ``user-variables`` under :data:`ID_KEYS`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from selligent_segment._record import EventKind
from selligent_segment.inputs._result import InputError, Parsed
from selligent_segment.inputs.esp._common import (
    Collector,
    IdResolver,
    Secret,
    WebhookRefused,
    ids_from,
    load_json_object,
    secret_for,
    text,
)
from selligent_segment.inputs.esp._hmac import RetryAllowance, SeenTokens, hmac_ok
from selligent_segment.inputs.esp._machine_open import machine_open

__all__ = ["RETRY_WINDOW", "MailgunConfig", "MailgunWebhook", "parse"]

PROVIDER = "mailgun"
#: Seconds a signed timestamp stays acceptable (and a token is remembered for).
DEFAULT_MAX_AGE = 300.0
#: Tokens remembered; make it larger than the requests of ``max_age`` seconds.
DEFAULT_TOKEN_CACHE = 65_536
#: Seconds a request answered 503 may come again with its first signature, however old:
#: Mailgun retries for 8 hours (after 5, 10 and 15 minutes, then 1, 2 and 4 hours; a
#: delivery notification is never retried).
RETRY_WINDOW = 9 * 3600.0
#: The largest body read: Mailgun posts one event a request (a few KB).
MAX_BODY = 1024 * 1024
_TIMESTAMP = re.compile(r"[0-9]{1,12}")

_KINDS = {
    "delivered": EventKind.DELIVERED,
    "opened": EventKind.OPENED,
    "clicked": EventKind.LINK_CLICKED,
    "unsubscribed": EventKind.UNSUBSCRIBED,
    "complained": EventKind.MARKED_AS_SPAM,
    "failed": EventKind.BOUNCED,
}
_SKIPPED = {
    "accepted": "accepted by Mailgun, not yet delivered",
    "rejected": "Mailgun refused to send it",
    "stored": "an inbound message stored",
}
_SEVERITIES = {"permanent": "hard", "temporary": "soft"}


@attrs.frozen
class MailgunConfig:
    """Mailgun's settings: the ``signing_key`` (Sending > Webhooks > HTTP webhook signing
    key; or a lookup by tenant), ``max_age`` seconds a signed timestamp stays good
    (default 300), ``token_cache`` tokens remembered against replays (default 65,536) and
    ``now``, the wall clock (a seam for tests)."""

    signing_key: Secret = attrs.field(repr=False)
    max_age: float = DEFAULT_MAX_AGE
    token_cache: int = DEFAULT_TOKEN_CACHE
    now: Callable[[], float] = attrs.field(default=time.time, repr=False)


def _envelope(body: bytes, where: str) -> dict[str, Any]:
    return load_json_object(body, where, "Mailgun's webhook body")


def parse(
    body: bytes,
    where: str = "request",
    *,
    tenant: str | None = None,
    resolver: IdResolver | None = None,
) -> Parsed:
    """The record of a Mailgun webhook body, without any signature check. Raises
    :class:`InputError` only when the body is not a JSON object with ``event-data``."""
    payload = _envelope(body, where)
    event = payload.get("event-data")
    if not isinstance(event, dict):
        raise InputError(where, "event-data", "missing or not an object")
    out = Collector(PROVIDER, where, tenant, resolver)
    out.read(0, _one, event)
    return out.parsed()


def _one(out: Collector, index: int, event: dict[str, Any]) -> None:
    name = event.get("event")
    kind = out.kind_of(index, "event", name, _KINDS, _SKIPPED)
    if kind is None:
        return
    reason = text(event.get("reason"))
    if kind is EventKind.BOUNCED and reason and reason.startswith("suppress-"):
        out.skip(index, "reason", reason, "Mailgun did not send it: the address is suppressed")
        return
    message = event.get("message")
    headers = message.get("headers") if isinstance(message, dict) else None
    headers = headers if isinstance(headers, dict) else {}
    properties: dict[str, Any] = {
        "esp_event": name,
        "esp_message_id": text(headers.get("message-id")),
    }
    fields: dict[str, Any] = {
        "email": event.get("recipient"),
        "event_id": text(event.get("id")),
        "email_subject": text(headers.get("subject")),
    }
    if not out.timestamp(index, fields, event.get("timestamp")):
        return
    client = event.get("client-info")
    agent = client.get("user-agent") if isinstance(client, dict) else None
    if kind in (EventKind.OPENED, EventKind.LINK_CLICKED, EventKind.UNSUBSCRIBED):
        fields["ip"] = text(event.get("ip"))
        fields["user_agent"] = text(agent)
    if kind is EventKind.OPENED:
        properties.update(machine_open(event.get("ip"), agent))
    elif kind is EventKind.LINK_CLICKED:
        fields["link_url"] = text(event.get("url"))
    elif kind is EventKind.BOUNCED:
        severity = event.get("severity")
        fields["bounce_type"] = _SEVERITIES.get(severity) if isinstance(severity, str) else None
        status = event.get("delivery-status")
        status = status if isinstance(status, dict) else {}
        fields["smtp_status"] = text(status.get("code"))
        fields["bounce_reason"] = text(status.get("message")) or text(status.get("description"))
        properties["esp_bounce_classification"] = "/".join(
            part for part in (text(severity), reason) if part
        )
    ids = ids_from(event.get("user-variables"))
    out.add(index, kind, event, ids, properties, **fields)


class MailgunWebhook:
    """Mailgun's webhooks: :meth:`handle` checks the HMAC, the timestamp's age and that
    the token is new, then parses. A request answered 503 (:meth:`release`) may come again
    with its first signature for :data:`RETRY_WINDOW` seconds. Thread-safe."""

    provider = PROVIDER
    max_body = MAX_BODY

    def __init__(self, config: MailgunConfig, resolver: IdResolver | None = None) -> None:
        self.config = config
        self.resolver = resolver
        self.tokens = SeenTokens(config.token_cache)
        self.retries = RetryAllowance(config.token_cache)

    def verify(self, body: bytes, headers: Mapping[str, str], tenant: str | None = None) -> str:
        """The request's replay key when its signature is good, fresh (or a retry of a
        request answered 503) and new; raise :class:`WebhookRefused` otherwise (a good
        request's key is then remembered). The key is the signed text, timestamp and
        token: however the two are split, one signature is accepted once."""
        try:
            payload = _envelope(body, PROVIDER)
        except InputError as exc:
            raise WebhookRefused(PROVIDER, exc.reason, status=400) from None
        signed = payload.get("signature")
        parts = (
            [signed.get(k) for k in ("timestamp", "token", "signature")]
            if isinstance(signed, dict)
            else []
        )
        if len(parts) != 3 or not all(isinstance(p, str) and p for p in parts):
            raise WebhookRefused(PROVIDER, "no signature (timestamp, token, signature)", status=401)
        stamp, token, signature = (str(p) for p in parts)
        key = secret_for(self.config.signing_key, tenant, PROVIDER)
        if key is None:
            raise WebhookRefused(PROVIDER, "no signing key for this tenant")
        if not hmac_ok(key, stamp, token, signature):
            raise WebhookRefused(PROVIDER, "bad signature")
        if not _TIMESTAMP.fullmatch(stamp):  # "1795000000e0" signs like 1795000000 + "e0..."
            raise WebhookRefused(PROVIDER, "the timestamp is not whole seconds", status=400)
        replay_key = stamp + token
        now = self.config.now()
        age = now - int(stamp)
        if abs(age) > self.config.max_age and not self.retries.allowed(replay_key, now):
            raise WebhookRefused(
                PROVIDER, f"stale timestamp ({age:+.0f} s old, over {self.config.max_age:g} s)"
            )
        if not self.tokens.first_time(replay_key):
            raise WebhookRefused(PROVIDER, "replayed: this token was already used")
        self.retries.done(replay_key)
        return replay_key

    def handle(self, body: bytes, headers: Mapping[str, str], tenant: str | None = None) -> Parsed:
        """:meth:`verify`, then :func:`parse` (a body it cannot read has its token
        forgotten again)."""
        replay_key = self.verify(body, headers, tenant)
        try:
            return parse(body, PROVIDER, tenant=tenant, resolver=self.resolver)
        except BaseException:
            self.tokens.forget(replay_key)
            raise

    def release(self, body: bytes, headers: Mapping[str, str]) -> None:
        """Forget the request's token: its records were not accepted (503), Mailgun will
        retry, with this signature, for up to :data:`RETRY_WINDOW` seconds."""
        try:
            signed = _envelope(body, PROVIDER).get("signature")
        except InputError:
            return
        if not isinstance(signed, dict):
            return
        stamp, token = signed.get("timestamp"), signed.get("token")
        if isinstance(stamp, str) and isinstance(token, str):
            self.tokens.forget(stamp + token)
            self.retries.allow(stamp + token, self.config.now() + RETRY_WINDOW)
