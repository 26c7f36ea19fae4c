"""SendGrid's signed event webhook: a JSON array of events, signed with ECDSA over the
``X-Twilio-Email-Event-Webhook-Timestamp`` header followed by the raw body.

Mapping (``event`` -> kind): delivered -> delivered; open -> opened (``sg_machine_open``
-> ``machine_open``); click -> link_clicked; bounce -> bounced (``type`` bounce -> hard,
blocked -> soft); spamreport -> marked_as_spam; unsubscribe, group_unsubscribe ->
unsubscribed (``asm_group_id`` -> ``list_id``); processed, dropped, deferred,
group_resubscribe -> skipped. The event id is ``sg_event_id``; the platform's ids come from
the custom args (which SendGrid copies into each event) under :data:`ID_KEYS`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from selligent_segment._record import EventKind
from selligent_segment.inputs._result import Parsed
from selligent_segment.inputs.esp._common import (
    Collector,
    IdResolver,
    Secret,
    WebhookRefused,
    ids_from,
    load_json_events,
    secret_for,
    text,
)
from selligent_segment.inputs.esp._ecdsa import EcdsaKeys
from selligent_segment.inputs.esp._machine_open import machine_open

__all__ = ["SIGNATURE_HEADER", "TIMESTAMP_HEADER", "SendGridConfig", "SendGridWebhook", "parse"]

PROVIDER = "sendgrid"
SIGNATURE_HEADER = "x-twilio-email-event-webhook-signature"
TIMESTAMP_HEADER = "x-twilio-email-event-webhook-timestamp"
#: Seconds a signed timestamp may be away from the clock, either way.
DEFAULT_MAX_SKEW = 300.0

_KINDS = {
    "delivered": EventKind.DELIVERED,
    "open": EventKind.OPENED,
    "click": EventKind.LINK_CLICKED,
    "bounce": EventKind.BOUNCED,
    "spamreport": EventKind.MARKED_AS_SPAM,
    "unsubscribe": EventKind.UNSUBSCRIBED,
    "group_unsubscribe": EventKind.UNSUBSCRIBED,
}
_SKIPPED = {
    "processed": "accepted by SendGrid, not yet delivered",
    "deferred": "a temporary failure SendGrid retries",
    "dropped": "SendGrid did not send it (suppressed or invalid)",
    "group_resubscribe": "a re-subscription",
}
_BOUNCE_TYPES = {"bounce": "hard", "blocked": "soft"}


@attrs.frozen
class SendGridConfig:
    """SendGrid's settings: the ``verification_key`` (Settings > Mail Settings > Event
    Webhook > Signed Event Webhook: the base64 public key; or a lookup by tenant),
    ``max_skew`` seconds of clock difference allowed (default 300) and ``now``, the wall
    clock (a seam for tests)."""

    verification_key: Secret = attrs.field(repr=False)
    max_skew: float = DEFAULT_MAX_SKEW
    now: Callable[[], float] = attrs.field(default=time.time, repr=False)


def parse(
    body: bytes,
    where: str = "request",
    *,
    tenant: str | None = None,
    resolver: IdResolver | None = None,
) -> Parsed:
    """The records of a SendGrid event webhook body (a JSON array of events), without any
    signature check. Raises :class:`InputError` only when the body is not a JSON array."""
    events = load_json_events(body, where, "SendGrid events")
    out = Collector(PROVIDER, where, tenant, resolver)
    for index, event in enumerate(events):
        if not isinstance(event, dict):
            out.problem(index, "event", "not a JSON object")
            continue
        out.read(index, _one, event)
    return out.parsed()


def _one(out: Collector, index: int, event: dict[str, Any]) -> None:
    name = event.get("event")
    kind = out.kind_of(index, "event", name, _KINDS, _SKIPPED)
    if kind is None:
        return
    properties: dict[str, Any] = {
        "esp_event": name,
        "esp_message_id": text(event.get("sg_message_id")),
    }
    fields: dict[str, Any] = {
        "email": event.get("email"),
        "event_id": text(event.get("sg_event_id")),
    }
    if not out.timestamp(index, fields, event.get("timestamp")):
        return
    if kind is EventKind.OPENED:
        fields["ip"] = text(event.get("ip"))
        fields["user_agent"] = text(event.get("useragent"))
        properties.update(
            machine_open(event.get("ip"), event.get("useragent"), event.get("sg_machine_open"))
        )
    elif kind is EventKind.LINK_CLICKED:
        fields["ip"] = text(event.get("ip"))
        fields["user_agent"] = text(event.get("useragent"))
        fields["link_url"] = text(event.get("url"))
    elif kind is EventKind.BOUNCED:
        bounce = event.get("type")
        fields["bounce_type"] = _BOUNCE_TYPES.get(bounce) if isinstance(bounce, str) else None
        fields["bounce_reason"] = text(event.get("reason"))
        fields["smtp_status"] = text(event.get("status"))
        properties["esp_bounce_classification"] = text(event.get("bounce_classification")) or text(
            bounce
        )
    elif kind is EventKind.UNSUBSCRIBED:
        fields["ip"] = text(event.get("ip"))
        fields["user_agent"] = text(event.get("useragent"))
        fields["list_id"] = text(event.get("asm_group_id"))
    elif kind is EventKind.MARKED_AS_SPAM:
        pass
    out.add(index, kind, event, ids_from(event), properties, **fields)


class SendGridWebhook:
    """SendGrid's signed event webhook: :meth:`handle` checks the signature and the
    timestamp window, then parses. Thread-safe."""

    provider = PROVIDER

    def __init__(self, config: SendGridConfig, resolver: IdResolver | None = None) -> None:
        self.config = config
        self.resolver = resolver
        self._keys = EcdsaKeys()

    def verify(self, body: bytes, headers: Mapping[str, str], tenant: str | None = None) -> None:
        """Return when the request is signed by the tenant's key within the window; raise
        :class:`WebhookRefused` otherwise."""
        signature = headers.get(SIGNATURE_HEADER)
        stamp = headers.get(TIMESTAMP_HEADER)
        if not signature or not stamp:
            raise WebhookRefused(PROVIDER, "no signature or timestamp header", status=401)
        key = secret_for(self.config.verification_key, tenant, PROVIDER)
        if key is None:
            raise WebhookRefused(PROVIDER, "no verification key for this tenant", status=403)
        try:
            if not stamp.isascii():  # float() reads other scripts' digits; the signature won't
                raise ValueError(stamp)
            moment = float(stamp)
        except ValueError:
            raise WebhookRefused(PROVIDER, "the timestamp is not a number", status=400) from None
        try:
            good = self._keys.verify(key, signature, stamp.encode("latin-1") + body)
        except ValueError as exc:
            raise WebhookRefused(PROVIDER, f"the configured key is unusable: {exc}") from None
        if not good:
            raise WebhookRefused(PROVIDER, "bad signature")
        skew = self.config.now() - moment
        if not abs(skew) <= self.config.max_skew:  # nan (a signed "nan") is refused too
            raise WebhookRefused(
                PROVIDER,
                f"stale timestamp ({skew:+.0f} s from now, over {self.config.max_skew:g} s)",
            )

    def handle(self, body: bytes, headers: Mapping[str, str], tenant: str | None = None) -> Parsed:
        """:meth:`verify`, then :func:`parse`."""
        self.verify(body, headers, tenant)
        return parse(body, PROVIDER, tenant=tenant, resolver=self.resolver)

    def release(self, body: bytes, headers: Mapping[str, str]) -> None:
        """Nothing to forget: SendGrid's replays are told apart by ``sg_event_id``."""
