"""ESP webhooks: Amazon SES (via SNS), SendGrid, Mailgun, Postmark and SparkPost, each as
a framework-neutral webhook object (``handle(body, headers, tenant) -> Parsed``, checking
the provider's signature or credentials first) and, on top, :func:`webhooks_app`, a thin
ASGI application that hands the records to an :class:`~selligent_segment.Emitter`.

:data:`PARSERS` maps each provider's name to a function ``(body, where) -> Parsed`` that
reads a saved request body *without* any signature check (for replaying saved webhooks,
as the ``ingest`` command does). The body is the request body exactly as the provider
posted it: SES the SNS envelope (or the bare SES notification), SendGrid and SparkPost a
JSON array of events, Mailgun one JSON object, Postmark one JSON object.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

from selligent_segment.inputs._result import Parsed
from selligent_segment.inputs.esp import _sendgrid
from selligent_segment.inputs.esp._common import (
    ID_KEYS,
    IdResolver,
    PlatformIds,
    Secret,
    Webhook,
    WebhookRefused,
)
from selligent_segment.inputs.esp._machine_open import machine_open
from selligent_segment.inputs.esp._sendgrid import SendGridConfig, SendGridWebhook

__all__ = [
    "ID_KEYS",
    "PARSERS",
    "IdResolver",
    "PlatformIds",
    "Secret",
    "SendGridConfig",
    "SendGridWebhook",
    "Webhook",
    "WebhookRefused",
    "machine_open",
]


def _sendgrid_parse(body: bytes, where: str) -> Parsed:
    return _sendgrid.parse(body, where)


#: Provider name -> ``parse(body, where)``: a saved request body read without any
#: signature check (see the module text for each provider's body).
PARSERS: Mapping[str, Callable[[bytes, str], Parsed]] = MappingProxyType(
    {
        "sendgrid": _sendgrid_parse,
    }
)
