"""ESP webhooks: Amazon SES (via SNS), SendGrid, Mailgun, Postmark and SparkPost, each as
a framework-neutral webhook object (``handle(body, headers, tenant) -> Parsed``, checking
the provider's signature or credentials first and raising :class:`WebhookRefused`) and,
on top, :func:`webhooks_app`, a thin ASGI application that hands the records to an
:class:`~selligent_segment.Emitter`.

:data:`PARSERS` maps each provider's name to a function ``(body, where) -> Parsed`` that
reads a saved request body *without* any signature check (for replaying saved webhooks,
as the ``ingest`` command does). The body is the request body exactly as the provider
posted it: SES the SNS envelope (or the bare SES notification), SendGrid and SparkPost a
JSON array of events, Mailgun one JSON object, Postmark one JSON object (or an array).

The signature checks of SES and SendGrid need ``cryptography`` (the ``webhooks`` extra),
imported only when a signature is checked.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

from selligent_segment.inputs._result import Parsed
from selligent_segment.inputs.esp import _mailgun, _postmark, _sendgrid, _ses, _sparkpost
from selligent_segment.inputs.esp._app import ProviderConfig, webhook_for, webhooks_app
from selligent_segment.inputs.esp._common import (
    ID_KEYS,
    IdResolver,
    PlatformIds,
    Secret,
    Webhook,
    WebhookRefused,
    ids_from,
)
from selligent_segment.inputs.esp._machine_open import machine_open
from selligent_segment.inputs.esp._mailgun import MailgunConfig, MailgunWebhook
from selligent_segment.inputs.esp._postmark import PostmarkConfig, PostmarkWebhook
from selligent_segment.inputs.esp._sendgrid import SendGridConfig, SendGridWebhook
from selligent_segment.inputs.esp._ses import SesConfig, SesWebhook
from selligent_segment.inputs.esp._sns import Fetch, SnsMessage
from selligent_segment.inputs.esp._sparkpost import SparkPostConfig, SparkPostWebhook

__all__ = [
    "ID_KEYS",
    "PARSERS",
    "Fetch",
    "IdResolver",
    "MailgunConfig",
    "MailgunWebhook",
    "PlatformIds",
    "PostmarkConfig",
    "PostmarkWebhook",
    "ProviderConfig",
    "Secret",
    "SendGridConfig",
    "SendGridWebhook",
    "SesConfig",
    "SesWebhook",
    "SnsMessage",
    "SparkPostConfig",
    "SparkPostWebhook",
    "Webhook",
    "WebhookRefused",
    "ids_from",
    "machine_open",
    "webhook_for",
    "webhooks_app",
]


#: Provider name -> ``parse(body, where)``: a saved request body read without any
#: signature check (see the module text for each provider's body). Raises only
#: :class:`~selligent_segment.inputs.InputError` (a body that is not the provider's
#: format); bad or skipped events are problems of the :class:`Parsed`. Its keys are the
#: provider names everywhere else (the ``ingest`` command's kinds).
PARSERS: Mapping[str, Callable[[bytes, str], Parsed]] = MappingProxyType(
    {
        "ses": _ses.parse,
        "sendgrid": _sendgrid.parse,
        "mailgun": _mailgun.parse,
        "postmark": _postmark.parse,
        "sparkpost": _sparkpost.parse,
    }
)
