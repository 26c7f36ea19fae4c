"""Amazon SES notifications, delivered through an SNS topic to an HTTPS subscription.

The SNS envelope is checked by :mod:`._sns` (signature, certificate host, topic ARN
allow-list, age); its ``Message`` is the SES notification, read here. Both SES formats are
read: event publishing (``eventType``) and identity notifications (``notificationType``).

Mapping: Delivery -> delivered (one record per ``delivery.recipients``); Bounce -> bounced
per ``bouncedRecipients`` (``bounceType`` Permanent -> hard, Transient -> soft,
Undetermined -> no type; ``bounceType/bounceSubType`` kept); Complaint -> marked_as_spam
per ``complainedRecipients`` (``complaintFeedbackType`` kept); Open -> opened and Click ->
link_clicked, for the message's one recipient (SES does not say which recipient opened a
message sent to several: such an event is a problem); Send, Reject, DeliveryDelay,
Rendering Failure, Subscription -> skipped; so is a bounce or complaint of a message SES
did not send because the address is on a suppression list (``bounceSubType``
OnAccountSuppressionList or Suppressed, ``complaintSubType`` OnAccountSuppressionList),
as Mailgun's ``suppress-*`` bounces are. The event id is the SNS ``MessageId`` and
``:N`` for the N-th recipient. A bare notification (no SNS envelope) has the SES
``feedbackId`` instead, else ``mail.messageId:TYPE:TIMESTAMP`` (and a click's link) with
``:N:RECIPIENT``: SES sends one notification per open, click or delivery without a
feedbackId, all with the message's id, and these tell them apart. The platform's ids come
from the message tags under :data:`ID_KEYS`.
"""

from __future__ import annotations

import logging
import time
import urllib.parse
from collections.abc import Callable, Collection, Mapping
from datetime import datetime
from typing import Any

import attrs

from selligent_segment._errors import shown
from selligent_segment._record import EventKind
from selligent_segment.inputs._result import InputError, InputProblem, Parsed
from selligent_segment.inputs.esp._common import (
    Collector,
    IdResolver,
    WebhookRefused,
    caller_hook,
    ids_from,
    load_json,
    load_json_object,
    text,
)
from selligent_segment.inputs.esp._machine_open import machine_open
from selligent_segment.inputs.esp._sns import (
    Fetch,
    SnsMessage,
    SnsVerifier,
    allowed_sns_url,
    default_fetch,
)

__all__ = ["SesConfig", "SesWebhook", "parse", "parse_notification"]

PROVIDER = "ses"
#: Seconds an SNS message's Timestamp stays acceptable: SNS retries an HTTPS delivery for
#: at most an hour, whatever the delivery policy.
DEFAULT_MAX_AGE = 3600.0

log = logging.getLogger("selligent_segment.inputs.esp")

_BOUNCE_TYPES = {"Permanent": "hard", "Transient": "soft"}
_SKIPPED = {
    "Send": "SES accepted the message",
    "Reject": "SES refused to send it",
    "DeliveryDelay": "a temporary delay SES retries",
    "Rendering Failure": "a template that could not be rendered",
    "Subscription": "a subscription preference change",
}


def _topics(value: Collection[str] | Callable[[str | None, str], bool]) -> Any:
    return value if callable(value) else frozenset(value)


@attrs.frozen
class SesConfig:
    """SES via SNS: ``topic_arns``, the topics accepted (a collection, or a check
    ``(url tenant, topic ARN) -> bool``); ``confirm``: visit a SubscriptionConfirmation's
    ``SubscribeURL`` (through ``fetch``) for an allowed topic, else hand it to
    ``on_subscription`` or log it (default False); ``fetch``, the network seam for
    certificates and confirmations; ``cache_size`` certificates kept (default 16);
    ``max_age`` seconds an SNS Timestamp stays good (default 3600); ``now``, the wall
    clock."""

    topic_arns: Collection[str] | Callable[[str | None, str], bool] = attrs.field(converter=_topics)
    confirm: bool = False
    on_subscription: Callable[[SnsMessage], None] | None = None
    fetch: Fetch = attrs.field(default=default_fetch, repr=False)
    cache_size: int = 16
    max_age: float = DEFAULT_MAX_AGE
    now: Callable[[], float] = attrs.field(default=time.time, repr=False)


def parse(
    body: bytes,
    where: str = "request",
    *,
    tenant: str | None = None,
    resolver: IdResolver | None = None,
) -> Parsed:
    """The records of a saved SES body, without any signature check: an SNS envelope
    (a Notification; confirmations give nothing) or a bare SES notification."""
    payload = load_json_object(body, where, "an SNS message")
    if "Type" in payload:
        if payload.get("Type") != "Notification":
            return Parsed()
        message = payload.get("Message")
        if not isinstance(message, str):
            raise InputError(where, "Message", "missing or not text")
        notification = load_json(message.encode("utf-8"), where)
        base = text(payload.get("MessageId"))
    else:
        notification, base = payload, None
    return parse_notification(notification, where, base, tenant=tenant, resolver=resolver)


def parse_notification(
    notification: object,
    where: str,
    event_id: str | None,
    *,
    tenant: str | None = None,
    resolver: IdResolver | None = None,
) -> Parsed:
    """The records of one SES notification (the decoded ``Message``); ``event_id`` is the
    SNS MessageId the record ids derive from (None: from the notification itself)."""
    if not isinstance(notification, dict):
        raise InputError(where, "Message", "not a JSON object (an SES notification)")
    out = Collector(PROVIDER, where, tenant, resolver)
    name = notification.get("eventType") or notification.get("notificationType")
    mail = notification.get("mail")
    mail = mail if isinstance(mail, dict) else {}
    reader = out.kind_of(0, "eventType", name, _READERS, _SKIPPED)
    if reader is None:
        return out.parsed()
    name = str(name)  # text: kind_of found it
    detail = notification.get(name[0].lower() + name[1:])
    detail = detail if isinstance(detail, dict) else {}
    recipient_in_id = False
    if event_id is None:
        event_id = text(detail.get("feedbackId"))
    if event_id is None:
        event_id = _fallback_id(mail, name, detail)
        recipient_in_id = True
    common = mail.get("commonHeaders")
    common = common if isinstance(common, dict) else {}
    context = _Context(
        out=out,
        raw=notification,
        name=name,
        detail=detail,
        event_id=event_id,
        ids=ids_from(mail.get("tags")),
        properties={"esp_event": name, "esp_message_id": text(mail.get("messageId"))},
        fields={"email_subject": text(common.get("subject")), "timestamp": detail.get("timestamp")},
        destination=mail.get("destination"),
        recipient_in_id=recipient_in_id,
    )
    out.read(0, lambda _out, _index, _event: reader(context), notification)
    return out.parsed()


def _fallback_id(mail: dict[str, Any], name: str, detail: dict[str, Any]) -> str | None:
    """The id of a notification with neither an SNS MessageId nor a ``feedbackId``:
    ``mail.messageId:TYPE:TIMESTAMP`` and, for a click, ``:LINK`` (None without a
    messageId). Two opens, clicks or deliveries of one message differ in these."""
    message_id = text(mail.get("messageId"))
    if message_id is None:
        return None
    parts = [message_id, name, text(detail.get("timestamp"))]
    if name == "Click":
        parts.append(text(detail.get("link")))
    return ":".join(p for p in parts if p)


@attrs.define
class _Context:
    out: Collector
    raw: dict[str, Any]
    name: str
    detail: dict[str, Any]
    event_id: str | None
    ids: Any
    properties: dict[str, Any]
    fields: dict[str, Any]
    destination: object
    recipient_in_id: bool = False  # a fallback id: the recipient tells deliveries apart

    def add(self, index: int, kind: EventKind, properties: dict[str, Any], **fields: Any) -> None:
        """Add the record of recipient ``index``: the event id is ``ID:INDEX``, and
        ``:RECIPIENT`` (lower-cased) after it when ``recipient_in_id``."""
        event_id = f"{self.event_id}:{index}" if self.event_id else None
        email = fields.get("email")
        if event_id and self.recipient_in_id and isinstance(email, str):
            event_id = f"{event_id}:{email.strip().lower()}"
        merged = {**self.fields, **fields, "event_id": event_id}
        self.out.add(index, kind, self.raw, self.ids, {**self.properties, **properties}, **merged)


def _recipients(context: _Context, key: str) -> list[Any]:
    found = context.detail.get(key)
    if not isinstance(found, list) or not found:
        context.out.problem(0, f"{context.name.lower()}.{key}", "missing or empty")
        return []
    return found


#: A ``bounceSubType`` / ``complaintSubType`` of a message SES did not send at all: the
#: address is on a suppression list (the account's, or SES's global one).
_SUPPRESSED = frozenset({"OnAccountSuppressionList", "Suppressed"})


def _suppressed(context: _Context, field: str) -> bool:
    """True (and the notification skipped, reported) when ``field`` of its detail says
    SES did not send the message: no new bounce or complaint of the recipient."""
    subtype = context.detail.get(field)
    if subtype not in _SUPPRESSED:
        return False
    why = "SES did not send it: the address is on a suppression list"
    context.out.skip(0, field, subtype, why)
    return True


def _bounce(context: _Context) -> None:
    if _suppressed(context, "bounceSubType"):
        return
    bounce_type = context.detail.get("bounceType")
    subtype = context.detail.get("bounceSubType")
    classification = "/".join(t for t in (text(bounce_type), text(subtype)) if t)
    for index, recipient in enumerate(_recipients(context, "bouncedRecipients")):
        recipient = recipient if isinstance(recipient, dict) else {}
        context.add(
            index,
            EventKind.BOUNCED,
            {"esp_bounce_classification": classification or None},
            email=recipient.get("emailAddress"),
            bounce_type=_BOUNCE_TYPES.get(bounce_type) if isinstance(bounce_type, str) else None,
            smtp_status=text(recipient.get("status")),
            bounce_reason=text(recipient.get("diagnosticCode")),
        )


def _complaint(context: _Context) -> None:
    if _suppressed(context, "complaintSubType"):
        return
    properties = {
        "esp_complaint_type": text(context.detail.get("complaintFeedbackType")),
        "esp_complaint_subtype": text(context.detail.get("complaintSubType")),
    }
    for index, recipient in enumerate(_recipients(context, "complainedRecipients")):
        email = recipient.get("emailAddress") if isinstance(recipient, dict) else None
        context.add(index, EventKind.MARKED_AS_SPAM, properties, email=email)


def _delivery(context: _Context) -> None:
    properties = {"esp_smtp_response": text(context.detail.get("smtpResponse"))}
    for index, recipient in enumerate(_recipients(context, "recipients")):
        context.add(index, EventKind.DELIVERED, properties, email=recipient)


def _one_recipient(context: _Context) -> str | None:
    destination = context.destination
    if isinstance(destination, list) and len(destination) == 1:
        return destination[0] if isinstance(destination[0], str) else None
    count = len(destination) if isinstance(destination, list) else 0
    reason = f"sent to {count} recipients: SES does not say which one"
    context.out.problem(0, "mail.destination", reason)
    return None


def _open_or_click(context: _Context) -> None:
    email = _one_recipient(context)
    if email is None:
        return
    ip = context.detail.get("ipAddress")
    agent = context.detail.get("userAgent")
    fields: dict[str, Any] = {"email": email, "ip": text(ip), "user_agent": text(agent)}
    if context.name == "Open":
        context.add(0, EventKind.OPENED, machine_open(ip, agent), **fields)
    else:
        tags = context.detail.get("linkTags")
        properties = {"esp_link_tags": tags} if isinstance(tags, dict) and tags else {}
        link = text(context.detail.get("link"))
        context.add(0, EventKind.LINK_CLICKED, properties, link_url=link, **fields)


_READERS: dict[str, Callable[[_Context], None]] = {
    "Bounce": _bounce,
    "Complaint": _complaint,
    "Delivery": _delivery,
    "Open": _open_or_click,
    "Click": _open_or_click,
}


class SesWebhook:
    """SES through an SNS HTTPS subscription: :meth:`handle` checks the topic, the
    certificate URL, the signature and the age, confirms or hands back subscriptions,
    then parses notifications. Thread-safe."""

    provider = PROVIDER
    #: The largest body read: an SNS message is at most 256 KB (its envelope adds little).
    max_body = 2 * 1024 * 1024

    def __init__(self, config: SesConfig, resolver: IdResolver | None = None) -> None:
        self.config = config
        self.resolver = resolver
        self.verifier = SnsVerifier(
            config.fetch, cache_size=config.cache_size, now=config.now, provider=PROVIDER
        )

    def _topic_allowed(self, tenant: str | None, arn: object) -> bool:
        if not isinstance(arn, str):
            return False
        topics = self.config.topic_arns
        if callable(topics):
            return bool(caller_hook(PROVIDER, "topic check", topics, tenant, arn))
        return arn in topics

    def verify(self, body: bytes, tenant: str | None = None) -> SnsMessage:
        """The verified SNS message of ``body``; raises :class:`WebhookRefused`."""
        try:
            envelope = load_json_object(body, PROVIDER, "an SNS message")
        except InputError as exc:
            raise WebhookRefused(PROVIDER, exc.reason, status=400) from None
        if not self._topic_allowed(tenant, envelope.get("TopicArn")):
            raise WebhookRefused(PROVIDER, "topic not allowed")
        message = self.verifier.verify(envelope)
        try:
            sent = datetime.fromisoformat(message.timestamp.replace("Z", "+00:00")).timestamp()
        except ValueError:
            raise WebhookRefused(PROVIDER, "the SNS Timestamp is not a date", status=400) from None
        age = self.config.now() - sent
        if age > self.config.max_age:
            raise WebhookRefused(PROVIDER, f"stale message ({age:.0f} s old)")
        return message

    def handle(self, body: bytes, headers: Mapping[str, str], tenant: str | None = None) -> Parsed:
        """:meth:`verify`, then the records of a Notification (none for a confirmation,
        which is confirmed, handed to ``on_subscription`` or logged at INFO without its
        token). An exception in ``on_subscription`` is a :class:`WebhookRefused` (503, so
        that SNS retries) naming the exception's type only."""
        message = self.verify(body, tenant)
        if message.type == "SubscriptionConfirmation":
            self._subscription(message, tenant)
            return Parsed()
        if message.type == "UnsubscribeConfirmation":
            log.info(
                "ses: unsubscribed from topic %s (tenant %s)",
                shown(message.topic_arn),
                shown(tenant) if tenant else "-",
            )
            return Parsed()
        try:
            notification = load_json(message.message.encode("utf-8"), PROVIDER)
        except InputError as exc:
            return Parsed(problems=(InputProblem(exc.where, exc.field, exc.reason),))
        return parse_notification(
            notification, PROVIDER, message.message_id, tenant=tenant, resolver=self.resolver
        )

    def _subscription(self, message: SnsMessage, tenant: str | None) -> None:
        if self.config.on_subscription is not None:
            try:
                self.config.on_subscription(message)
            except Exception as exc:  # the caller's code: SNS retries on a 503
                reason = f"the on_subscription hook failed ({type(exc).__name__})"
                raise WebhookRefused(PROVIDER, reason, status=503) from None
            return
        if not self.config.confirm:
            parts = urllib.parse.urlsplit(str(message.subscribe_url))
            log.info(
                "ses: subscription to topic %s (tenant %s) awaits confirmation: its "
                "SubscribeURL on %s holds a token, not logged: set confirm=True or "
                "on_subscription, then request confirmation again in the SNS console",
                shown(message.topic_arn),
                shown(tenant) if tenant else "-",
                shown(f"{parts.scheme}://{parts.netloc}{parts.path}"),
            )
            return
        if not allowed_sns_url(message.subscribe_url):
            raise WebhookRefused(PROVIDER, "SubscribeURL is not an SNS URL")
        try:
            self.config.fetch(str(message.subscribe_url))
        except Exception as exc:
            reason = f"could not confirm the subscription ({type(exc).__name__})"
            raise WebhookRefused(PROVIDER, reason, status=503) from None
        log.info("ses: confirmed the subscription to topic %s", message.topic_arn)

    def release(self, body: bytes, headers: Mapping[str, str]) -> None:
        """Nothing to forget: SNS redeliveries keep their MessageId."""
