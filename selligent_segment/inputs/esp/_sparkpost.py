"""SparkPost's webhooks: a JSON array of ``{"msys": {"<class>_event": {...}}}`` wrappers,
secured by basic authentication (SparkPost's OAuth 2.0 option is not supported).

Mapping (``type`` -> kind): message_event delivery -> delivered; message_event bounce and
out_of_band -> bounced by ``bounce_class`` (10, 30, 90 -> hard; 20-24, 40, 50-54, 70 ->
soft; 1 -> bounced without a type; 25 admin, 60 auto-reply, 80, 100 -> skipped);
message_event spam_complaint -> marked_as_spam (``fbtype`` kept); track_event open,
initial_open, amp_open, amp_initial_open -> opened; click, amp_click -> link_clicked;
unsubscribe_event list_unsubscribe, link_unsubscribe -> unsubscribed; the rest (injection,
delay, policy_rejection, generation_*, relay, A/B test events) -> skipped; an empty
``msys`` (SparkPost's test ping) is ignored. The event id is ``event_id``; the platform's
ids come from ``rcpt_meta`` under :data:`ID_KEYS`, and ``campaign_id`` from SparkPost's
own field when the metadata has none.
"""

from __future__ import annotations

from typing import Any

import attrs

from selligent_segment._record import EventKind
from selligent_segment.inputs._result import Parsed
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

__all__ = ["SparkPostConfig", "SparkPostWebhook", "parse"]

PROVIDER = "sparkpost"

_KINDS = {
    "delivery": EventKind.DELIVERED,
    "bounce": EventKind.BOUNCED,
    "out_of_band": EventKind.BOUNCED,
    "spam_complaint": EventKind.MARKED_AS_SPAM,
    "open": EventKind.OPENED,
    "initial_open": EventKind.OPENED,
    "amp_open": EventKind.OPENED,
    "amp_initial_open": EventKind.OPENED,
    "click": EventKind.LINK_CLICKED,
    "amp_click": EventKind.LINK_CLICKED,
    "list_unsubscribe": EventKind.UNSUBSCRIBED,
    "link_unsubscribe": EventKind.UNSUBSCRIBED,
}
_HARD = frozenset({10, 30, 90})
_SOFT = frozenset({20, 21, 22, 23, 24, 40, 50, 51, 52, 53, 54, 70})
_UNDETERMINED = frozenset({1})


@attrs.frozen
class SparkPostConfig:
    """SparkPost's settings: the basic-auth ``username`` and ``password`` set on the
    webhook (the password may be a lookup by tenant)."""

    username: str = attrs.field(repr=False)
    password: Secret = attrs.field(repr=False)


def parse(
    body: bytes,
    where: str = "request",
    *,
    tenant: str | None = None,
    resolver: IdResolver | None = None,
) -> Parsed:
    """The records of a SparkPost webhook body (a JSON array of ``msys`` wrappers),
    without any credential check."""
    batch = load_json_events(body, where, "SparkPost events")
    out = Collector(PROVIDER, where, tenant, resolver)
    for index, wrapper in enumerate(batch):
        msys = wrapper.get("msys") if isinstance(wrapper, dict) else None
        if not isinstance(msys, dict):
            out.problem(index, "msys", "missing or not an object")
            continue
        for event in msys.values():  # one "<class>_event" per wrapper; {} is a ping
            if isinstance(event, dict):
                out.read(index, _one, event)
            else:
                out.problem(index, "msys", "an event that is not an object")
    return out.parsed()


def _bounce_type(value: object) -> tuple[str | None, bool]:
    """(bounce_type, is a bounce) for a ``bounce_class``: a class that is not a whole
    number (text or JSON) is a bounce without a type. The caller refuses lists and
    objects first."""
    try:
        number = int(str(value))
    except ValueError:  # a number too long for int() is a ValueError too
        return None, True
    if number in _HARD:
        return "hard", True
    if number in _SOFT:
        return "soft", True
    return None, number in _UNDETERMINED


def _one(out: Collector, index: int, event: dict[str, Any]) -> None:
    name = event.get("type")
    kind = out.kind_of(index, "type", name, _KINDS, unknown="")
    if kind is None:
        return
    properties: dict[str, Any] = {
        "esp_event": name,
        "esp_message_id": text(event.get("message_id")),
    }
    fields: dict[str, Any] = {
        "email": event.get("rcpt_to"),
        "event_id": text(event.get("event_id")),
        "email_subject": text(event.get("subject")),
    }
    if not out.timestamp(index, fields, event.get("timestamp")):
        return
    if kind in (EventKind.OPENED, EventKind.LINK_CLICKED, EventKind.UNSUBSCRIBED):
        fields["ip"] = text(event.get("ip_address"))
        fields["user_agent"] = text(event.get("user_agent"))
    if kind is EventKind.OPENED:
        properties.update(machine_open(event.get("ip_address"), event.get("user_agent")))
    elif kind is EventKind.LINK_CLICKED:
        fields["link_url"] = text(event.get("target_link_url"))
    elif kind is EventKind.BOUNCED:
        bounce_class = event.get("bounce_class")
        if isinstance(bounce_class, (list, dict)):
            reason = f"expected a number, got {type(bounce_class).__name__}"
            out.problem(index, "bounce_class", reason)
            return
        bounce_type, is_bounce = _bounce_type(bounce_class)
        if not is_bounce:
            out.skip(index, "bounce_class", bounce_class, "not a bounce of the recipient")
            return
        fields["bounce_type"] = bounce_type
        fields["bounce_reason"] = text(event.get("raw_reason")) or text(event.get("reason"))
        fields["smtp_status"] = text(event.get("error_code"))
        properties["esp_bounce_classification"] = text(bounce_class)
    elif kind is EventKind.MARKED_AS_SPAM:
        properties["esp_complaint_type"] = text(event.get("fbtype"))
    found = ids_from(event.get("rcpt_meta"))
    if found.campaign_id is None and text(event.get("campaign_id")):
        found = attrs.evolve(found, campaign_id=text(event.get("campaign_id")))
    out.add(index, kind, event, found, properties, **fields)


class SparkPostWebhook(BasicAuthWebhook):
    """SparkPost's webhooks: :meth:`handle` checks the basic-auth credentials (401 when
    wrong), then parses. Thread-safe."""

    provider = PROVIDER
    parse = staticmethod(parse)
    config: SparkPostConfig
