"""Postmark's webhooks: one JSON object per request, secured by basic authentication
written into the webhook URL.

Mapping (``RecordType`` -> kind): Delivery -> delivered; Open -> opened; Click ->
link_clicked; SpamComplaint -> marked_as_spam; Bounce -> bounced by ``Type`` (HardBounce,
BadEmailAddress -> hard; SoftBounce, Transient, DnsError, Blocked, DMARCPolicy -> soft;
Unknown -> bounced without a type; SpamComplaint -> marked_as_spam; the rest, such as
AutoResponder, AddressChange, ChallengeVerification, ManuallyDeactivated -> skipped);
SubscriptionChange -> unsubscribed when ``SuppressSending`` is true and
``SuppressionReason`` is ManualSuppression (a bounce or complaint suppression was already
reported by its own event; a reactivation is skipped). Postmark has no event id: it is
``RecordType:MessageID`` plus a delivery's ``Recipient``, the bounce ``ID``, the time (and
link) of an open or click, or the time of a subscription change. The platform's ids come
from ``Metadata`` under :data:`ID_KEYS`.
"""

from __future__ import annotations

from typing import Any

import attrs

from selligent_segment._errors import InvalidEvent, shown
from selligent_segment._record import EventKind
from selligent_segment.inputs._result import InputError, Parsed
from selligent_segment.inputs.esp._basic_auth import BasicAuthWebhook
from selligent_segment.inputs.esp._common import (
    Collector,
    IdResolver,
    Secret,
    ids_from,
    load_json_events,
    text,
)
from selligent_segment.inputs.esp._machine_open import machine_open

__all__ = ["PostmarkConfig", "PostmarkWebhook", "parse"]

PROVIDER = "postmark"

_HARD = frozenset({"HardBounce", "BadEmailAddress"})
_SOFT = frozenset({"SoftBounce", "Transient", "DnsError", "Blocked", "DMARCPolicy"})


@attrs.frozen
class PostmarkConfig:
    """Postmark's settings: the basic-auth ``username`` and ``password`` you write into
    the webhook URL (the password may be a lookup by tenant)."""

    username: str = attrs.field(repr=False)
    password: Secret = attrs.field(repr=False)


def parse(
    body: bytes,
    where: str = "request",
    *,
    tenant: str | None = None,
    resolver: IdResolver | None = None,
) -> Parsed:
    """The record of a Postmark webhook body (one JSON object; a JSON array of them is
    read too), without any credential check."""
    what = "a JSON object (Postmark's webhook body)"
    events = load_json_events(body, where, what)
    if not events or not isinstance(events[0], dict):  # an array's first must be an event
        raise InputError(where, "body", f"expected {what}")
    out = Collector(PROVIDER, where, tenant, resolver)
    for index, event in enumerate(events):
        if isinstance(event, dict):
            out.read(index, _one, event)
        else:
            out.problem(index, "event", "not a JSON object")
    return out.parsed()


def _one(out: Collector, index: int, event: dict[str, Any]) -> None:
    record_type = event.get("RecordType")
    message_id = text(event.get("MessageID"))
    properties: dict[str, Any] = {
        "esp_event": record_type,
        "esp_message_id": message_id,
        "esp_tag": text(event.get("Tag")),
        "esp_message_stream": text(event.get("MessageStream")),
    }
    fields: dict[str, Any] = {"email": event.get("Recipient")}
    id_fields: list[str] = []  # the fields that tell this event apart, after RecordType:MessageID
    kind: EventKind
    if record_type == "Delivery":
        kind = EventKind.DELIVERED
        fields["timestamp"] = event.get("DeliveredAt")
        id_fields.append("Recipient")  # one Delivery per recipient of the message
    elif record_type in ("Open", "Click"):
        geo = event.get("Geo")
        ip = geo.get("IP") if isinstance(geo, dict) else None
        fields["ip"] = text(ip)
        fields["user_agent"] = text(event.get("UserAgent"))
        fields["timestamp"] = event.get("ReceivedAt")
        id_fields.append("ReceivedAt")
        if record_type == "Open":
            kind = EventKind.OPENED
            properties.update(machine_open(ip, event.get("UserAgent")))
            properties["first_open"] = event.get("FirstOpen")
        else:
            kind = EventKind.LINK_CLICKED
            fields["link_url"] = text(event.get("OriginalLink"))
            id_fields.append("OriginalLink")
    elif record_type in ("Bounce", "SpamComplaint"):
        bounce = event.get("Type")
        fields["email"] = event.get("Email")
        fields["timestamp"] = event.get("BouncedAt")
        fields["email_subject"] = text(event.get("Subject"))
        id_fields.append("ID")
        properties["esp_bounce_classification"] = text(bounce)
        if record_type == "SpamComplaint" or bounce == "SpamComplaint":
            kind = EventKind.MARKED_AS_SPAM
        elif bounce is not None and not isinstance(bounce, str):
            out.problem(index, "Type", f"not text: {shown(bounce)}")
            return
        elif bounce in _HARD or bounce in _SOFT or bounce == "Unknown":
            kind = EventKind.BOUNCED
            fields["bounce_type"] = (
                "hard" if bounce in _HARD else "soft" if bounce in _SOFT else None
            )
            fields["bounce_reason"] = text(event.get("Details")) or text(event.get("Description"))
        else:
            out.skip(index, "Type", bounce, "not a bounce of the recipient's address")
            return
    elif record_type == "SubscriptionChange":
        reason = event.get("SuppressionReason")
        if event.get("SuppressSending") is not True:
            out.skip(index, "SuppressSending", "reactivation", "the address may receive again")
            return
        if reason != "ManualSuppression":
            out.skip(index, "SuppressionReason", reason, "reported by its own bounce or complaint")
            return
        kind = EventKind.UNSUBSCRIBED
        fields["timestamp"] = event.get("ChangedAt")
        id_fields.append("ChangedAt")
        properties["esp_origin"] = text(event.get("Origin"))
    elif isinstance(record_type, str):
        out.skip(index, "RecordType", record_type, "unknown to this adapter")
        return
    else:
        out.problem(index, "RecordType", f"missing or not text: {shown(record_type)}")
        return
    try:
        fields["event_id"] = _event_id(record_type, message_id, event, id_fields)
    except InvalidEvent as exc:
        out.problem(index, exc.field, exc.reason)
        return
    out.add(index, kind, event, ids_from(event.get("Metadata")), properties, **fields)


def _event_id(
    record_type: str, message_id: str | None, event: dict[str, Any], names: list[str]
) -> str | None:
    """``RecordType:MessageID`` then the values of the fields ``names`` present in
    ``event`` (None without a MessageID). A field holding a list or an object is an
    :class:`InvalidEvent` naming it: an id is never made of a nested value."""
    if message_id is None:
        return None
    parts = [record_type, message_id]
    for name in names:
        value = event.get(name)
        if isinstance(value, (list, dict)):
            raise InvalidEvent(name, f"expected text or a number, got {type(value).__name__}")
        if value is not None:
            parts.append(str(value))
    return ":".join(parts)


class PostmarkWebhook(BasicAuthWebhook):
    """Postmark's webhooks: :meth:`handle` checks the basic-auth credentials (401 when
    wrong), then parses. Thread-safe."""

    provider = PROVIDER
    parse = staticmethod(parse)
    config: PostmarkConfig
