"""The thin ASGI routes over the webhook objects: ``POST /{provider}`` and
``POST /{provider}/{tenant}``.

Guarantees: a ``2xx`` is answered only after :meth:`Emitter.emit_many` accepted the
request's records (skipped events and unreadable ones are reported in the answer and
logged, and never retried); a refused request gets its status (400, 401, 403) and one
WARNING log line naming the provider, the tenant and the reason, never a secret or an
address; an unexpected exception while a request is checked and read is a ``400`` whose
log line names the exception's type only (never a ``500``, whatever the caller sends);
when the records cannot be accepted now (spool full, emitter closed) the answer is ``503``
so the provider retries (the records' ids are stable, so a retry does not duplicate what
was accepted). A request is never both accepted in part and asked to be retried: records
of a tenant without a write key make it a ``503`` only when no record was accepted (the
tenant in the URL has no key, or every event names such a tenant); when others were
accepted it is a ``200`` listing them as problems, with one WARNING line (they are not
retried: a batch mixing tenants posted to ``POST /{provider}`` would otherwise be
re-posted, and re-accepted, for hours).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import orjson

from selligent_segment._asgi import (
    DEFAULT_BODY_DEADLINE,
    ASGIApp,
    BodiesBusy,
    BodyBudget,
    BodyTimeout,
    BodyTooLarge,
    ClientGone,
    Receive,
    Scope,
    Send,
    read_body,
    respond,
    respond_json,
)
from selligent_segment._emitter import Emitter
from selligent_segment._errors import (
    ConfigurationError,
    EmitterClosed,
    SpoolError,
    SpoolFull,
    UnknownTenant,
    shown,
)
from selligent_segment.inputs._result import InputError, InputProblem
from selligent_segment.inputs.esp._common import IdResolver, Webhook, WebhookRefused
from selligent_segment.inputs.esp._mailgun import MailgunConfig, MailgunWebhook
from selligent_segment.inputs.esp._postmark import PostmarkConfig, PostmarkWebhook
from selligent_segment.inputs.esp._sendgrid import SendGridConfig, SendGridWebhook
from selligent_segment.inputs.esp._ses import SesConfig, SesWebhook
from selligent_segment.inputs.esp._sparkpost import SparkPostConfig, SparkPostWebhook

__all__ = ["DEFAULT_MAX_BODY", "ProviderConfig", "webhook_for", "webhooks_app"]

#: The largest request body read (SendGrid posts batches of up to a few MB).
DEFAULT_MAX_BODY = 16 * 1024 * 1024

#: One provider's settings: what :func:`webhook_for` turns into the :class:`Webhook` that
#: checks and parses that provider's requests (every one verifies its signature or password).
ProviderConfig = SesConfig | SendGridConfig | MailgunConfig | PostmarkConfig | SparkPostConfig

log = logging.getLogger("selligent_segment.inputs.esp")

_WEBHOOKS: dict[type, Any] = {
    SesConfig: SesWebhook,
    SendGridConfig: SendGridWebhook,
    MailgunConfig: MailgunWebhook,
    PostmarkConfig: PostmarkWebhook,
    SparkPostConfig: SparkPostWebhook,
}


def webhook_for(config: ProviderConfig | Webhook, resolver: IdResolver | None = None) -> Webhook:
    """The webhook object of a provider's config (a webhook object is returned as is);
    anything else raises :class:`ConfigurationError`."""
    maker = _WEBHOOKS.get(type(config))
    if maker is None:
        if isinstance(config, Webhook):
            return config
        reason = f"not an ESP webhook config: {type(config).__name__}"
        raise ConfigurationError("config", reason)
    webhook: Webhook = maker(config, resolver)
    return webhook


def webhooks_app(
    emitter: Emitter,
    providers: Mapping[str, ProviderConfig | Webhook],
    *,
    resolver: IdResolver | None = None,
    max_body: int = DEFAULT_MAX_BODY,
    max_bodies_bytes: int | None = None,
    body_deadline: float = DEFAULT_BODY_DEADLINE,
) -> ASGIApp:
    """An ASGI application serving ``POST /{name}`` and ``POST /{name}/{tenant}`` for each
    ``name -> config`` of ``providers`` (``{"sendgrid": SendGridConfig(...)}``; the name is
    the path segment, so two SendGrid accounts may be ``sendgrid-eu`` and ``sendgrid-us``),
    handing the records to ``emitter``. ``resolver`` is the platform-id hook of every
    provider; ``max_body`` bytes the largest body read (413 beyond); the bodies being read
    at once hold at most ``max_bodies_bytes`` together (by default 64 MiB, or ``max_body``
    when that is more; never less than it; 503 beyond, the provider retries), and a body
    must arrive whole within ``body_deadline`` seconds (30; 408 beyond)."""
    bodies = BodyBudget.for_bodies(max_bodies_bytes, max_body, "max_body")
    webhooks = {name: webhook_for(config, resolver) for name, config in providers.items()}

    def process(
        webhook: Webhook, body: bytes, headers: dict[str, str], tenant: str | None
    ) -> tuple[int, bytes]:
        try:
            parsed = webhook.handle(body, headers, tenant)
        except WebhookRefused as exc:
            _refused(webhook.provider, tenant, exc.status, exc.reason)
            return exc.status, _error(exc.reason)
        except InputError as exc:
            _refused(webhook.provider, tenant, 400, str(exc))
            return 400, _error(str(exc))
        except Exception as exc:  # whatever a caller sends, reading it never answers a 500
            # Not released: the request may have failed before its token was recorded, and
            # forgetting it would let a captured one in again (handle forgets its own).
            reason = f"unreadable request ({type(exc).__name__})"  # the type only: no input
            _refused(webhook.provider, tenant, 400, reason)
            return 400, _error(reason)
        try:
            result = emitter.emit_many(parsed.records)
        except Exception as exc:  # full, closed, a spool that cannot write, a bug: retried
            webhook.release(body, headers)
            if not isinstance(exc, (SpoolFull, EmitterClosed, SpoolError)):  # its text may
                log.debug("esp webhook: the emitter raised", exc_info=True)  # hold an address
            _refused(webhook.provider, tenant, 503, type(exc).__name__)
            return 503, _error("not accepted now; retry")
        problems = list(parsed.problems)
        unknown: list[UnknownTenant] = []
        for index, error in result.refused:
            if isinstance(error, UnknownTenant):
                unknown.append(error)
            where = parsed.place(index, f"record-{index + 1}")
            problems.append(InputProblem(where, "emit", str(error)))
        if unknown and result.accepted == 0:  # nothing accepted: a retry duplicates nothing
            webhook.release(body, headers)
            _refused(webhook.provider, tenant, 503, "a tenant without a write key")
            return 503, _error("a tenant without a write key; retry")
        if unknown:  # others were accepted: a 503 would have the provider re-post them
            log.warning(
                "esp webhook: provider=%s tenant=%s: %d record(s) of tenants without a write "
                "key not accepted and not retried, first: %s",
                webhook.provider,
                shown(tenant) if tenant else "-",
                len(unknown),
                shown(unknown[0].tenant),
            )
        return 200, _answer(webhook.provider, tenant, result.accepted, problems)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path = scope.get("path", "")
        root = scope.get("root_path", "")
        if root and path.startswith(root + "/"):  # mounted under a prefix
            path = path[len(root) :]
        name, _, tenant = path.strip("/").partition("/")
        webhook = webhooks.get(name)
        if webhook is None or "/" in tenant:
            await respond(send, 404, b"no such webhook\n")
            return
        if scope.get("method") != "POST":
            await respond(send, 405, b"POST only\n", headers=[("Allow", "POST")])
            return
        # A provider's own limit, where lower: its body is parsed before its signature
        # can be checked (Mailgun's, SNS's), in one call that holds the GIL.
        limit = min(max_body, getattr(webhook, "max_body", None) or max_body)
        try:
            body = await read_body(receive, limit, budget=bodies, deadline=body_deadline)
        except BodyTooLarge as exc:
            _refused(webhook.provider, tenant or None, 413, str(exc))
            await respond(send, 413, str(exc).encode() + b"\n")
            return
        except BodiesBusy:
            _refused(webhook.provider, tenant or None, 503, "too many bodies being read")
            await respond_json(send, 503, _error("too many requests being read at once; retry"))
            return
        except BodyTimeout:
            reason = f"the request body did not arrive within {body_deadline:g} s"
            _refused(webhook.provider, tenant or None, 408, reason)
            await respond_json(send, 408, _error(reason))
            return
        except ClientGone:
            return
        headers = {
            bytes(k).decode("latin-1").lower(): bytes(v).decode("latin-1")
            for k, v in scope.get("headers", ())
        }
        try:
            status, answer = await asyncio.to_thread(
                process, webhook, body, headers, tenant or None
            )
        finally:
            bodies.give(len(body))
        extra = [("WWW-Authenticate", 'Basic realm="webhooks"')] if status == 401 else []
        await respond_json(send, status, answer, headers=extra)

    return app


def _refused(provider: str, tenant: str | None, status: int, reason: str) -> None:
    log.warning(
        "esp webhook refused: provider=%s tenant=%s status=%d reason=%s",
        provider,
        shown(tenant) if tenant else "-",
        status,
        reason,
    )


def _error(reason: str) -> bytes:
    return orjson.dumps({"error": reason})


def _answer(
    provider: str, tenant: str | None, accepted: int, problems: list[InputProblem]
) -> bytes:
    skipped = sum(p.reason.startswith("skipped: ") for p in problems)
    bad = [p for p in problems if not p.reason.startswith("skipped: ")]
    if bad:
        log.warning(
            "esp webhook: provider=%s tenant=%s: %d event(s) not read, first: %s",
            provider,
            shown(tenant) if tenant else "-",
            len(bad),
            bad[0],
        )
    return orjson.dumps(
        {
            "accepted": accepted,
            "skipped": skipped,
            "problems": [str(p) for p in bad[:20]],
        }
    )
