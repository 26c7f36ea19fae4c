"""A local, real-HTTP stand-in for Segment's Tracking API, for tests and benchmarks.

:class:`LocalSegment` serves ``POST /v1/batch`` on loopback (an ephemeral port by default)
and applies Segment's documented rules, so delivery code can be exercised over real sockets:

- HTTP Basic auth with the write key as user and an empty password; when no
  ``Authorization`` header is sent, ``writeKey`` in the body is used. Missing, unknown or
  revoked key: ``401``.
- ``Content-Encoding: gzip`` bodies are accepted.
- Request body over 500 KB (``500 * 1024`` bytes, measured after decompression), invalid
  JSON, or a body that is not an object with a ``batch`` list: ``400``.
- More than 2,500 items: ``200`` but every event is dropped (recorded in :attr:`dropped`).
- Items Segment drops silently are answered ``200`` and recorded in :attr:`dropped` with a
  reason: over 32 KB (``32 * 1024`` bytes of the item *re-serialised compactly* with
  orjson, i.e. UTF-8 without whitespace), missing/unknown ``type``, missing ``messageId`` or
  one over 100 characters, a ``track`` without ``event``, neither ``userId`` nor
  ``anonymousId``; and, when ``refuse`` is given, items for which ``refuse(item)`` returns a
  reason. With ``strict=True`` such a batch is answered ``400`` instead and nothing
  in it is accepted (so bisection of 400s can be tested).
- A ``messageId`` already accepted (by any key) is counted in :attr:`duplicates` and not
  accepted again.
- Error bodies are JSON ``{"code": ..., "message": ...}``; success is ``{"success": true}``.

Faults (:class:`Fault`, :class:`FaultPlan`) inject status codes (with ``Retry-After`` /
``X-RateLimit-Reset``), dropped connections and latency, scripted or as a seeded random mix,
globally or per write key; :meth:`LocalSegment.outage` fails every request until
:meth:`LocalSegment.end_outage`.

Without sockets: :class:`MockTransport` answers every batch from a function
(``Emitter(transport=MockTransport(handler))``) and :class:`FakeClock` makes the senders'
time a test's to move (``Emitter(clock=FakeClock())``); see ``docs/testing.md``.

Use in pytest: add ``from selligent_segment.testing import local_segment  # noqa: F401`` to a
``conftest.py``, or ``pytest_plugins = ["selligent_segment.testing"]`` in the root
``conftest.py``; then request the ``local_segment`` fixture (a started :class:`LocalSegment`
accepting any key, stopped after the test). pytest is not needed to import this module.

Run as a process (for benchmarks)::

    python -m selligent_segment.testing --port 0 [--fault-mix JSON] [--strict] [--latency S]

The first stdout line is ``LISTENING http://127.0.0.1:PORT``; it serves until stdin closes
(unless ``--ignore-stdin``), SIGTERM or SIGINT. Besides ``/v1/batch`` every server answers
``GET /_stats`` (``{"accepted", "unique_message_ids", "requests", "dropped", "duplicates"}``,
from counters), ``POST /_reset`` (clear records) and ``POST /_faults`` (body like
``{"seed": 1, "rates": {"500": 0.2, "429": 0.05, "drop": 0.05}, "retry_after": 1}``, optionally
``"outage": 503``; ``{}`` clears faults and ends any outage). The process keeps counters and
the message-id set only (``record_events=False``).

Write keys never appear in a repr, an exception text or a log line of this module.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import http
import os
import random
import signal
import socket
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import MappingProxyType, TracebackType
from typing import Any, Literal, TypeAlias

import attrs
import orjson

from selligent_segment._limits import (
    MAX_BATCH_BYTES,
    MAX_BATCH_MESSAGES,
    MAX_MESSAGE_BYTES,
)
from selligent_segment._limits import MAX_MESSAGE_ID_CHARS as LIMIT_MESSAGE_ID_CHARS
from selligent_segment.testing._fake_clock import FakeClock
from selligent_segment.testing._mock_transport import (
    Handler,
    MockRequest,
    MockResponse,
    MockTransport,
)

if __name__ != "__main__":
    try:
        import pytest
    except ImportError:  # pragma: no cover - pytest is optional at runtime
        pytest = None  # type: ignore[assignment]
else:  # process mode needs no fixture: skip pytest's import time
    pytest = None  # type: ignore[assignment]

__all__ = [
    "MAX_BATCH_ITEMS",
    "MAX_ITEM_BYTES",
    "MAX_MESSAGE_ID_CHARS",
    "MAX_REQUEST_BYTES",
    "DroppedEvent",
    "FakeClock",
    "Fault",
    "FaultLike",
    "FaultPlan",
    "Handler",
    "LocalSegment",
    "MockRequest",
    "MockResponse",
    "MockTransport",
    "RecordedRequest",
    "main",
]

MAX_REQUEST_BYTES = MAX_BATCH_BYTES
"""Largest accepted request body, in bytes after decompression (Segment: 500 KB)."""
MAX_ITEM_BYTES = MAX_MESSAGE_BYTES
"""Largest accepted item, in bytes of its compact orjson serialisation (Segment: 32 KB)."""
MAX_BATCH_ITEMS = MAX_BATCH_MESSAGES
"""Most items per batch; a larger batch is answered 200 and all its events dropped."""
MAX_MESSAGE_ID_CHARS = LIMIT_MESSAGE_ID_CHARS
"""Longest accepted ``messageId``, in characters."""

_MAX_WIRE_BYTES = 16 * 1024 * 1024  # bodies above this are not even read; connection closed
_EVENT_TYPES = frozenset({"track", "identify", "page", "screen", "group", "alias"})
_OK_BODY = b'{"success":true}'

FaultKind: TypeAlias = Literal["status", "drop", "latency"]
"""The three kinds of :class:`Fault`."""


def _check_header_value(value: int | str | None, name: str) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise TypeError(f"{name} must be int seconds or a str, not {type(value).__name__}")
    if isinstance(value, int) and value < 0:
        raise ValueError(f"{name} must be >= 0")
    if isinstance(value, str) and ("\r" in value or "\n" in value):
        raise ValueError(f"{name} must not contain line breaks")


@attrs.frozen
class Fault:
    """One injected fault; immutable. Build with :meth:`http`, :meth:`drop` or :meth:`latency`.

    - ``status``: answer ``status`` (after ``seconds`` of delay) with a JSON error body and
      the optional ``Retry-After`` / ``X-RateLimit-Reset`` headers; events not accepted.
    - ``drop``: read the request, then close the connection without answering (after
      ``seconds``); recorded with status 0; events not accepted.
    - ``latency``: sleep ``seconds``, then handle the request normally.
    """

    kind: FaultKind
    status: int = 0
    retry_after: int | str | None = None
    x_ratelimit_reset: int | str | None = None
    seconds: float = 0.0

    def __attrs_post_init__(self) -> None:
        if self.kind not in ("status", "drop", "latency"):
            raise ValueError(f"unknown fault kind {self.kind!r}")
        if self.kind == "status" and not 100 <= self.status <= 599:
            raise ValueError(f"status must be an HTTP status code, got {self.status!r}")
        if self.seconds < 0:
            raise ValueError("seconds must be >= 0")
        _check_header_value(self.retry_after, "retry_after")
        _check_header_value(self.x_ratelimit_reset, "x_ratelimit_reset")

    @classmethod
    def http(
        cls,
        status: int,
        *,
        retry_after: int | str | None = None,
        x_ratelimit_reset: int | str | None = None,
        delay: float = 0.0,
    ) -> Fault:
        """Answer ``status``; ``retry_after`` is int seconds or an HTTP-date string."""
        return cls(
            "status",
            status=status,
            retry_after=retry_after,
            x_ratelimit_reset=x_ratelimit_reset,
            seconds=delay,
        )

    @classmethod
    def drop(cls, *, delay: float = 0.0) -> Fault:
        """Close the connection without answering, after reading the request."""
        return cls("drop", seconds=delay)

    @classmethod
    def latency(cls, seconds: float) -> Fault:
        """Sleep ``seconds`` before handling the request normally."""
        return cls("latency", seconds=seconds)


FaultLike: TypeAlias = Fault | int | Literal["drop"]
"""A :class:`Fault`, a bare status code (``503``) or ``"drop"``."""


def _to_fault(value: FaultLike) -> Fault:
    if isinstance(value, Fault):
        return value
    if value == "drop":
        return Fault.drop()
    if isinstance(value, int) and not isinstance(value, bool):
        return Fault.http(value)
    raise TypeError(f"not a fault: {value!r} (use Fault, an int status or 'drop')")


def _to_faults(value: Iterable[FaultLike]) -> tuple[Fault, ...]:
    if isinstance(value, (str, bytes)):
        raise TypeError("a fault script must be a sequence of faults, not a string")
    return tuple(_to_fault(v) for v in value)


def _to_per_key(value: Mapping[str, Iterable[FaultLike]]) -> Mapping[str, tuple[Fault, ...]]:
    return MappingProxyType({str(k): _to_faults(v) for k, v in value.items()})


RateKey: TypeAlias = int | Literal["drop"]
"""A key of :attr:`FaultPlan.rates`: an HTTP status code or ``"drop"``."""
RatesLike: TypeAlias = Mapping[Any, float]
"""Fault rates keyed by status code (int or digit string) or ``"drop"``."""


def _to_rates(value: RatesLike) -> Mapping[RateKey, float]:
    out: dict[RateKey, float] = {}
    for raw_key, raw_rate in value.items():
        key: RateKey
        if raw_key == "drop":
            key = "drop"
        elif isinstance(raw_key, int) and not isinstance(raw_key, bool):
            key = raw_key
        elif isinstance(raw_key, str) and raw_key.isdigit():
            key = int(raw_key)
        else:
            raise ValueError(f"rate key must be a status code or 'drop', got {raw_key!r}")
        if key != "drop" and not 100 <= key <= 599:
            raise ValueError(f"rate key must be an HTTP status code, got {key!r}")
        rate = float(raw_rate)
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"rate for {key!r} must be within [0, 1]")
        out[key] = rate
    if sum(out.values()) > 1.0 + 1e-9:
        raise ValueError("fault rates must sum to at most 1")
    return MappingProxyType(out)


def _to_key_set(value: Iterable[str] | None) -> frozenset[str] | None:
    return None if value is None else frozenset(value)


def _redact_keys(value: object) -> str:
    if value is None:
        return "None"
    if isinstance(value, Mapping):
        return f"<{len(value)} write key(s)>"
    if isinstance(value, frozenset):
        return f"<{len(value)} write key(s)>"
    return "<redacted>"


@attrs.frozen
class FaultPlan:
    """Immutable description of injected faults; the server keeps the consumption state.

    For each ``/v1/batch`` request, in order: the next unused entry of ``per_key[key]`` (if
    the request's write key has a script), else the next unused entry of ``script``, else a
    random draw from ``rates`` (``{status or "drop": probability}``, seeded by ``seed``,
    restricted to ``mix_keys`` when given); ``retry_after`` / ``x_ratelimit_reset`` are set
    on every status fault of the random mix. Scripts restart when the plan is (re)installed.
    """

    script: tuple[Fault, ...] = attrs.field(default=(), converter=_to_faults)
    per_key: Mapping[str, tuple[Fault, ...]] = attrs.field(
        factory=dict, converter=_to_per_key, repr=_redact_keys, hash=False
    )
    rates: Mapping[RateKey, float] = attrs.field(factory=dict, converter=_to_rates, hash=False)
    seed: int | None = None
    retry_after: int | str | None = None
    x_ratelimit_reset: int | str | None = None
    mix_keys: frozenset[str] | None = attrs.field(
        default=None, converter=_to_key_set, repr=_redact_keys
    )

    def __attrs_post_init__(self) -> None:
        _check_header_value(self.retry_after, "retry_after")
        _check_header_value(self.x_ratelimit_reset, "x_ratelimit_reset")

    @classmethod
    def mix(
        cls,
        *,
        seed: int | None = None,
        rates: RatesLike,
        retry_after: int | str | None = None,
        x_ratelimit_reset: int | str | None = None,
        keys: Iterable[str] | None = None,
    ) -> FaultPlan:
        """A seeded random mix, e.g. ``mix(seed=1, rates={500: 0.2, "drop": 0.05})``."""
        return cls(
            rates=rates,
            seed=seed,
            retry_after=retry_after,
            x_ratelimit_reset=x_ratelimit_reset,
            mix_keys=keys,
        )

    @classmethod
    def from_json(cls, obj: object) -> FaultPlan:
        """Build a mix from the ``/_faults`` JSON shape; ``{}`` is the empty plan."""
        if not isinstance(obj, dict):
            raise ValueError("fault plan must be a JSON object")
        unknown = set(obj) - {"seed", "rates", "retry_after", "x_ratelimit_reset", "outage"}
        if unknown:
            raise ValueError(f"unknown fault plan fields: {sorted(unknown)}")
        rates = obj.get("rates") or {}
        if not isinstance(rates, dict):
            raise ValueError("rates must be an object")
        seed = obj.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError("seed must be an integer")
        return cls.mix(
            seed=seed,
            rates=rates,
            retry_after=obj.get("retry_after"),
            x_ratelimit_reset=obj.get("x_ratelimit_reset"),
        )


@attrs.frozen
class RecordedRequest:
    """One ``/v1/batch`` request as received and answered (status 0 = connection dropped).

    ``nbytes`` is the body size on the wire (before decompression); ``headers`` has
    lower-cased names; ``received_at`` is ``time.monotonic()`` when the headers were read;
    ``retry_count`` is the ``X-Retry-Count`` header (0 when absent); ``n_accepted`` counts
    events newly accepted; ``fault`` is the injected fault kind that answered it, if any.
    """

    write_key: str | None = attrs.field(repr=False)
    status: int
    n_items: int
    nbytes: int
    headers: Mapping[str, str] = attrs.field(repr=False, hash=False)
    received_at: float
    retry_count: int
    n_accepted: int = 0
    fault: FaultKind | None = None


@attrs.frozen
class DroppedEvent:
    """An item answered 200 but silently dropped, with the reason (as Segment would)."""

    reason: str
    event: Any = attrs.field(hash=False)
    write_key: str | None = attrs.field(repr=False)


class _FaultState:
    """Consumption state of a :class:`FaultPlan`; guarded by the owner's lock."""

    __slots__ = ("per_key_pos", "plan", "rates", "rng", "script_pos")

    def __init__(self, plan: FaultPlan) -> None:
        self.plan = plan
        self.script_pos = 0
        self.per_key_pos: dict[str, int] = {}
        self.rng = random.Random(plan.seed)  # noqa: S311 - fault injection, not crypto
        self.rates = tuple(plan.rates.items())

    def next(self, key: str | None) -> Fault | None:
        plan = self.plan
        if key is not None and key in plan.per_key:
            seq = plan.per_key[key]
            pos = self.per_key_pos.get(key, 0)
            if pos < len(seq):
                self.per_key_pos[key] = pos + 1
                return seq[pos]
        if self.script_pos < len(plan.script):
            self.script_pos += 1
            return plan.script[self.script_pos - 1]
        if self.rates and (plan.mix_keys is None or key in plan.mix_keys):
            draw = self.rng.random()
            acc = 0.0
            for what, rate in self.rates:
                acc += rate
                if draw < acc:
                    if what == "drop":
                        return Fault.drop()
                    return Fault.http(
                        what,
                        retry_after=plan.retry_after,
                        x_ratelimit_reset=plan.x_ratelimit_reset,
                    )
        return None


def _error_body(code: str, message: str) -> bytes:
    return orjson.dumps({"code": code, "message": message})


def _status_code_slug(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")
    except ValueError:
        return f"http_{status}"


def _basic_user(header: str) -> str | None:
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic" or not token:
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user = decoded.partition(":")[0]
    return user or None


def _present(value: object) -> bool:
    if isinstance(value, str):
        return bool(value)
    return isinstance(value, int) and not isinstance(value, bool)


def _item_problem(item: object) -> str | None:
    """Why Segment would drop ``item`` silently, or None when it is acceptable."""
    if not isinstance(item, dict):
        return "not_an_object"
    kind = item.get("type")
    if not isinstance(kind, str) or kind not in _EVENT_TYPES:
        return "invalid_type"
    mid = item.get("messageId")
    if not isinstance(mid, str) or not mid:
        return "missing_message_id"
    if len(mid) > MAX_MESSAGE_ID_CHARS:
        return "message_id_too_long"
    if kind == "track":
        event = item.get("event")
        if not isinstance(event, str) or not event.strip():
            return "missing_event"
    if not _present(item.get("userId")) and not _present(item.get("anonymousId")):
        return "missing_user_id"
    return None


class _ParseError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _decode_body(raw: bytes, encoding: str | None) -> tuple[Any, int]:
    enc = (encoding or "").strip().lower()
    if enc in ("gzip", "x-gzip"):
        decomp = zlib.decompressobj(wbits=31)
        try:
            data = decomp.decompress(raw, MAX_REQUEST_BYTES + 1)
        except zlib.error:
            raise _ParseError("invalid_request", "body is not valid gzip") from None
        if len(data) > MAX_REQUEST_BYTES:
            raise _ParseError("request_too_large", "request body exceeds 500 KB")
        if not decomp.eof:
            raise _ParseError("invalid_request", "gzip body is truncated")
    elif enc in ("", "identity"):
        data = raw
    else:
        raise _ParseError("invalid_request", "unsupported Content-Encoding")
    if len(data) > MAX_REQUEST_BYTES:
        raise _ParseError("request_too_large", "request body exceeds 500 KB")
    try:
        return orjson.loads(data), len(data)
    except orjson.JSONDecodeError:
        raise _ParseError("invalid_request", "body is not valid JSON") from None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    segment: LocalSegment

    def __init__(self, address: tuple[str, int], segment: LocalSegment) -> None:
        self.segment = segment
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        super().__init__(address, _Handler)

    def track(self, conn: socket.socket) -> None:
        with self._conns_lock:
            self._conns.add(conn)

    def untrack(self, conn: socket.socket) -> None:
        with self._conns_lock:
            self._conns.discard(conn)

    def close_connections(self) -> None:
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "LocalSegment/1"
    disable_nagle_algorithm = True
    server: _Server

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

    def _send(self, status: int, body: bytes, extra: Sequence[tuple[str, str]] = ()) -> None:
        try:
            reason = http.HTTPStatus(status).phrase
        except ValueError:
            reason = ""
        head = [
            f"HTTP/1.1 {status} {reason}",
            "Content-Type: application/json",
            f"Content-Length: {len(body)}",
        ]
        head.extend(f"{name}: {value}" for name, value in extra)
        if self.close_connection:
            head.append("Connection: close")
        self.wfile.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)

    # -- routes ---------------------------------------------------------------------------

    def do_POST(self) -> None:
        """Route POST requests."""
        path = self.path.partition("?")[0]
        if path == "/v1/batch":
            self.server.segment._handle_batch(self)
            return
        raw = self._read_body()
        if raw is None:
            self.close_connection = True
            self._send(400, _error_body("invalid_request", "unreadable body"))
        elif path == "/_reset":
            self.server.segment.clear()
            self._send(200, _OK_BODY)
        elif path == "/_faults":
            try:
                obj = orjson.loads(raw or b"{}")
                plan = FaultPlan.from_json(obj)
            except (orjson.JSONDecodeError, ValueError, TypeError) as exc:
                self._send(400, _error_body("invalid_request", str(exc)))
                return
            seg = self.server.segment
            seg.set_faults(plan)
            outage = obj.get("outage")
            if isinstance(outage, int) and not isinstance(outage, bool):
                seg.outage(outage, retry_after=plan.retry_after)
            else:
                seg.end_outage()
            self._send(200, _OK_BODY)
        else:
            self._send(404, _error_body("not_found", "no such endpoint"))

    def do_GET(self) -> None:
        """Route GET requests."""
        path = self.path.partition("?")[0]
        if path == "/_stats":
            self._send(200, orjson.dumps(self.server.segment.stats()))
        else:
            self._send(404, _error_body("not_found", "no such endpoint"))


class LocalSegment:
    """A Segment ``/v1/batch`` server on a real loopback socket; thread-safe records.

    Guarantees: every ``/v1/batch`` request is answered per the rules in the module
    docstring (or by an injected fault); accepted events are recorded in arrival order
    with the write key that sent them; all accessors return copies taken under a lock.
    With ``record_events=False`` only counters and the message-id set are kept (lists stay
    empty), for benchmarks.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        write_keys: Iterable[str] | None = None,
        faults: FaultPlan | None = None,
        latency: float = 0.0,
        strict: bool = False,
        record_events: bool = True,
        refuse: Callable[[Mapping[str, Any]], str | None] | None = None,
    ) -> None:
        if latency < 0:
            raise ValueError("latency must be >= 0")
        self._host = host
        self._port = port
        self._latency = float(latency)
        self._strict = bool(strict)
        self._record = bool(record_events)
        self._refuse = refuse
        self._keys_lock = threading.Lock()
        self._allowed: set[str] | None = None if write_keys is None else set(write_keys)
        self._revoked: set[str] = set()
        self._faults_lock = threading.Lock()
        self._fault_state = _FaultState(faults or FaultPlan())
        self._outage: Fault | None = None
        self._cond = threading.Condition(threading.Lock())
        self._accepted: list[dict[str, Any]] = []
        self._accepted_keys: list[str | None] = []
        self._requests: list[RecordedRequest] = []
        self._dropped: list[DroppedEvent] = []
        self._ids: set[str] = set()
        self._n_accepted = 0
        self._n_requests = 0
        self._n_arrived = 0
        self._n_dropped = 0
        self._n_duplicates = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        where = self.url if self._server is not None else "stopped"
        return f"<LocalSegment {where}>"

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> LocalSegment:
        """Bind and serve in a daemon thread; returns self. Raises if already started."""
        if self._server is not None:
            raise RuntimeError("LocalSegment is already started")
        cls = _Server6 if ":" in self._host else _Server
        server = cls((self._host, self._port), self)
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="LocalSegment",
            daemon=True,
        )
        self._server = server
        self._thread = thread
        thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close every open connection; idempotent."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._server = self._thread = None
        # shutdown() waits for the serving loop's next poll; connecting to the listening
        # socket wakes it at once, so stop() takes milliseconds rather than a poll interval.
        stopper = threading.Thread(target=server.shutdown, name="LocalSegment-stop")
        stopper.start()
        address = (str(self._host), int(server.server_address[1]))
        while stopper.is_alive():
            with contextlib.suppress(OSError):
                socket.create_connection(address, timeout=1).close()
            stopper.join(0.01)
        server.server_close()
        server.close_connections()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> LocalSegment:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The bound TCP port (raises RuntimeError when not started)."""
        if self._server is None:
            raise RuntimeError("LocalSegment is not started")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:54321`` (raises RuntimeError when not started)."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}"

    # -- keys -----------------------------------------------------------------------------

    def add_write_key(self, key: str) -> None:
        """Accept ``key`` from now on (also un-revokes it)."""
        with self._keys_lock:
            self._revoked.discard(key)
            if self._allowed is not None:
                self._allowed.add(key)

    def revoke_write_key(self, key: str) -> None:
        """Answer 401 to ``key`` from now on (even when any key is accepted)."""
        with self._keys_lock:
            self._revoked.add(key)
            if self._allowed is not None:
                self._allowed.discard(key)

    def _key_ok(self, key: str | None) -> bool:
        if not key:
            return False
        with self._keys_lock:
            if key in self._revoked:
                return False
            return self._allowed is None or key in self._allowed

    # -- faults ---------------------------------------------------------------------------

    def set_faults(self, plan: FaultPlan | None) -> None:
        """Install ``plan`` (None = no faults) with fresh script positions and RNG."""
        with self._faults_lock:
            self._fault_state = _FaultState(plan or FaultPlan())

    def outage(self, status: int = 503, *, retry_after: int | str | None = None) -> None:
        """Answer every ``/v1/batch`` request with ``status`` until :meth:`end_outage`."""
        fault = Fault.http(status, retry_after=retry_after)
        with self._faults_lock:
            self._outage = fault

    def end_outage(self) -> None:
        """End an outage started by :meth:`outage`; no-op otherwise."""
        with self._faults_lock:
            self._outage = None

    def _next_fault(self, key: str | None) -> Fault | None:
        with self._faults_lock:
            if self._outage is not None:
                return self._outage
            return self._fault_state.next(key)

    # -- records --------------------------------------------------------------------------

    @property
    def accepted(self) -> list[dict[str, Any]]:
        """Accepted events, in arrival order, exactly as sent (copy of the list)."""
        with self._cond:
            return list(self._accepted)

    def events(self, write_key: str | None = None) -> list[dict[str, Any]]:
        """Accepted events, optionally only those sent with ``write_key``."""
        with self._cond:
            if write_key is None:
                return list(self._accepted)
            return [
                ev
                for ev, key in zip(self._accepted, self._accepted_keys, strict=True)
                if key == write_key
            ]

    def message_ids(self) -> set[str]:
        """The ``messageId`` of every accepted event (kept even without ``record_events``)."""
        with self._cond:
            return set(self._ids)

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every ``/v1/batch`` request in the order answered (copy of the list)."""
        with self._cond:
            return list(self._requests)

    @property
    def dropped(self) -> list[DroppedEvent]:
        """Items answered 200 but dropped, with the reason (copy of the list)."""
        with self._cond:
            return list(self._dropped)

    @property
    def duplicates(self) -> int:
        """How many items repeated an already accepted ``messageId``."""
        with self._cond:
            return self._n_duplicates

    @property
    def accepted_count(self) -> int:
        """How many events were accepted (a counter; exact even without ``record_events``)."""
        with self._cond:
            return self._n_accepted

    @property
    def request_count(self) -> int:
        """How many ``/v1/batch`` requests were answered or dropped (a counter)."""
        with self._cond:
            return self._n_requests

    def stats(self) -> dict[str, int]:
        """Counters, as served by ``GET /_stats``; O(1)."""
        with self._cond:
            return {
                "accepted": self._n_accepted,
                "unique_message_ids": len(self._ids),
                "requests": self._n_requests,
                "dropped": self._n_dropped,
                "duplicates": self._n_duplicates,
            }

    def clear(self) -> None:
        """Forget all records, counters and message ids (faults and keys are kept)."""
        with self._cond:
            self._accepted.clear()
            self._accepted_keys.clear()
            self._requests.clear()
            self._dropped.clear()
            self._ids.clear()
            self._n_accepted = self._n_requests = self._n_dropped = self._n_duplicates = 0
            self._n_arrived = 0
            self._cond.notify_all()

    def wait_for(self, count: int, timeout: float = 10.0) -> bool:
        """Block until at least ``count`` events are accepted; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._n_accepted >= count, timeout)

    def wait_for_arrivals(self, count: int, timeout: float = 10.0) -> bool:
        """Block until at least ``count`` batch requests have arrived, answered or not (a
        request held by an injected delay counts at once); False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._n_arrived >= count, timeout)

    def wait_for_requests(self, count: int, timeout: float = 10.0) -> bool:
        """Block until at least ``count`` batch requests were handled; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._n_requests >= count, timeout)

    # -- request handling -----------------------------------------------------------------

    def _finish(
        self,
        handler: _Handler,
        key: str | None,
        status: int,
        n_items: int,
        nbytes: int,
        received_at: float,
        fault: FaultKind | None = None,
    ) -> None:
        """Record a request that accepted nothing (called before answering it)."""
        rec = (
            self._make_record(handler, key, status, n_items, nbytes, received_at, 0, fault)
            if self._record
            else None
        )
        with self._cond:
            self._n_requests += 1
            if rec is not None:
                self._requests.append(rec)
            self._cond.notify_all()

    @staticmethod
    def _make_record(
        handler: _Handler,
        key: str | None,
        status: int,
        n_items: int,
        nbytes: int,
        received_at: float,
        n_accepted: int,
        fault: FaultKind | None = None,
    ) -> RecordedRequest:
        headers = {name.lower(): value for name, value in handler.headers.items()}
        try:
            retry_count = int(headers.get("x-retry-count", "0"))
        except ValueError:
            retry_count = 0
        return RecordedRequest(
            write_key=key,
            status=status,
            n_items=n_items,
            nbytes=nbytes,
            headers=headers,
            received_at=received_at,
            retry_count=retry_count,
            n_accepted=n_accepted,
            fault=fault,
        )

    def _handle_batch(self, handler: _Handler) -> None:
        received_at = time.monotonic()
        with self._cond:
            self._n_arrived += 1
            self._cond.notify_all()
        auth = handler.headers.get("Authorization")
        header_key = _basic_user(auth) if auth is not None else None
        raw = handler._read_body()
        if raw is None:
            handler.close_connection = True
            self._finish(handler, header_key, 400, 0, 0, received_at)
            handler._send(400, _error_body("request_too_large", "request body unreadable"))
            return
        nbytes = len(raw)

        doc: Any = None
        data_len = 0
        parse_error: _ParseError | None = None
        try:
            doc, data_len = _decode_body(raw, handler.headers.get("Content-Encoding"))
        except _ParseError as exc:
            parse_error = exc
        items: list[Any] | None = None
        if parse_error is None:
            batch = doc.get("batch") if isinstance(doc, dict) else None
            if isinstance(batch, list):
                items = batch
            else:
                parse_error = _ParseError(
                    "invalid_request", "body must be a JSON object with a 'batch' list"
                )
        n_items = len(items) if items is not None else 0

        key: str | None
        if auth is not None:
            key = header_key
        else:
            body_key = doc.get("writeKey") if isinstance(doc, dict) else None
            key = body_key if isinstance(body_key, str) and body_key else None

        fault = self._next_fault(key)
        if fault is not None:
            if fault.seconds:
                time.sleep(fault.seconds)
            if fault.kind == "drop":
                handler.close_connection = True
                self._finish(handler, key, 0, n_items, nbytes, received_at, "drop")
                return
            if fault.kind == "status":
                extra: list[tuple[str, str]] = []
                if fault.retry_after is not None:
                    extra.append(("Retry-After", str(fault.retry_after)))
                if fault.x_ratelimit_reset is not None:
                    extra.append(("X-RateLimit-Reset", str(fault.x_ratelimit_reset)))
                slug = _status_code_slug(fault.status)
                body = _error_body(slug, f"injected fault: HTTP {fault.status}")
                self._finish(handler, key, fault.status, n_items, nbytes, received_at, "status")
                handler._send(fault.status, body, extra)
                return
        if self._latency:
            time.sleep(self._latency)

        if not self._key_ok(key):
            message = "missing write key" if key is None else "invalid or revoked write key"
            self._finish(handler, key, 401, n_items, nbytes, received_at)
            handler._send(401, _error_body("unauthorized", message))
            return
        if parse_error is not None or items is None:
            err = parse_error or _ParseError("invalid_request", "invalid body")
            self._finish(handler, key, 400, n_items, nbytes, received_at)
            handler._send(400, _error_body(err.code, err.message))
            return

        too_many = n_items > MAX_BATCH_ITEMS
        reasons: list[str | None]
        if too_many:
            reasons = ["too_many_items"] * n_items
        else:
            check_size = data_len > MAX_ITEM_BYTES
            reasons = []
            for item in items:
                if check_size and len(orjson.dumps(item)) > MAX_ITEM_BYTES:
                    reasons.append("too_large")
                else:
                    problem = _item_problem(item)
                    if problem is None and self._refuse is not None:
                        problem = self._refuse(item)
                    reasons.append(problem)
        if self._strict:
            bad = next((i for i, r in enumerate(reasons) if r is not None), None)
            if bad is not None:
                message = (
                    f"batch has {n_items} items; at most {MAX_BATCH_ITEMS} allowed"
                    if too_many
                    else f"batch item {bad}: {reasons[bad]}"
                )
                self._finish(handler, key, 400, n_items, nbytes, received_at)
                handler._send(400, _error_body("invalid_request", message))
                return

        record = self._record
        n_new = 0
        with self._cond:
            ids = self._ids
            for item, reason in zip(items, reasons, strict=True):
                if reason is not None:
                    self._n_dropped += 1
                    if record:
                        self._dropped.append(DroppedEvent(reason, item, key))
                    continue
                mid = item["messageId"]
                if mid in ids:
                    self._n_duplicates += 1
                    continue
                ids.add(mid)
                n_new += 1
                if record:
                    self._accepted.append(item)
                    self._accepted_keys.append(key)
            self._n_accepted += n_new
            self._n_requests += 1
            if record:
                self._requests.append(
                    self._make_record(handler, key, 200, n_items, nbytes, received_at, n_new)
                )
            self._cond.notify_all()
        handler._send(200, _OK_BODY)


if pytest is not None:

    @pytest.fixture
    def local_segment() -> Iterator[LocalSegment]:
        """A started :class:`LocalSegment` accepting any write key; stopped after the test."""
        with LocalSegment() as server:
            yield server

    __all__ += ["local_segment"]


# -- process mode ---------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Serve as a process: print ``LISTENING <url>``, stop on stdin EOF, SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(
        prog="python -m selligent_segment.testing",
        description="Local Segment /v1/batch server for tests and benchmarks.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument(
        "--write-key",
        action="append",
        dest="write_keys",
        help="accept only these keys (repeatable; default: any non-empty key)",
    )
    parser.add_argument("--fault-mix", default=None, help="JSON fault mix, as for POST /_faults")
    parser.add_argument("--strict", action="store_true", help="answer 400 to invalid items")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before answering")
    parser.add_argument("--ignore-stdin", action="store_true", help="do not stop when stdin closes")
    args = parser.parse_args(argv)

    plan: FaultPlan | None = None
    outage: int | None = None
    if args.fault_mix:
        try:
            obj = orjson.loads(args.fault_mix)
            plan = FaultPlan.from_json(obj)
        except (orjson.JSONDecodeError, ValueError, TypeError) as exc:
            parser.error(f"--fault-mix: {exc}")
        raw_outage = obj.get("outage")
        if isinstance(raw_outage, int) and not isinstance(raw_outage, bool):
            outage = raw_outage

    server = LocalSegment(
        host=args.host,
        port=args.port,
        write_keys=args.write_keys,
        faults=plan,
        latency=args.latency,
        strict=args.strict,
        record_events=False,
    )
    if outage is not None:
        server.outage(outage, retry_after=plan.retry_after if plan else None)
    stop = threading.Event()

    def _on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)

    if not args.ignore_stdin and sys.stdin is not None:

        def _watch_stdin() -> None:
            with contextlib.suppress(OSError, ValueError):
                fd = sys.stdin.fileno()
                while os.read(fd, 65536):
                    pass
            stop.set()

        threading.Thread(target=_watch_stdin, name="stdin-watch", daemon=True).start()

    with server:
        sys.stdout.write(f"LISTENING {server.url}\n")
        sys.stdout.flush()
        while not stop.wait(0.5):
            pass
    return 0
