"""The tracking endpoints as one ASGI application: the open pixel, the click redirect and
the RFC 8058 one-click unsubscribe, each turning a hit into a record for an Emitter.

Routes (mount the app anywhere: only the last two path segments are read):

- ``GET|HEAD …/o/{token}``: a 1x1 transparent GIF, never cached; emits ``opened``.
- ``GET|HEAD …/c/{token}``: ``302`` to the URL sealed in the token and nothing else (no
  parameter is ever followed; the target is checked again before each redirect); emits
  ``link_clicked`` with ``link_url``.
- ``POST …/u/{token}`` with ``List-Unsubscribe=One-Click`` (form-urlencoded or
  multipart; another body is logged and still unsubscribes: the signed link is the
  credential): emits ``unsubscribed`` and answers ``200`` once the Emitter accepted it
  (with a spool file: journaled), ``503`` if it could not, or not in time; no redirect,
  no cookie, no authentication; idempotent: the event id is derived from the token, so a
  repeat has the same ``messageId`` and Segment keeps one.
- ``GET|HEAD …/u/{token}``: a confirmation page whose button POSTs; never unsubscribes
  (mail scanners prefetch links).

Guarantees: a token that is not valid for its route (tampered, unknown key, expired, of
another kind; an unsubscribe token never expires) gets ``404`` with one text whatever
failed; a bad request never raises out of the app and never costs another hit; every open
and click is sent with its flag (``machine_open`` / ``scanner``, true or false, see
``_scanners.py``), unless ``max_waiting_hits`` records already wait for a stuck Emitter
(then counted and logged, see :class:`TrackingApp`).
Logs carry no email address, token or key (a server's access log writes paths, which
are tokens: serve the app with it off, see docs/inputs.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any, Protocol

from selligent_segment._asgi import (
    DEFAULT_BODY_DEADLINE,
    BodiesBusy,
    BodyBudget,
    BodyTimeout,
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
from selligent_segment._throttle import Throttle
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
#: Seconds an open or click waits for the Emitter before it is answered anyway.
DEFAULT_HIT_WAIT = 1.0
#: Seconds an unsubscribe waits for the Emitter before it is answered 503.
DEFAULT_UNSUBSCRIBE_WAIT = 10.0
#: Opens and clicks answered but not yet taken by the Emitter, at most.
DEFAULT_MAX_WAITING_HITS = 10_000
#: Unsubscribe links whose event is on its way to the Emitter, at most (503 past it).
DEFAULT_MAX_WAITING_UNSUBSCRIBES = 10_000
#: Threads handing opens and clicks to the Emitter; and unsubscribes, apart.
HIT_THREADS = 4
UNSUBSCRIBE_THREADS = 2
#: Seconds between two log lines about hits not recorded, or unsubscribes answered 503.
NOT_RECORDED_EVERY = 10.0
#: The largest one-click POST body read (a larger one is not read: it cannot matter).
MAX_BODY = 16 * 1024
#: What the one-click bodies being read at once may hold together (past it a body is not
#: read: the signed link is the credential, the body never decides).
MAX_BODIES_BYTES = 16 * 1024 * 1024
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
    # Inline styles and https images and fonts, for a confirm_page / done_page of the
    # platform's (its brand); never a script, a frame, or a form posting elsewhere.
    (
        "Content-Security-Policy",
        "default-src 'none'; style-src 'unsafe-inline' https:; img-src https: data:; "
        "font-src https:; form-action 'self'; frame-ancestors 'none'",
    ),
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
    send time an open or click link expires (None: never; an unsubscribe link never
    does); ``now`` gives the wall-clock time (POSIX seconds: a seam for tests);
    ``confirm_page`` / ``done_page`` replace the HTML shown before and after a person
    unsubscribes. Settings are checked when it is made.

    The Emitter is called from threads of the app's own, unsubscribes on threads apart
    from opens and clicks, so that they never queue behind them. An open or click waits
    for it ``hit_wait`` seconds at most (1), then is answered anyway, its record handed
    over when the Emitter takes it; past ``max_waiting_hits`` records waiting so
    (10,000), a hit is answered and not recorded (counted in a WARNING line). An
    unsubscribe waits ``unsubscribe_wait`` seconds at most (10), then is answered ``503``
    with ``Retry-After`` (the provider tries again: the same event); a POST of a link
    whose event is already on its way waits for that one (one emit, however many POSTs);
    past ``max_waiting_unsubscribes`` links on their way (10,000) a POST is answered
    ``503`` at once. A one-click body is read for ``body_deadline`` seconds at most (30)
    and 16 KiB; the body never decides (the signed link does): one late, too large or
    not read (past 16 MiB of bodies being read) is logged at INFO, and still unsubscribes."""

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
        hit_wait: float = DEFAULT_HIT_WAIT,
        unsubscribe_wait: float = DEFAULT_UNSUBSCRIBE_WAIT,
        max_waiting_hits: int = DEFAULT_MAX_WAITING_HITS,
        body_deadline: float = DEFAULT_BODY_DEADLINE,
        max_waiting_unsubscribes: int = DEFAULT_MAX_WAITING_UNSUBSCRIBES,
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
        check_number("hit_wait", hit_wait, minimum=0)
        # 0 would answer 503 to an unsubscribe accepted, or give up on every body.
        check_number("unsubscribe_wait", unsubscribe_wait, minimum=0, strict=True)
        check_number("body_deadline", body_deadline, minimum=0, strict=True)
        check_number("max_waiting_hits", max_waiting_hits, minimum=0, integer=True)
        check_number("max_waiting_unsubscribes", max_waiting_unsubscribes, minimum=1, integer=True)
        self._bodies = BodyBudget(MAX_BODIES_BYTES)
        self._hit_wait = hit_wait
        self._unsubscribe_wait = unsubscribe_wait
        self._max_waiting_hits = max_waiting_hits
        self._max_waiting_unsubscribes = max_waiting_unsubscribes
        self._body_deadline = body_deadline
        self._hits = ThreadPoolExecutor(HIT_THREADS, "selligent-segment-tracking-hits")
        self._unsubscribes = ThreadPoolExecutor(
            UNSUBSCRIBE_THREADS, "selligent-segment-tracking-unsubscribes"
        )
        # Handed over, not yet taken (on the event loop only).
        self._waiting_hits: set[asyncio.Future[bool]] = set()
        self._not_recorded = 0  # hits past max_waiting_hits not yet in a log line
        self._not_recorded_log = Throttle(NOT_RECORDED_EVERY)
        # Each link's unsubscribe on its way to the Emitter (on the event loop only), by
        # event id: a repeated POST waits for it rather than queue the same event again.
        self._unsubscribing: dict[str, asyncio.Future[bool]] = {}
        self._refused = 0  # unsubscribes answered 503 at once, not yet in a log line
        self._late = 0  # unsubscribes not taken in time, not yet in a log line
        self._unsubscribe_log = Throttle(NOT_RECORDED_EVERY)

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
            # An unsubscribe link never expires: a person may act on a mail of last year.
            max_age = None if kind == "unsubscribe" else self._max_age
            token = unseal(text, self._keys, now=now, max_age=max_age)
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
        await self._hit(record)
        await respond(send, 200, PIXEL, content_type="image/gif", headers=_NO_STORE)

    async def _click(self, scope: Scope, send: Send, token: Token, now: float) -> None:
        ip, agent = _client(scope)
        reason = self._scanners.scanner_reason(
            method=scope["method"], user_agent=agent, age=now - token.sent_at
        )
        record = _record("link_clicked", token, ip, agent, now)
        record.update(link_url=token.link_url, link_id=token.link_id)
        record["properties"] = _flag("scanner", reason)
        await self._hit(record)
        target = token.link_url or ""
        await respond(send, 302, b"", headers=[*_NO_STORE, ("Location", target)])

    async def _unsubscribe(
        self, scope: Scope, receive: Receive, send: Send, token: Token, now: float, mac: str
    ) -> None:
        problem = await self._one_click_problem(scope, receive)
        if problem is not None:  # the signed link is the credential: still an unsubscribe
            log.info(
                "tracking: unsubscribe POST without the one-click body (%s); accepted", problem
            )
        ip, agent = _client(scope)
        record = _record("unsubscribed", token, ip, agent, now)
        event_id = f"one-click-{mac}"
        record.update(list_id=token.list_id, event_id=event_id)
        taken = self._unsubscribe_taken(event_id, record)
        accepted = False
        if taken is None:
            self._log_unsubscribes(refused=1)
        else:
            try:
                accepted = await asyncio.wait_for(asyncio.shield(taken), self._unsubscribe_wait)
            except asyncio.TimeoutError:  # it goes on; the provider's retry is the same event
                self._log_unsubscribes(late=1)
        if accepted:
            await respond(send, 200, self._done_page, content_type=_HTML, headers=_PAGE_HEADERS)
        else:
            headers = [*_NO_STORE, ("Retry-After", "60")]
            await respond(send, 503, b"could not record the unsubscribe; retry\n", headers=headers)

    async def _one_click_problem(self, scope: Scope, receive: Receive) -> str | None:
        """Why the POST's body is not RFC 8058's (None when it is). It never refuses the
        POST: a body too large, too slow, or past the bytes being read at once is not
        read (or not whole), and said so; a client gone raises :class:`ClientGone`."""
        try:
            body = await read_body(
                receive, MAX_BODY, budget=self._bodies, deadline=self._body_deadline
            )
        except BodyTooLarge:
            return f"body: over {MAX_BODY} bytes, not read"
        except BodiesBusy:
            return "body: not read, too many bodies being read at once"
        except BodyTimeout:
            return f"body: not whole within {self._body_deadline:g} s"
        self._bodies.give(len(body))
        return one_click_problem(header(scope, "content-type"), body)

    def _unsubscribe_taken(
        self, event_id: str, record: dict[str, Any]
    ) -> asyncio.Future[bool] | None:
        """The Emitter's taking of the unsubscribe ``event_id``: the one already on its
        way (from an earlier POST of the link, on this event loop), or a new one; None
        when ``max_waiting_unsubscribes`` are on their way already."""
        loop = asyncio.get_running_loop()
        taken = self._unsubscribing.get(event_id)
        if taken is not None and taken.get_loop() is loop:
            return taken
        if len(self._unsubscribing) >= self._max_waiting_unsubscribes:
            stale = set(_of_other_loops(self._unsubscribing.values(), loop))
            for key in [k for k, f in self._unsubscribing.items() if f in stale]:
                del self._unsubscribing[key]
        if len(self._unsubscribing) >= self._max_waiting_unsubscribes:
            return None
        taken = loop.run_in_executor(self._unsubscribes, self._emit_now, record)
        self._unsubscribing[event_id] = taken

        def done(_future: object) -> None:
            if self._unsubscribing.get(event_id) is taken:
                del self._unsubscribing[event_id]

        taken.add_done_callback(done)
        return taken

    def _log_unsubscribes(self, *, refused: int = 0, late: int = 0) -> None:
        """Count unsubscribes answered 503 (``refused`` at once, past the bound; ``late``,
        not taken in time) in a WARNING line at most every 10 s."""
        self._refused += refused
        self._late += late
        if not self._unsubscribe_log.allows(time.monotonic()):
            return
        if self._refused:
            log.warning(
                "tracking: %d unsubscribe answered 503 at once: %d links wait for the Emitter",
                self._refused,
                len(self._unsubscribing),
            )
        if self._late:
            log.warning(
                "tracking: %d unsubscribe(s) not taken by the Emitter within %g s; "
                "answered 503 for the mailbox provider to retry",
                self._late,
                self._unsubscribe_wait,
            )
        self._refused = self._late = 0

    async def _hit(self, record: dict[str, Any]) -> None:
        """Hand an open's or a click's ``record`` to the Emitter and wait ``hit_wait`` at
        most: past it the hit is answered and the record taken when the Emitter can; past
        ``max_waiting_hits`` records waiting so, it is not recorded (counted and logged)."""
        loop = asyncio.get_running_loop()
        if len(self._waiting_hits) >= self._max_waiting_hits:
            self._waiting_hits.difference_update(_of_other_loops(self._waiting_hits, loop))
        if len(self._waiting_hits) >= self._max_waiting_hits:
            self._not_recorded += 1
            if self._not_recorded_log.allows(time.monotonic()):
                log.warning(
                    "tracking: %d open or click not recorded: %d wait for the Emitter",
                    self._not_recorded,
                    len(self._waiting_hits),
                )
                self._not_recorded = 0
            return
        taken = loop.run_in_executor(self._hits, self._emit_now, record)
        self._waiting_hits.add(taken)
        taken.add_done_callback(self._waiting_hits.discard)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(taken), self._hit_wait)

    def _emit_now(self, record: dict[str, Any]) -> bool:
        """Hand ``record`` to the Emitter (in a thread of the app's: ``emit`` may wait for
        room); True when accepted. Failures are logged without the recipient."""
        kind = record["type"]
        record = {k: v for k, v in record.items() if v is not None}
        try:
            return self._emitter.emit(record)
        except InvalidEvent as exc:
            log.warning("tracking: %s refused: %s is invalid", kind, exc.field)
        except SelligentSegmentError as exc:
            log.warning("tracking: %s not accepted: %s", kind, exc)
        except Exception:  # the platform's emitter: a hit must still be answered
            log.exception("tracking: %s not accepted", kind)
        return False


def _of_other_loops(
    futures: Iterable[asyncio.Future[bool]], loop: asyncio.AbstractEventLoop
) -> list[asyncio.Future[bool]]:
    """The ``futures`` of another event loop than ``loop``: one closed before the Emitter
    took their record never completes them, so they would count against a bound for good
    (an app served by one loop after another: ``asyncio.run`` per call, tests)."""
    return [future for future in futures if future.get_loop() is not loop]


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
