"""The tracking endpoints as one ASGI application: the open pixel, the click redirect and
the RFC 8058 one-click unsubscribe, each turning a hit into a record for an Emitter.

Routes (mount the app anywhere: only the last two path segments are read):

- ``GET|HEAD …/o/{token}``: a 1x1 transparent GIF, never cached; emits ``opened``.
- ``GET|HEAD …/c/{token}``: ``302`` to the URL sealed in the token and nothing else (no
  parameter is ever followed; the target is checked again before each redirect); emits
  ``link_clicked`` with ``link_url``.
- ``POST …/u/{token}`` with ``List-Unsubscribe=One-Click`` (form-urlencoded or
  multipart): emits ``unsubscribed`` and answers ``200`` once the Emitter accepted it
  (with a spool file: journaled), ``503`` if it could not; no redirect, no cookie, no
  authentication; idempotent: the event id is derived from the token, so a repeat has the
  same ``messageId`` and Segment keeps one.
- ``GET|HEAD …/u/{token}``: a confirmation page whose button POSTs; never unsubscribes
  (mail scanners prefetch links).

Guarantees: a token that is not valid for its route (tampered, unknown key, expired, of
another kind) gets ``404`` with one text whatever failed; a bad request never raises out
of the app and never costs another hit; every open and click is sent with its flag
(``machine_open`` / ``scanner``, true or false, see ``_scanners.py``), never dropped.
Logs carry no email address, token or key (a server's access log writes paths, which
are tokens: serve the app with it off, see docs/inputs.md).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import Any, Protocol

from selligent_segment._asgi import (
    BodyTooLarge,
    ClientGone,
    Receive,
    Scope,
    Send,
    header,
    lifespan,
    read_body,
    respond,
)
from selligent_segment._errors import ConfigurationError, InvalidEvent, SelligentSegmentError
from selligent_segment._record import CallbackRecord
from selligent_segment._validate import check_number
from selligent_segment.inputs.tracking._one_click import one_click_problem
from selligent_segment.inputs.tracking._scanners import ScannerRules
from selligent_segment.inputs.tracking._target import check_target
from selligent_segment.inputs.tracking._token import (
    KINDS,
    Token,
    TokenRefused,
    TrackingKeys,
    signature,
    unseal,
)

__all__ = ["DEFAULT_MAX_AGE", "PIXEL", "Accepts", "TrackingApp"]

log = logging.getLogger("selligent_segment")

#: A 1x1 transparent GIF (43 bytes).
PIXEL = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00"
    b"\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)
#: Links expire a year after their send time by default.
DEFAULT_MAX_AGE = 365 * 86_400.0
#: The largest one-click POST body read.
MAX_BODY = 16 * 1024
#: The longest ``User-Agent`` kept in a record.
MAX_AGENT_CHARS = 1024

_NO_STORE = [
    ("Cache-Control", "no-store, no-cache, must-revalidate, private, max-age=0"),
    ("Pragma", "no-cache"),
    ("Expires", "Thu, 01 Jan 1970 00:00:00 GMT"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Content-Type-Options", "nosniff"),
]
_PAGE_HEADERS = [
    *_NO_STORE,
    ("Content-Security-Policy", "default-src 'none'; form-action 'self'; frame-ancestors 'none'"),
    ("X-Frame-Options", "DENY"),
]
_HTML = "text/html; charset=utf-8"
_REFUSED = b"invalid or expired link\n"

CONFIRM_PAGE = (
    b'<!doctype html><html lang="en"><head><meta charset="utf-8">'
    b'<meta name="robots" content="noindex"><meta name="viewport" '
    b'content="width=device-width,initial-scale=1"><title>Unsubscribe</title></head>'
    b"<body><main><h1>Unsubscribe</h1><p>Stop receiving these emails?</p>"
    b'<form method="post"><input type="hidden" name="List-Unsubscribe" value="One-Click">'
    b'<button type="submit">Unsubscribe</button></form></main></body></html>'
)
DONE_PAGE = (
    b'<!doctype html><html lang="en"><head><meta charset="utf-8">'
    b'<meta name="robots" content="noindex"><title>Unsubscribed</title></head>'
    b"<body><main><h1>You are unsubscribed</h1>"
    b"<p>You will not receive these emails any more.</p></main></body></html>"
)


class Accepts(Protocol):
    """What the app hands records to: an :class:`~selligent_segment.Emitter`."""

    def emit(self, record: CallbackRecord | Mapping[str, Any]) -> bool:
        """Accept a record (True), drop it (False) or raise."""
        ...


class TrackingApp:
    """The tracking endpoints (see the module text) for ``emitter``, opening tokens with
    ``keys``. ``scanners`` decides which hits are machines'; ``max_age`` seconds after the
    send time a link expires (None: never); ``now`` gives the wall-clock time (POSIX
    seconds: a seam for tests); ``confirm_page`` / ``done_page`` replace the HTML shown
    before and after a person unsubscribes. Settings are checked when it is made."""

    def __init__(
        self,
        emitter: Accepts,
        keys: TrackingKeys,
        *,
        scanners: ScannerRules | None = None,
        max_age: float | None = DEFAULT_MAX_AGE,
        now: Callable[[], float] = time.time,
        confirm_page: bytes = CONFIRM_PAGE,
        done_page: bytes = DONE_PAGE,
    ) -> None:
        if not callable(getattr(emitter, "emit", None)):
            raise ConfigurationError("emitter", "expected an Emitter (an object with emit())")
        if not isinstance(keys, TrackingKeys):
            raise ConfigurationError("keys", "expected a TrackingKeys")
        if scanners is not None and not isinstance(scanners, ScannerRules):
            raise ConfigurationError("scanners", "expected a ScannerRules")
        if max_age is not None:
            check_number("max_age", max_age, minimum=0, strict=True)
        if not callable(now):
            raise ConfigurationError("now", "expected a function returning POSIX seconds")
        for name, page in (("confirm_page", confirm_page), ("done_page", done_page)):
            if not isinstance(page, bytes):
                raise ConfigurationError(name, "expected UTF-8 HTML as bytes")
        self._emitter = emitter
        self._keys = keys
        self._scanners = scanners or ScannerRules()
        self._max_age = max_age
        self._now = now
        self._confirm_page = confirm_page
        self._done_page = done_page

    def __repr__(self) -> str:
        return f"<TrackingApp keys={sorted(self._keys.keys)} signing={self._keys.signing!r}>"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI connection (``http``; ``lifespan`` is acknowledged)."""
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        try:
            await self._serve(scope, receive, send)
        except ClientGone:
            return

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        method: str = scope["method"]
        parts = str(scope.get("path", "")).rsplit("/", 2)
        code = parts[1] if len(parts) == 3 else ""
        kind = KINDS.get(code)
        if kind is None:
            await respond(send, 404, b"not found\n", headers=_NO_STORE)
            return
        allowed = ("GET", "HEAD", "POST") if kind == "unsubscribe" else ("GET", "HEAD")
        if method not in allowed:
            headers = [*_NO_STORE, ("Allow", ", ".join(allowed))]
            await respond(send, 405, b"method not allowed\n", headers=headers)
            return
        now = self._now()
        text = parts[2]
        try:
            token = unseal(text, self._keys, now=now, max_age=self._max_age)
            if token.kind != kind:
                raise TokenRefused
            if kind == "click":
                check_target(token.link_url)
        except (TokenRefused, InvalidEvent):
            await respond(send, 404, _REFUSED, headers=_NO_STORE)
            return
        if kind == "open":
            await self._open(scope, send, token, now)
        elif kind == "click":
            await self._click(scope, send, token, now)
        elif method == "POST":
            await self._unsubscribe(scope, receive, send, token, now, signature(text))
        else:
            await respond(send, 200, self._confirm_page, content_type=_HTML, headers=_PAGE_HEADERS)

    async def _open(self, scope: Scope, send: Send, token: Token, now: float) -> None:
        ip, agent = _client(scope)
        reason = self._scanners.machine_open_reason(
            method=scope["method"], user_agent=agent, ip=ip, age=now - token.sent_at
        )
        record = _record("opened", token, ip, agent, now)
        record["properties"] = _flag("machine_open", reason)
        await self._emit(record)
        await respond(send, 200, PIXEL, content_type="image/gif", headers=_NO_STORE)

    async def _click(self, scope: Scope, send: Send, token: Token, now: float) -> None:
        ip, agent = _client(scope)
        reason = self._scanners.scanner_reason(
            method=scope["method"], user_agent=agent, age=now - token.sent_at
        )
        record = _record("link_clicked", token, ip, agent, now)
        record.update(link_url=token.link_url, link_id=token.link_id)
        record["properties"] = _flag("scanner", reason)
        await self._emit(record)
        target = token.link_url or ""
        await respond(send, 302, b"", headers=[*_NO_STORE, ("Location", target)])

    async def _unsubscribe(
        self, scope: Scope, receive: Receive, send: Send, token: Token, now: float, mac: str
    ) -> None:
        try:
            body = await read_body(receive, MAX_BODY)
        except BodyTooLarge as exc:
            await respond(send, 413, f"body: {exc}\n".encode(), headers=_NO_STORE)
            return
        problem = one_click_problem(header(scope, "content-type"), body)
        if problem is not None:
            await respond(send, 400, f"{problem}\n".encode(), headers=_NO_STORE)
            return
        ip, agent = _client(scope)
        record = _record("unsubscribed", token, ip, agent, now)
        record.update(list_id=token.list_id, event_id=f"one-click-{mac}")
        if await self._emit(record):
            await respond(send, 200, self._done_page, content_type=_HTML, headers=_PAGE_HEADERS)
        else:
            headers = [*_NO_STORE, ("Retry-After", "60")]
            await respond(send, 503, b"could not record the unsubscribe; retry\n", headers=headers)

    async def _emit(self, record: dict[str, Any]) -> bool:
        """Hand ``record`` to the Emitter in a worker thread (``emit`` may wait for room);
        True when accepted. Failures are logged without the recipient."""
        kind = record["type"]
        record = {k: v for k, v in record.items() if v is not None}
        try:
            return await asyncio.to_thread(self._emitter.emit, record)
        except InvalidEvent as exc:
            log.warning("tracking: %s refused: %s is invalid", kind, exc.field)
        except SelligentSegmentError as exc:
            log.warning("tracking: %s not accepted: %s", kind, exc)
        except Exception:  # the platform's emitter: a hit must still be answered
            log.exception("tracking: %s not accepted", kind)
        return False


def _flag(name: str, reason: str | None) -> dict[str, Any]:
    if reason is None:
        return {name: False}
    return {name: True, f"{name}_reason": reason}


def _client(scope: Scope) -> tuple[str | None, str | None]:
    """The hit's IP address (when it is one) and printable ``User-Agent`` (cut short)."""
    ip: str | None = None
    client = scope.get("client")
    if client:
        try:
            ip = str(ipaddress.ip_address(client[0]))
        except ValueError:
            ip = None
    agent = header(scope, "user-agent")
    if agent is not None:
        agent = "".join(c for c in agent if c.isprintable()).strip()[:MAX_AGENT_CHARS] or None
    return ip, agent


def _record(
    kind: str, token: Token, ip: str | None, agent: str | None, now: float
) -> dict[str, Any]:
    return {
        "type": kind,
        "tenant": token.tenant,
        "email": token.email,
        "user_id": token.user_id,
        "email_id": token.email_id,
        "campaign_id": token.campaign_id,
        "timestamp": datetime.fromtimestamp(now, timezone.utc),
        "ip": ip,
        "user_agent": agent,
    }
