"""A small web service that receives the mail platform's callbacks and emits them.

The platform's hooks (delivery, bounce, open, click, unsubscribe, spam complaint) POST
each event here as JSON; the service validates it, hands it to one shared
``selligent_segment.Emitter`` and answers at once. Delivery to Segment happens in the
background, batched and retried. Standard library only (``http.server``).

It has the shape of every example: :func:`make_emitter` is the one factory, configured by
the environment (``Emitter.from_env()``, the variables in docs/hooks.md), and
:func:`create_server` takes an emitter (a test's) or builds one with it::

    SEGMENT_WRITE_KEY=... python examples/webhook_service.py --port 8080
    SELLIGENT_SEGMENT_WRITE_KEYS=keys.json python examples/webhook_service.py --port 8080

Routes:

``POST /callbacks``
    body: one callback record, e.g. ``{"type": "bounced", "tenant": "acme",
    "email": "ada@example.com", "event_id": "mta-8812", "bounce_type": "hard"}``
    (every field: docs/records.md).
``POST /callbacks/<kind>``
    ``kind`` is one of delivered, opened, link_clicked, unsubscribed, bounced,
    marked_as_spam; body: the same fields without ``type`` (what
    ``emitter.bounced(**fields)`` and the other per-kind methods take).
``GET /healthz``
    ``200 {"ok": true, "queued": N, "paused": [tenants]}``.

Answers: ``202 {"accepted": true}`` when the event was accepted (it will be delivered or
reported, never silently lost); ``400 {"error": {"field": ..., "reason": ...}}`` for an
invalid event (the platform should not retry it); ``503`` with ``Retry-After`` when the
queue is full or the service is stopping, or the event's tenant has no write key yet
(the platform should retry: ``Retry-After: 60`` for the missing key); ``404``, ``405``,
``411``, ``413`` for requests that are not callbacks (``411`` and ``413`` close the
connection, their body unread).

SIGTERM or SIGINT stops accepting, flushes what is queued (up to ``--drain`` seconds) and
exits. The first line on stdout is ``LISTENING http://HOST:PORT`` (useful with
``--port 0``). Log lines name tenants and counts, never email addresses or write keys.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from selligent_segment import (
    ConfigurationError,
    Emitter,
    EmitterClosed,
    InvalidEvent,
    SpoolFull,
    UnknownTenant,
)

log = logging.getLogger("webhook_service")

KINDS = ("delivered", "opened", "link_clicked", "unsubscribed", "bounced", "marked_as_spam")
MAX_BODY = 64 * 1024  # a callback is small; Segment refuses messages over 32 KB anyway


class CallbackServer(ThreadingHTTPServer):
    """An HTTP server that owns the Emitter its handlers emit to."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], emitter: Emitter) -> None:
        super().__init__(address, CallbackHandler)
        self.emitter = emitter


class CallbackHandler(BaseHTTPRequestHandler):
    server: CallbackServer
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0].rstrip("/")
        if path == "/callbacks":
            kind = None
        elif path.startswith("/callbacks/") and path[len("/callbacks/") :] in KINDS:
            kind = path[len("/callbacks/") :]
        else:
            self._reply(HTTPStatus.NOT_FOUND, {"error": {"reason": "no such route"}})
            return
        fields = self._read_json()
        if fields is None:
            return  # already answered
        try:
            if kind is not None:
                if "type" in fields:
                    raise InvalidEvent("type", "given by the URL; leave it out of the body")
                fields["type"] = kind
            accepted = self.server.emitter.emit(fields)
        except InvalidEvent as exc:
            self._reply(HTTPStatus.BAD_REQUEST, error(exc.field, exc.reason))
        except UnknownTenant as exc:  # a configuration gap, not a bad callback: retry later
            reason = f"no write key configured for {exc.tenant!r}"
            self._reply(HTTPStatus.SERVICE_UNAVAILABLE, error("tenant", reason), retry=60)
        except (SpoolFull, EmitterClosed) as exc:
            self._reply(HTTPStatus.SERVICE_UNAVAILABLE, {"error": {"reason": str(exc)}}, retry=1)
        else:
            if accepted:
                self._reply(HTTPStatus.ACCEPTED, {"accepted": True})
            else:  # dropped by on_full="drop_newest"; not the default
                self._reply(HTTPStatus.SERVICE_UNAVAILABLE, {"accepted": False}, retry=1)

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] != "/healthz":
            self._reply(HTTPStatus.NOT_FOUND, {"error": {"reason": "no such route"}})
            return
        stats = self.server.emitter.stats()
        paused = sorted(t for t, s in stats.tenants.items() if s.paused)
        self._reply(HTTPStatus.OK, {"ok": True, "queued": stats.queued, "paused": paused})

    def _read_json(self) -> dict[str, Any] | None:
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            self.close_connection = True  # the body (chunked?) is not read: never a request
            self._reply(HTTPStatus.LENGTH_REQUIRED, error("body", "Content-Length required"))
            return None
        if int(length) > MAX_BODY:
            self.close_connection = True
            self._reply(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, error("body", "over 64 KB"))
            return None
        raw = self.rfile.read(int(length))
        try:
            data = json.loads(raw)
        except ValueError as exc:
            self._reply(HTTPStatus.BAD_REQUEST, error("body", f"invalid JSON ({exc})"))
            return None
        if not isinstance(data, dict):
            reason = f"expected a JSON object, got {type(data).__name__}"
            self._reply(HTTPStatus.BAD_REQUEST, error("record", reason))
            return None
        return data

    def _reply(self, status: HTTPStatus, body: dict[str, Any], retry: int | None = None) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        if retry is not None:
            self.send_header("Retry-After", str(retry))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        # Request lines hold no email address (they are in bodies), but keep them at DEBUG.
        log.debug("%s " + format, self.address_string(), *args)


def error(field: str, reason: str) -> dict[str, Any]:
    return {"error": {"field": field, "reason": reason}}


def make_emitter() -> Emitter:
    """The one factory: production reads the environment (a ConfigurationError names the
    variable that is missing or wrong)."""
    return Emitter.from_env()


def create_server(address: tuple[str, int], emitter: Emitter | None = None) -> CallbackServer:
    """The service on ``address``, emitting to ``emitter`` (a test's) or to the one
    :func:`make_emitter` builds."""
    return CallbackServer(address, emitter or make_emitter())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080, help="0: any free port")
    parser.add_argument("--drain", type=float, default=10.0, help="seconds to flush at exit")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    try:
        server = create_server((args.host, args.port))
    except ConfigurationError as exc:
        raise SystemExit(f"webhook_service: {exc}") from None
    emitter = server.emitter
    stopping = threading.Event()

    def stop(signum: int, frame: object) -> None:
        if not stopping.is_set():
            stopping.set()
            # shutdown() waits for serve_forever() to return: call it from another thread.
            threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    host, port = server.server_address[:2]
    print(f"LISTENING http://{host}:{port}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        delivered_all = emitter.close(timeout=args.drain)
        stats = emitter.stats()
        log.info(
            "stopped: %d events accepted, %d delivered, %d not delivered",
            stats.accepted,
            stats.delivered,
            stats.accepted - stats.delivered,
        )
    return 0 if delivered_all else 3


if __name__ == "__main__":
    sys.exit(main())
