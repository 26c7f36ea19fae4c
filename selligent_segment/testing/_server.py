"""The HTTP side of :class:`~selligent_segment.testing.LocalSegment`: a threaded loopback
server whose handler applies the injected faults (``_faults.py``) and Segment's rules
(``_rules.py``) to each request and writes their answer back.

One job: bytes on a socket in, an answer out. Routes: ``POST /v1/batch``, ``GET /_stats``,
``POST /_reset``, ``POST /_faults``; anything else is ``404``. What to answer is the rules'
and the faults' business, what is recorded the owner's (``_local_segment.py``): the
handler only reads, calls and writes.

Guarantees: every ``/v1/batch`` request is recorded by the owner *before* its answer is
written (or its connection dropped), so a client that has its answer finds the request in
the records; a body that cannot be read (bad ``Content-Length``, bad chunking, over 16 MiB
on the wire) is answered ``400`` and the connection closed; :meth:`LoopbackServer.stop`
stops serving within milliseconds and shuts every open connection; nothing is logged, so no
write key reaches a log.
"""

from __future__ import annotations

import contextlib
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import orjson

from selligent_segment.testing._faults import fault_answer, parse_fault_control
from selligent_segment.testing._rules import (
    OK,
    Answer,
    error_answer,
    judge_batch,
    key_from_header,
    read_batch,
    reason_phrase,
)

if TYPE_CHECKING:
    from selligent_segment.testing._local_segment import LocalSegment

__all__ = ["ConnectionTracker", "LoopbackServer", "RequestHandler", "serve"]

_MAX_WIRE_BYTES = 16 * 1024 * 1024  # bodies above this are not even read; connection closed
_UNREADABLE_BATCH = error_answer(400, "request_too_large", "request body unreadable")
_UNREADABLE = error_answer(400, "invalid_request", "unreadable body")
_NOT_FOUND = error_answer(404, "not_found", "no such endpoint")


def serve(host: str, port: int, segment: LocalSegment) -> LoopbackServer:
    """Bind ``host:port`` (IPv6 when ``host`` has a colon) and serve in a daemon thread."""
    cls = _LoopbackServer6 if ":" in host else LoopbackServer
    server = cls(host, port, segment)
    server.start()
    return server


class ConnectionTracker:
    """A mixin for a socket server (listed before it): keeps the sockets it has open, so
    that stopping it can shut every one of them (an idle keep-alive connection, a
    tunnel), which ``shutdown()`` alone leaves open. Thread-safe."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def track(self, conn: socket.socket) -> None:
        """Keep ``conn`` until :meth:`untrack`."""
        with self._conns_lock:
            self._conns.add(conn)

    def untrack(self, conn: socket.socket) -> None:
        """Forget ``conn`` (closed, or about to be)."""
        with self._conns_lock:
            self._conns.discard(conn)

    def close_connections(self) -> None:
        """Shut every socket kept (both ways), and forget them."""
        with self._conns_lock:
            conns, self._conns = list(self._conns), set()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class LoopbackServer(ConnectionTracker, ThreadingHTTPServer):
    """A threaded HTTP server for one :class:`LocalSegment`, one thread per connection."""

    daemon_threads = True
    block_on_close = False
    segment: LocalSegment

    def __init__(self, host: str, port: int, segment: LocalSegment) -> None:
        self.segment = segment
        self._host = host
        self._thread: threading.Thread | None = None
        super().__init__((host, port), RequestHandler)

    @property
    def port(self) -> int:
        """The bound TCP port."""
        return int(self.server_address[1])

    def start(self) -> None:
        """Serve in a daemon thread."""
        thread = threading.Thread(
            target=self.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="LocalSegment",
            daemon=True,
        )
        self._thread = thread
        thread.start()

    def stop(self) -> None:
        """Stop serving, close the listening socket and every open connection."""
        # shutdown() waits for the serving loop's next poll; connecting to the listening
        # socket wakes it at once, so stop() takes milliseconds rather than a poll interval.
        stopper = threading.Thread(target=self.shutdown, name="LocalSegment-stop")
        stopper.start()
        address = (str(self._host), self.port)
        while stopper.is_alive():
            with contextlib.suppress(OSError):
                socket.create_connection(address, timeout=1).close()
            stopper.join(0.01)
        self.server_close()
        self.close_connections()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)


class _LoopbackServer6(LoopbackServer):
    address_family = socket.AF_INET6


class RequestHandler(BaseHTTPRequestHandler):
    """One connection: HTTP/1.1 keep-alive, the routes, no logging."""

    protocol_version = "HTTP/1.1"
    server_version = "LocalSegment/1"
    disable_nagle_algorithm = True
    server: LoopbackServer

    def log_message(self, format: str, *args: Any) -> None:
        """Silence per-request logging (and never log a write key)."""

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.untrack(self.connection)

    # -- plumbing -------------------------------------------------------------------------

    def _read_body(self) -> bytes | None:
        """The request body, or None when it cannot be read (connection must close)."""
        te = self.headers.get("Transfer-Encoding")
        if te is not None and te.strip().lower() == "chunked":
            return self._read_chunked()
        length = self.headers.get("Content-Length")
        if length is None:
            return b""
        try:
            n = int(length)
        except ValueError:
            return None
        if n < 0 or n > _MAX_WIRE_BYTES:
            return None
        return self.rfile.read(n)

    def _read_chunked(self) -> bytes | None:
        parts: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                return None
            if size == 0:
                break
            total += size
            if total > _MAX_WIRE_BYTES:
                return None
            parts.append(self.rfile.read(size))
            self.rfile.readline(8)
        while True:  # trailers
            line = self.rfile.readline(8192)
            if line in (b"\r\n", b"\n", b""):
                break
        return b"".join(parts)

    def _send(self, answer: Answer) -> None:
        status, body = answer.status, answer.body
        head = [
            f"HTTP/1.1 {status} {reason_phrase(status)}",
            "Content-Type: application/json",
            f"Content-Length: {len(body)}",
        ]
        head.extend(f"{name}: {value}" for name, value in answer.headers)
        if self.close_connection:
            head.append("Connection: close")
        self.wfile.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)

    # -- routes ---------------------------------------------------------------------------

    def do_POST(self) -> None:
        """Route POST requests."""
        path = self.path.partition("?")[0]
        if path == "/v1/batch":
            self._post_batch()
            return
        raw = self._read_body()
        segment = self.server.segment
        if raw is None:
            self.close_connection = True
            self._send(_UNREADABLE)
        elif path == "/_reset":
            segment.clear()
            self._send(OK)
        elif path == "/_faults":
            try:
                plan, outage = parse_fault_control(raw)
            except (ValueError, TypeError) as exc:
                self._send(error_answer(400, "invalid_request", str(exc)))
                return
            segment._control_faults(plan, outage)
            self._send(OK)
        else:
            self._send(_NOT_FOUND)

    def do_GET(self) -> None:
        """Route GET requests."""
        path = self.path.partition("?")[0]
        if path == "/_stats":
            self._send(Answer(200, orjson.dumps(self.server.segment.stats())))
        else:
            self._send(_NOT_FOUND)

    def _post_batch(self) -> None:
        """``/v1/batch``: faults first, then latency, then the rules; recorded, answered."""
        segment = self.server.segment
        received_at = time.monotonic()
        segment._note_arrival()
        headers = self.headers
        auth = headers.get("Authorization")
        raw = self._read_body()
        if raw is None:
            self.close_connection = True
            segment._record(headers, key_from_header(auth), 400, 0, 0, received_at)
            self._send(_UNREADABLE_BATCH)
            return
        nbytes = len(raw)
        request = read_batch(auth, headers.get("Content-Encoding"), raw)
        key, n_items = request.write_key, request.n_items

        fault = segment._faults.next(key)
        if fault is not None:
            if fault.seconds:
                time.sleep(fault.seconds)
            if fault.kind == "drop":
                self.close_connection = True
                segment._record(headers, key, 0, n_items, nbytes, received_at, "drop")
                return
            if fault.kind == "status":
                answer = fault_answer(fault)
                segment._record(headers, key, answer.status, n_items, nbytes, received_at, "status")
                self._send(answer)
                return
        if segment._latency:
            time.sleep(segment._latency)

        verdict = judge_batch(
            request, key_ok=segment._key_ok(key), strict=segment._strict, refuse=segment._refuse
        )
        status = verdict.answer.status
        items = request.items if status == 200 and request.items is not None else ()
        segment._record(
            headers, key, status, n_items, nbytes, received_at, None, items, verdict.reasons
        )
        self._send(verdict.answer)
