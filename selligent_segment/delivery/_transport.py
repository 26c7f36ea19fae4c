"""One HTTP POST of one batch to Segment's ``/v1/batch``, and what came of it.

Messages arrive already serialised (one compact JSON object each); the request body is
built by joining those bytes, never by serialising again. The transport does not retry:
it reports a :class:`Response` whose :class:`~selligent_segment.delivery._retry.Outcome` tells
the caller what to do, and never raises for a network failure.

Why urllib3 rather than ``requests.Session``: one ``PoolManager`` is documented thread-safe
and costs about half as much per request. Measured on this project's 2-core machine
against a keep-alive ``http.server`` on 127.0.0.1 in another process (3,000 POSTs per run,
3 runs, figures are per request)::

    body      threads  urllib3 PoolManager        requests.Session
    1 KB      1        wall 0.54-0.71 ms, CPU 0.38-0.49 ms   wall 1.35-1.46 ms, CPU 1.15-1.26 ms
    1 KB      4        wall 0.51-0.63 ms, CPU 0.37-0.63 ms   wall 1.32-1.44 ms, CPU 1.14-1.21 ms
    60 KB     1        wall 0.63-0.71 ms, CPU 0.42-0.56 ms   wall 1.35-1.46 ms, CPU 1.11-1.23 ms
    60 KB     4        wall 0.66-0.82 ms, CPU 0.45-0.55 ms   wall 1.43-1.71 ms, CPU 1.18-1.37 ms

(CPU is the client process only.) urllib3 opens and pools the connections (TCP, TLS and
its verification, proxies and their tunnels). On a connection it already holds open, kept
alive from an earlier request, the request is written here, the very bytes urllib3 writes,
and the answer read with ``http.client``'s own parser (:meth:`HttpTransport.
_on_kept_connection`), its plain header lines without the email parser
(:class:`_QuickHeadersResponse`, ``_shortcuts.http_headers``); a direct URL's pool and path
are worked out once (:meth:`HttpTransport._target`). Every answer, failure and timeout comes
to the same :class:`Response` as through urllib3 (``tests/test_transport_answers.py``). A
post of 20 messages to a loopback server, in instructions of client CPU (``python -m
benchmarks.instructions --only post``): 975,885 through urllib3's ``PoolManager``, 673,116
with the pool looked up once and the quick header parse, 325,727 written here.

Aside: a test server that writes headers and body in two ``send`` calls without
``TCP_NODELAY`` costs 40 ms per request (Nagle against delayed ACK); urllib3 sets
``TCP_NODELAY`` on its side by default.

Gzip level: :data:`GZIP_LEVEL` (3), measured on realistic email track messages (uuid ids,
addresses, URLs); compressed size as a share of the original, and time per batch::

    level                      1        3        5        6        9
    477 KB batch (800 msgs)   16.3 %   15.5 %   13.9 %   13.7 %   13.0 %
                              2.6 ms   2.8 ms   5.2 ms   5.9 ms  14.3 ms
     60 KB batch (100 msgs)   17.1 %   16.3 %   14.8 %   14.6 %   14.0 %
                              0.27 ms  0.29 ms  0.58 ms  0.66 ms  1.43 ms

Level 3 costs what level 1 costs and compresses better; level 5 halves the throughput to
save another 1.6 % of the original size.
"""

from __future__ import annotations

import base64
import contextlib
import encodings.idna
import errno
import gzip as _gzip
import http.client
import io
import json
import logging
import math
import os
import re
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Protocol
from urllib.parse import quote

import attrs
import urllib3
from urllib3.util.connection import allowed_gai_family, create_connection

from selligent_segment._errors import SelligentSegmentError, writable
from selligent_segment._limits import (
    BATCH_PATH,
    MAX_BATCH_BYTES,
    MAX_BATCH_MESSAGES,
    MAX_MESSAGE_BYTES,
)
from selligent_segment._process_life import in_library_thread
from selligent_segment._shortcuts import format_timestamp, http_headers
from selligent_segment._version import __version__
from selligent_segment.delivery._proxy import Proxy, ca_bundle, routes
from selligent_segment.delivery._retry import (
    Outcome,
    classify,
    parse_rate_limit_reset,
    parse_retry_after,
)

if TYPE_CHECKING:
    from urllib3._base_connection import BaseHTTPConnection

__all__ = [
    "BATCH_PATH",
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_DEADLINE",
    "DEFAULT_READ_TIMEOUT",
    "GZIP_LEVEL",
    "MAX_BATCH_BYTES",
    "MAX_BATCH_MESSAGES",
    "MAX_MESSAGE_BYTES",
    "USER_AGENT",
    "Answer",
    "BatchBodies",
    "BatchTooLarge",
    "HttpTransport",
    "Response",
    "Transport",
    "batch_size",
    "build_body",
    "envelope_overhead",
    "error_text",
    "format_sent_at",
    "scrub",
]

#: ``User-Agent`` of every request.
USER_AGENT = f"selligent-segment/{__version__}"
#: gzip ``compresslevel`` used when compression is on (see the measurement above).
GZIP_LEVEL = 3
#: Seconds to establish a connection (TCP and TLS).
DEFAULT_CONNECT_TIMEOUT = 5.0
#: Seconds to wait for each read of the response.
DEFAULT_READ_TIMEOUT = 15.0
#: Seconds one whole request may take (connect, send, status line, headers, body), unless
#: ``connect_timeout + read_timeout`` is longer (see :class:`HttpTransport`).
DEFAULT_DEADLINE = 30.0

_log = logging.getLogger("selligent_segment.transport")

# urllib3 checks every host with ``str.encode("idna")``, which imports encodings.idna (and
# stringprep) on a process's first connection. Imported lazily inside a sender thread that
# competes for the GIL with a busy caller and the encoder, that took 150-480 ms of the
# first request in the end-to-end benchmark; imported here it costs about 1 ms, once.
_WARM_IMPORTS = (encodings.idna,)

_PREFIX = b'{"batch":['
_SENT_AT = b'],"sentAt":"'
_WRITE_KEY = b'","writeKey":'
_SUFFIX = b"}"
_SENT_AT_LEN = len("2024-01-01T00:00:00.000Z")
_FIXED_OVERHEAD = len(_PREFIX) + len(_SENT_AT) + _SENT_AT_LEN + len(_WRITE_KEY) + len(_SUFFIX)

# An error body is read up to this size; a longer one closes the connection instead of
# being drained (a misconfigured proxy can answer with megabytes of HTML).
_MAX_RESPONSE_BODY = 16 * 1024
_MAX_ERROR_CHARS = 300
_REDACTED = "[redacted]"
_AUTH_TOKEN = re.compile(r"(?i)\b(basic|bearer)\s+[A-Za-z0-9+/=._~-]+")
_SPACES = re.compile(r"\s+")

# What a failed exchange can raise; all of them mean "no answer we can act on".
# LocationValueError is a ValueError raised for a malformed URL: a bug, not the network.
_NETWORK_ERRORS = (urllib3.exceptions.HTTPError, http.client.HTTPException, OSError)


class BatchTooLarge(SelligentSegmentError, ValueError):
    """A batch breaks one of Segment's limits and was not sent.

    ``limit`` is ``"messages"``, ``"message_bytes"`` or ``"batch_bytes"``; ``size`` and
    ``maximum`` are the offending figure and the limit; ``index`` is the position of the
    oversized message for ``"message_bytes"``, else ``None``. Batchers are expected to
    check before sending, so this signals a bug in the caller.
    """

    def __init__(self, limit: str, size: int, maximum: int, index: int | None = None) -> None:
        self.limit = limit
        self.size = size
        self.maximum = maximum
        self.index = index
        where = "" if index is None else f" (message {index})"
        super().__init__(f"{limit}{where}: {size} exceeds the limit of {maximum}")


def _json_string(value: str) -> bytes:
    """``value`` as a JSON string literal, ASCII only (non-ASCII and controls escaped)."""
    return json.dumps(value, ensure_ascii=True).encode("ascii")


def envelope_overhead(write_key: str) -> int:
    """Bytes the envelope adds to a batch besides the message bodies and their commas.

    Exact for every key: ``len(build_body(bodies, key, t)) == envelope_overhead(key) +
    sum(map(len, bodies)) + len(bodies) - 1`` for any non-empty ``bodies``, so a batcher can
    check :data:`MAX_BATCH_BYTES` before adding a message.
    """
    return _FIXED_OVERHEAD + len(_json_string(write_key))


def batch_size(write_key: str, message_count: int, message_bytes: int) -> int:
    """Exact size of the body :func:`build_body` makes for ``message_count`` messages
    totalling ``message_bytes`` bytes (the commas between them included)."""
    return envelope_overhead(write_key) + message_bytes + max(message_count - 1, 0)


def format_sent_at(sent_at: datetime) -> str:
    """``sent_at`` in UTC as ISO-8601 with milliseconds and ``Z``, always 24 characters.

    A naive datetime is refused: the clock-skew correction Segment does with ``sentAt``
    would silently shift every event by the host's UTC offset.
    """
    if sent_at.tzinfo is None or sent_at.utcoffset() is None:
        raise ValueError("sent_at must be timezone-aware")
    return format_timestamp(sent_at)


def _joined(bodies: Sequence[bytes]) -> bytes:
    """``bodies`` checked against Segment's per-batch limits and joined with commas (the
    inside of the ``batch`` array). Raises :class:`BatchTooLarge` or ``ValueError`` (an
    empty batch)."""
    count = len(bodies)
    if count == 0:
        raise ValueError("a batch needs at least one message")
    if count > MAX_BATCH_MESSAGES:
        raise BatchTooLarge("messages", count, MAX_BATCH_MESSAGES)
    if max(map(len, bodies)) > MAX_MESSAGE_BYTES:  # one C-level pass in the common case
        for index, item in enumerate(bodies):
            if len(item) > MAX_MESSAGE_BYTES:
                raise BatchTooLarge("message_bytes", len(item), MAX_MESSAGE_BYTES, index)
    return b",".join(bodies)


class BatchBodies(tuple[bytes, ...]):
    """The message bodies of one batch (a tuple of bytes, usable wherever bodies are)
    that keep their checked, comma-joined array once :func:`build_body` has built it:
    the same batch sent again is not checked or joined again. The bytes are the same
    as for a plain sequence of the same bodies (a test proves it)."""

    _array: bytes | None = None

    def array(self) -> bytes:
        """The bodies checked and joined (see :func:`build_body`), built on first use."""
        array = self._array
        if array is None:
            array = self._array = _joined(self)
        return array


def build_body(bodies: Sequence[bytes], write_key: str, sent_at: datetime) -> bytes:
    """The exact request body for ``bodies`` (each one message's compact JSON), by joining
    bytes: ``{"batch":[m1,m2,...],"sentAt":"<ISO ms Z>","writeKey":"<key>"}``.

    Pure: the same arguments always give the same bytes. Raises :class:`BatchTooLarge`
    when a limit is broken and ``ValueError`` for an empty batch or a naive ``sent_at``.
    The messages themselves are not parsed or checked. :class:`BatchBodies` keep their
    joined array, so a batch sent again reuses it; only ``sentAt`` is new.
    """
    array = bodies.array() if isinstance(bodies, BatchBodies) else _joined(bodies)
    body = b"".join(
        (
            _PREFIX,
            array,
            _SENT_AT,
            format_sent_at(sent_at).encode("ascii"),
            _WRITE_KEY,
            _json_string(write_key),
            _SUFFIX,
        )
    )
    if len(body) > MAX_BATCH_BYTES:
        raise BatchTooLarge("batch_bytes", len(body), MAX_BATCH_BYTES)
    return body


def _basic_token(write_key: str) -> str:
    return base64.b64encode(f"{write_key}:".encode()).decode("ascii")


#: A word holding an ``@``: an email address (whatever its characters, cut or quoted),
#: with what is glued to it (a query's ``to=``, a second address after ``&``). A match
#: starts only where a word starts (the lookbehind), so this is linear on any text; no
#: possessive quantifier, which Python 3.10 does not have.
_WORD = r"[^\s\"'<>()\[\],;]"
_ADDRESS = re.compile(rf'(?<!{_WORD})(?:"[^"\s]{{1,64}}"|{_WORD}+)@{_WORD}+')  # or "quoted"@
_MASKED = "[address]"


def scrub(text: str, write_key: str) -> str:
    """``text`` made safe to log: every form of the write key (raw, JSON-escaped,
    URL-quoted, as a Basic token) and any ``Basic``/``Bearer`` credential replaced by
    ``[redacted]`` (and a text that ends inside a key, four characters or more of it),
    every word holding an ``@`` (an email address) replaced by ``[address]``, whitespace
    collapsed, control characters and lone surrogates replaced by U+FFFD (so
    every spool and log can write it), cut to 300 characters."""
    if write_key:
        forms = {
            write_key,
            _json_string(write_key).decode("ascii")[1:-1],
            quote(write_key, safe=""),
            _basic_token(write_key),
            _basic_token(write_key).rstrip("="),
        }
        for form in sorted(forms, key=len, reverse=True):
            if form:
                text = text.replace(form, _REDACTED)
        text = _without_cut_key(text.rstrip(), forms)
    text = _AUTH_TOKEN.sub(lambda m: f"{m.group(1)} {_REDACTED}", text)
    if "@" in text:  # an answer may echo the refused request, recipients included
        text = _ADDRESS.sub(_MASKED, text)
    text = writable(_SPACES.sub(" ", text).strip())
    if len(text) > _MAX_ERROR_CHARS:
        text = text[: _MAX_ERROR_CHARS - 3] + "..."
    return text


#: The shortest start of a key form at the end of a text that is taken for a key cut off.
_CUT_KEY_CHARS = 4


def _without_cut_key(text: str, forms: set[str]) -> str:
    """``text`` whose end is the start of a key form (a body read up to a limit that
    ended inside a key), of :data:`_CUT_KEY_CHARS` characters or more, redacted."""
    for form in forms:
        for size in range(len(form) - 1, _CUT_KEY_CHARS - 1, -1):
            if text.endswith(form[:size]):
                return text[:-size] + _REDACTED
    return text


def _outcome_default(response: Response) -> Outcome:
    return classify(response.status)


@attrs.frozen
class Response:
    """What one POST came to; holds no key and no message content.

    ``status`` is the HTTP status, or ``None`` when no answer arrived (network error,
    timeout, dropped connection). ``retry_after`` is the parsed ``Retry-After`` in seconds
    (capped at 300), or ``None``; ``rate_limit_reset`` the parsed ``X-RateLimit-Reset``,
    likewise. ``error`` is a short key-free description of a failure (Segment's
    ``code: message``, or the exception class and text), ``None`` on 2xx. ``outcome`` is
    ``classify(status)`` unless given.

    ``items`` is for a transport whose answer settles some messages of the batch on their
    own (a partial success): message index -> ``None`` (delivered) or the reason it was
    refused for good; the messages it does not name follow ``outcome``. ``requests`` is
    how many HTTP requests the post made (each one costs a token of the key's rate cap).
    """

    status: int | None
    retry_after: float | None = None
    error: str | None = None
    outcome: Outcome = attrs.field(default=attrs.Factory(_outcome_default, takes_self=True))
    rate_limit_reset: float | None = attrs.field(default=None, kw_only=True)
    items: Mapping[int, str | None] | None = attrs.field(default=None, kw_only=True)
    requests: int = attrs.field(default=1, kw_only=True)


# -- the overall deadline of a request ------------------------------------------------------
#
# urllib3's read timeout bounds each socket read, and Timeout(total=) is turned into
# per-read timeouts once per request: neither stops an answer dripping one byte at a time
# (measured with urllib3 2.8: Timeout(total=1) let a 0.2 s-per-byte status line run 16 s).
# So one daemon thread per process keeps the requests in flight and, when one is overdue,
# shuts its socket down (both ways), which wakes the blocked send or recv at once; the
# request then fails and post() reports the deadline. The pools below tell the watchdog
# which connection a request uses: _get_conn (on the posting thread) attaches it,
# _put_conn detaches it before it can go back to the pool, so a connection another request
# has taken is never shut down, and an overdue one is closed rather than pooled.
# Connecting cannot be cut that way (the socket is not the connection's until the TCP
# connect returns, and ssl detaches it while the TLS handshake runs), so the connections
# below give the TCP connect, then the handshake, only the time left (Python bounds a
# whole handshake by the socket's timeout). Only the name lookup is not bounded here.
# Cost: the bookkeeping alone takes about 1.3 us per request (two uncontended locks, a
# thread-local). Posting 10-message batches to a keep-alive loopback server in another
# process, 12 interleaved rounds of 1,500 posts, one thread: client CPU per post 262 us
# without the deadline, 265 us with it (medians).

# How often the watchdog looks again at an overdue request it has not cut off yet (no
# connection yet, or a TLS socket that replaced the plain one while it was being shut).
_OVERDUE_POLL = 0.05


class _Deadline:
    """One request's deadline (``time.monotonic``), its connection, whether it expired."""

    __slots__ = ("at", "conn", "expired", "shot")

    def __init__(self, at: float) -> None:
        self.at = at
        self.conn: object | None = None
        self.expired = False
        self.shot: object | None = None

    def passed(self) -> bool:
        """The watchdog acted on it, or the time is up (a timeout clipped to the deadline
        can fire just before the watchdog wakes)."""
        return self.expired or time.monotonic() >= self.at

    def clip(self, seconds: float) -> float:
        """``seconds`` (a connect timeout) cut to the time left, at least 1 ms."""
        return max(min(seconds, self.at - time.monotonic()), 0.001)


class _Watchdog:
    """One daemon thread per process that shuts down the socket of each overdue request.

    ``start``/``finish`` cost one uncontended lock each; the thread sleeps until the
    earliest deadline it knows of and is woken only when a request starts with an earlier
    one (in steady traffic, about once per deadline period), never per request.
    """

    def __init__(self) -> None:
        self._reset()
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        # Also after fork: the child has no watchdog thread and maybe a lock held by a
        # thread that does not exist there.
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._active: set[_Deadline] = set()
        self._wake_at = math.inf
        self._thread: threading.Thread | None = None

    def start(self, seconds: float) -> _Deadline:
        """Register a request that must end within ``seconds`` from now."""
        entry = _Deadline(time.monotonic() + seconds)
        with self._lock:
            self._active.add(entry)
            if entry.at < self._wake_at:
                self._wake_at = entry.at
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=in_library_thread(self._run),
                        name="selligent-segment-deadline",
                        daemon=True,
                    )
                    self._thread.start()
                else:
                    self._changed.notify()
        return entry

    def detach(self, entry: _Deadline, conn: object) -> bool:
        """``conn`` leaves ``entry``'s request (back to the pool): never shut it down for
        ``entry`` again. True when ``entry`` has expired (``conn`` must then be closed)."""
        with self._lock:
            if entry.conn is conn:
                entry.conn = None
            return entry.expired

    def finish(self, entry: _Deadline) -> None:
        """The request of ``entry`` is over, however it ended."""
        with self._lock:
            self._active.discard(entry)
            entry.conn = None

    def _run(self) -> None:
        lock, changed, active = self._lock, self._changed, self._active
        with lock:
            while True:
                now = time.monotonic()
                wake_at = math.inf
                for entry in active:
                    if entry.at <= now:
                        entry.expired = True
                        _shut_down(entry)
                        wake_at = min(wake_at, now + _OVERDUE_POLL)
                    elif entry.at < wake_at:
                        wake_at = entry.at
                self._wake_at = wake_at
                changed.wait(None if wake_at == math.inf else wake_at - now)


def _shut_down(entry: _Deadline) -> None:
    """Shut down both ways the socket ``entry``'s connection uses now (watchdog, locked)."""
    sock = getattr(entry.conn, "sock", None)
    # Through an https:// proxy, urllib3's SSLTransport (TLS in TLS) wraps the socket to
    # the proxy: shutting that one down ends both.
    sock = getattr(sock, "socket", sock)
    if isinstance(sock, socket.socket) and sock is not entry.shot:
        entry.shot = sock
        # socket.socket's own shutdown, also for an SSLSocket: SSLSocket.shutdown drops its
        # TLS state, and the posting thread's next recv would read raw TLS bytes. OSError:
        # already closed or not connected, so the request is failing anyway.
        with contextlib.suppress(OSError):
            socket.socket.shutdown(sock, socket.SHUT_RDWR)


_WATCHDOG = _Watchdog()
# The deadline of the request the current thread is posting, for the pools below.
_posting = threading.local()


#: Hosts (``scheme://host:port``) a ``PoolManager`` keeps a connection pool for; the least
#: recently used one beyond is dropped.
_POOLS_PER_MANAGER = 10
#: URLs whose way out :meth:`HttpTransport._target` keeps before it starts again.
_MAX_TARGETS = 256
# A request body up to this size goes out with its headers in one send (copied once).
_JOIN_BELOW = 64 * 1024
# Errors of a send after which urllib3 still reads the answer (with BrokenPipeError).
_ANSWER_MAY_FOLLOW = frozenset((errno.EPROTOTYPE, errno.ECONNRESET))
# What _request_head writes itself; anything else goes through urllib3 (http.client).
_PLAIN_HOST = re.compile(r"[0-9A-Za-z.:_-]+")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_PLAIN_VALUE = re.compile(r"[\t -~]*")
# Headers urllib3 writes itself unless given (then not), or frames the body by.
_URLLIB3_WRITES = frozenset(("host", "content-length", "accept-encoding", "transfer-encoding"))
_MAX_HEADER_LINE = 65536  # http.client's _MAXLINE
_MAX_HEADERS = 100  # http.client's _MAXHEADERS


class _QuickHeadersResponse(http.client.HTTPResponse):
    """``http.client``'s answer with its header block made by
    :func:`~selligent_segment._shortcuts.http_headers` instead of the email parser.

    :meth:`begin` is the standard library's (CPython 3.10 to 3.13), with that one call
    changed; ``tests/test_transport_answers.py`` reads generated answers with both classes
    and compares every attribute and the body read after. And one fix: every interim
    answer (``1xx`` but ``101``, such as ``103 Early Hints``) is skipped, as RFC 9110
    (15.2) asks of a client, where the standard library skips ``100 Continue`` only and
    would take a ``103`` for the answer (a batch sent again for nothing, then dropped
    once its retries ran out).
    """

    def begin(self) -> None:
        if self.headers is not None:
            return  # already begun
        while True:
            version, status, reason = self._read_status()
            if not 100 <= status < 200 or status == http.client.SWITCHING_PROTOCOLS:
                break
            _header_lines(self.fp)  # the header block of an interim answer, skipped
        self.code = self.status = status
        self.reason = reason.strip()
        if version in ("HTTP/1.0", "HTTP/0.9"):
            self.version = 10
        elif version.startswith("HTTP/1."):
            self.version = 11
        else:
            raise http.client.UnknownProtocol(version)
        self.headers = self.msg = http_headers(_header_lines(self.fp))
        encoding = self.headers.get("transfer-encoding")
        self.chunked = bool(encoding and encoding.lower() == "chunked")
        if self.chunked:
            self.chunk_left = None
        self.will_close = self._check_close()
        self.length = None
        length = self.headers.get("content-length")
        if length and not self.chunked:
            try:
                self.length = int(length)
            except ValueError:
                self.length = None
            else:
                if self.length < 0:
                    self.length = None
        if (
            status in (http.client.NO_CONTENT, http.client.NOT_MODIFIED)
            or 100 <= status < 200
            or self._method == "HEAD"
        ):
            self.length = 0
        if not self.will_close and not self.chunked and self.length is None:
            self.will_close = True


def _header_lines(fp: io.BufferedIOBase) -> list[bytes]:
    """The lines of a header block up to its blank line (or the end of the stream), with
    ``http.client``'s limits and errors (``http.client._read_headers``)."""
    lines: list[bytes] = []
    while True:
        line = fp.readline(_MAX_HEADER_LINE + 1)
        if len(line) > _MAX_HEADER_LINE:
            raise http.client.LineTooLong("header line")
        lines.append(line)
        if len(lines) > _MAX_HEADERS:
            raise http.client.HTTPException(f"got more than {_MAX_HEADERS} headers")
        if line in (b"\r\n", b"\n", b""):
            return lines


class _DeadlineHTTPConnection(urllib3.connection.HTTPConnection):
    """An ``HTTPConnection`` whose TCP connect, then TLS handshake, get only the time left,
    and whose answers' headers are read by :class:`_QuickHeadersResponse`.

    The watchdog cannot cut a connect (there is no socket to shut down yet), so each
    address of the host is tried with only the time left, and none once the deadline
    has passed (urllib3 gives each the whole connect timeout: a host of seven addresses
    that drop packets took 35 s); after a proxy's ``CONNECT`` the TLS handshake too gets
    only what is left then."""

    response_class = _QuickHeadersResponse
    _connect_limit: float | None = None  # the connect timeout of the request connecting

    def _new_conn(self) -> socket.socket:
        entry: _Deadline | None = getattr(_posting, "entry", None)
        limit = self.timeout  # the connect timeout, set by urlopen
        if entry is None or not isinstance(limit, (int, float)):
            return super()._new_conn()
        self._connect_limit = limit
        try:
            found = socket.getaddrinfo(
                self._dns_host, self.port, allowed_gai_family(), socket.SOCK_STREAM
            )
        except socket.gaierror as exc:  # as urllib3 says it, without a second lookup
            raise urllib3.exceptions.NameResolutionError(self.host, self, exc) from exc
        except (OSError, UnicodeError):  # urllib3 tries again and raises its own error
            found = []
        # Each address as text that keeps an IPv6 zone ("fe80::1%eth0").
        addresses = dict.fromkeys(
            socket.getnameinfo(info[4], socket.NI_NUMERICHOST | socket.NI_NUMERICSERV)[0]
            for info in found
        )
        if not addresses:  # not found: urllib3's own connect raises its own error
            self.timeout = entry.clip(limit)
            return super()._new_conn()
        # The addresses found, not the name: urllib3's connect would look it up again
        # (twice the time a slow resolver takes, which nothing else bounds).
        sock = self._connect_within(list(addresses), entry, limit)
        if entry.passed():  # the lookup or the connect took the time: send nothing now
            sock.close()
            raise urllib3.exceptions.ConnectTimeoutError(
                self, f"Connection to {self.host} timed out: the request's deadline passed"
            )
        sock.settimeout(entry.clip(limit))  # what is left for the TLS handshake
        return sock

    def _connect_within(
        self, addresses: list[str], entry: _Deadline, limit: float
    ) -> socket.socket:
        """urllib3's connect (its errors, its audit event, the host's name in both), but
        each address tried with only the time left, and none once the deadline passed."""
        failure: urllib3.exceptions.ConnectTimeoutError | None = None
        for address in addresses:
            if failure is not None and entry.passed():
                break
            self.timeout = timeout = entry.clip(limit)
            try:
                sock = create_connection(
                    (address, self.port),
                    timeout,
                    source_address=self.source_address,
                    socket_options=self.socket_options,
                )
            except TimeoutError as exc:  # socket.timeout
                failure = urllib3.exceptions.ConnectTimeoutError(
                    self, f"Connection to {self.host} timed out. (connect timeout={timeout})"
                )
                failure.__cause__ = exc
            except OSError as exc:
                failure = urllib3.exceptions.NewConnectionError(
                    self, f"Failed to establish a new connection: {exc}"
                )
                failure.__cause__ = exc
            else:
                sys.audit("http.client.connect", self, self.host, self.port)
                return sock
        assert failure is not None
        raise failure

    def _tunnel(self) -> None:
        super()._tunnel()
        entry: _Deadline | None = getattr(_posting, "entry", None)
        if entry is not None and self._connect_limit is not None and self.sock is not None:
            self.sock.settimeout(entry.clip(self._connect_limit))  # left for the handshake


class _DeadlineHTTPSConnection(_DeadlineHTTPConnection, urllib3.connection.HTTPSConnection):
    """The HTTPS form of :class:`_DeadlineHTTPConnection`."""


class _DeadlineHTTPPool(urllib3.HTTPConnectionPool):
    """An ``HTTPConnectionPool`` that tells the watchdog which connection a post uses."""

    ConnectionCls = _DeadlineHTTPConnection

    def _get_conn(self, timeout: float | None = None) -> BaseHTTPConnection:
        conn = super()._get_conn(timeout)
        entry: _Deadline | None = getattr(_posting, "entry", None)
        if entry is not None:
            entry.conn = conn  # read by the watchdog under its lock; one store is atomic
        return conn

    def _put_conn(self, conn: BaseHTTPConnection | None) -> None:
        entry: _Deadline | None = getattr(_posting, "entry", None)
        if conn is not None and entry is not None and _WATCHDOG.detach(entry, conn):
            conn.close()  # overdue: its socket is shut down, the pool gets a closed one
        super()._put_conn(conn)


class _DeadlineHTTPSPool(_DeadlineHTTPPool, urllib3.HTTPSConnectionPool):
    """The HTTPS form of :class:`_DeadlineHTTPPool`."""

    ConnectionCls = _DeadlineHTTPSConnection


class Transport(Protocol):
    """What the senders need of a transport: the seam a test (or another HTTP stack)
    plugs into with ``Emitter(transport=...)``. :class:`HttpTransport` (urllib3) is the
    default; :class:`selligent_segment.testing.MockTransport` answers from a function."""

    def post(
        self, endpoint: str, write_key: str, bodies: Sequence[bytes], *, retry_count: int = 0
    ) -> Response:
        """Send ``bodies`` as one batch; never raise for a network failure (report it as
        a :class:`Response` with ``status=None`` and :attr:`Outcome.RETRY`)."""
        ...

    def close(self) -> None:
        """Release connections; the transport is not used afterwards."""
        ...


class HttpTransport:
    """Posts batches over keep-alive connections opened and pooled by one thread-safe
    ``urllib3.PoolManager`` (see the module's docstring for what is done without it).

    Safe to share between threads: ``max_connections`` connections are kept alive per host,
    so set it to the number of threads that post concurrently (more threads still work, the
    extra connections are just not kept). ``connect_timeout`` bounds connecting (TCP and
    TLS), ``read_timeout`` each read of the answer, and ``deadline`` the whole request:
    connecting, sending, the status line, the headers and the body of the answer together
    (default :data:`DEFAULT_DEADLINE`, or ``connect_timeout + read_timeout`` when longer;
    only a slow DNS lookup is left to the system resolver). An overdue request's connection
    is shut down and closed, never pooled, and ``post`` reports ``status=None``,
    :attr:`Outcome.RETRY` (or, when the status line had arrived, what that status means)
    with an error text saying the deadline was exceeded. TLS certificates are always verified
    (``ca_certs``, else ``$SSL_CERT_FILE``, else ``$REQUESTS_CA_BUNDLE``, else certifi's
    bundle); there is no way to turn verification off. urllib3's own retries and
    redirects are off: the library's :class:`RetryPolicy` decides.

    ``proxy``: None (the default) takes the proxy from the environment as ``requests``
    does (``HTTPS_PROXY``/``HTTP_PROXY``/``ALL_PROXY``, lower-case first, and ``NO_PROXY``),
    a URL sends every request through that proxy whatever the environment says, ``False``
    connects directly. An ``https://`` endpoint is reached through a ``CONNECT`` tunnel, so
    the proxy sees neither the write key nor the events. Credentials in the proxy URL go
    as ``Proxy-Authorization`` and appear in no repr, error or log line. A proxy's own
    ``407 Proxy Authentication Required`` is retried, never taken as Segment refusing the
    batch. Both the environment and the CA bundle are read once, here.
    Holds no write key; after a ``fork`` the child opens its own connections instead of
    sharing the parent's.
    """

    def __init__(
        self,
        *,
        max_connections: int = 4,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        read_timeout: float = DEFAULT_READ_TIMEOUT,
        gzip: bool = False,
        ca_certs: str | os.PathLike[str] | None = None,
        deadline: float | None = None,
        proxy: str | bool | None = None,
    ) -> None:
        if isinstance(max_connections, bool) or not isinstance(max_connections, int):
            raise TypeError("max_connections must be an int")
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        if deadline is None:
            deadline = max(DEFAULT_DEADLINE, connect_timeout + read_timeout)
        for name, value in (
            ("connect_timeout", connect_timeout),
            ("read_timeout", read_timeout),
            ("deadline", deadline),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"{name} must be a number of seconds")
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a positive, finite number of seconds")
        self._max_connections = max_connections
        self._deadline = float(deadline)
        self._timeout = urllib3.Timeout(connect=connect_timeout, read=read_timeout)
        # As given (a read timeout of 1 is written "1" in urllib3's error text, as here).
        self._connect_timeout, self._read_timeout = connect_timeout, read_timeout
        self._gzip = bool(gzip)
        self._ca_certs = ca_bundle(ca_certs, setting="ca_certs") or _default_ca_bundle()
        self._routes = routes(proxy)
        self._secrets = tuple(
            secret
            for route in (self._routes.http, self._routes.https)
            if route is not None
            for secret in route.credentials
        )
        # The proxy each endpoint goes through (endpoints are few: cached once each).
        self._chosen: dict[str, Proxy | None] = {}
        self._lock = threading.Lock()
        self._pid = os.getpid()
        # One PoolManager per way out: None for direct, else the proxy's URL.
        self._pools: dict[str | None, urllib3.PoolManager] = {}
        # URL -> where a request for it goes, and the hosts of those URLs (see _target).
        self._targets: dict[str, tuple[urllib3.HTTPConnectionPool, str]] = {}
        self._target_hosts: set[str] = set()
        self._closes = 0  # close() calls: a pool looked up before one is not kept

    def __repr__(self) -> str:
        return (
            f"HttpTransport(max_connections={self._max_connections}, "
            f"connect_timeout={self._connect_timeout}, "
            f"read_timeout={self._read_timeout}, deadline={self._deadline}, "
            f"gzip={self._gzip}, proxy={self._routes.describe()!r})"
        )

    def _new_pool(self, proxy: Proxy | None) -> urllib3.PoolManager:
        settings: dict[str, object] = {
            "num_pools": _POOLS_PER_MANAGER,
            "maxsize": self._max_connections,
            "block": False,
            "retries": False,
            "timeout": self._timeout,
            "cert_reqs": "CERT_REQUIRED",
            "ca_certs": self._ca_certs,
        }
        pool: urllib3.PoolManager
        if proxy is None:
            pool = urllib3.PoolManager(**settings)  # type: ignore[arg-type]
        else:
            # https endpoints through a CONNECT tunnel (use_forwarding_for_https=False).
            pool = urllib3.ProxyManager(
                proxy.url,
                proxy_headers=dict(proxy.headers),
                **settings,  # type: ignore[arg-type]
            )
        pool.pool_classes_by_scheme = {"http": _DeadlineHTTPPool, "https": _DeadlineHTTPSPool}
        return pool

    def _current_pool(self, endpoint: str) -> urllib3.PoolManager:
        if os.getpid() != self._pid:
            with self._lock:
                if os.getpid() != self._pid:
                    # The inherited sockets belong to the parent: abandon them unclosed.
                    self._pools = {}
                    self._targets = {}
                    self._target_hosts = set()
                    self._pid = os.getpid()
        try:
            proxy = self._chosen[endpoint]
        except KeyError:
            proxy = self._chosen[endpoint] = self._routes.for_url(endpoint)
        way = None if proxy is None else proxy.url
        pool = self._pools.get(way)
        if pool is None:
            with self._lock:
                pool = self._pools.get(way)
                if pool is None:
                    pool = self._pools[way] = self._new_pool(proxy)
        return pool

    def _target(self, url: str) -> tuple[urllib3.PoolManager | urllib3.HTTPConnectionPool, str]:
        """Where a request for ``url`` goes, and the URL it names there: on a direct way
        out, the host's connection pool and the path, which ``PoolManager.urlopen`` works
        out from the URL on every request (about a tenth of a request's client CPU), and
        this once per URL; through a proxy, the ``ProxyManager`` and the URL itself.

        The pools kept here are always ones the manager still holds (so none outlives the
        manager's limit of :data:`_POOLS_PER_MANAGER` hosts): they are of at most that many
        hosts, all looked up since the last time this started again, and the manager drops
        its least recently looked-up pool first. It starts again past that many hosts or
        :data:`_MAX_TARGETS` URLs, on ``close()`` and after ``fork``.
        """
        known = self._targets.get(url)
        if known is not None and os.getpid() == self._pid:
            pool, path = known
            if pool.pool is not None:  # else closed
                return pool, path
        origin = _origin(url)
        manager = self._current_pool(origin)
        if self._chosen[origin] is not None:
            return manager, url
        closes = self._closes
        pool = manager.connection_from_url(url)
        path = urllib3.util.parse_url(url).request_uri
        with self._lock:
            if closes == self._closes and self._pools.get(None) is manager:
                if len(self._targets) >= _MAX_TARGETS or (
                    origin not in self._target_hosts
                    and len(self._target_hosts) >= _POOLS_PER_MANAGER
                ):
                    self._targets, self._target_hosts = {}, set()
                self._target_hosts.add(origin)
                self._targets[url] = (pool, path)
        return pool, path

    def _scrub(self, text: str, write_key: str) -> str:
        """:func:`scrub`, and the proxy's credentials too."""
        for secret in self._secrets:
            text = text.replace(secret, _REDACTED)
        return scrub(text, write_key)

    def headers(self, write_key: str, retry_count: int = 0) -> dict[str, str]:
        """The request headers for one POST (without ``Content-Encoding``)."""
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "Authorization": f"Basic {_basic_token(write_key)}",
        }
        if retry_count > 0:
            headers["X-Retry-Count"] = str(retry_count)
        return headers

    def post(
        self, endpoint: str, write_key: str, bodies: Sequence[bytes], *, retry_count: int = 0
    ) -> Response:
        """POST ``bodies`` as one batch to ``{endpoint}/v1/batch`` and report the result.

        ``endpoint`` is a base URL from :func:`resolve_endpoint`;
        ``retry_count`` (attempts already made) is sent as ``X-Retry-Count`` when positive.
        ``sentAt`` is the time of this call. Returns within the transport's ``deadline``.
        Never raises for a network failure (those, and an overdue request, give
        ``status=None``, :attr:`Outcome.RETRY`); raises ``ValueError`` for an empty key or
        batch and :class:`BatchTooLarge` for a batch over Segment's limits.
        """
        if not write_key:
            raise ValueError("write key is empty")
        if isinstance(retry_count, bool) or not isinstance(retry_count, int) or retry_count < 0:
            raise ValueError("retry_count must be a non-negative int")
        payload = build_body(bodies, write_key, datetime.now(timezone.utc))
        headers = self.headers(write_key, retry_count)
        if self._gzip:
            payload = _gzip.compress(payload, compresslevel=GZIP_LEVEL, mtime=0)
            headers["Content-Encoding"] = "gzip"
        url = endpoint + BATCH_PATH
        started = time.perf_counter()
        response = self.exchange(url, payload, headers, secret=write_key)
        _log.debug(
            "POST %s (%d messages, %d bytes%s) -> %s %s in %.1f ms",
            url,
            len(bodies),
            len(payload),
            ", gzip" if self._gzip else "",
            response.status,
            response.outcome.value,
            (time.perf_counter() - started) * 1e3,
        )
        return response

    def exchange(
        self,
        url: str,
        payload: bytes,
        headers: Mapping[str, str],
        *,
        secret: str,
        interpret: Callable[[Answer], Response] | None = None,
        max_body: int = _MAX_RESPONSE_BODY,
    ) -> Response:
        """POST ``payload`` to ``url`` within the transport's deadline, and make the
        answer a :class:`Response`: Segment's reading of it by default, else
        ``interpret``'s, given the :class:`Answer` (its body read up to ``max_body``
        bytes). The seam another API's transport builds on (the destination's loader).

        Never raises for a network failure or an overdue request (``status=None``,
        :attr:`Outcome.RETRY`); every error text is scrubbed of ``secret``.
        """
        pool, target = self._target(url)
        limit = _MAX_RESPONSE_BODY if interpret is None else max_body
        started = time.perf_counter()
        deadline = _posting.entry = _WATCHDOG.start(self._deadline)
        try:
            try:
                answer = None
                if isinstance(pool, _DeadlineHTTPPool):  # a direct way out
                    answer = self._on_kept_connection(pool, target, payload, headers, limit)
                if answer is None:
                    raw = pool.urlopen(
                        "POST",
                        target,
                        body=payload,
                        headers=dict(headers),
                        redirect=False,
                        retries=False,
                        preload_content=False,
                        assert_same_host=False,
                    )
                    answer = _read_answer(raw, limit)
            except urllib3.exceptions.LocationValueError:
                raise
            except _NETWORK_ERRORS as exc:
                error = self._overdue() if deadline.passed() else _describe(exc)
                response = Response(status=None, error=self._scrub(error, secret))
                _log.debug(
                    "POST %s failed after %.1f ms: %s",
                    url,
                    (time.perf_counter() - started) * 1e3,
                    response.error,
                )
                return response
            if deadline.expired:  # a body cut short by the watchdog can look whole (no length)
                answer = attrs.evolve(answer, read_failure=self._overdue())
        finally:
            _posting.entry = None
            _WATCHDOG.finish(deadline)
        if interpret is None or answer.status == 407:
            response = _segment_response(answer, secret)
            return self._proxy_checked(response, secret)
        return interpret(answer)

    def _on_kept_connection(
        self,
        pool: _DeadlineHTTPPool,
        target: str,
        payload: bytes,
        headers: Mapping[str, str],
        limit: int,
    ) -> Answer | None:
        """The POST made on a connection already open to the host (kept alive from an
        earlier request), by writing the request's bytes and reading the answer with
        ``http.client``'s parser, without urllib3's request and response objects: less
        than half the client CPU. ``None`` (nothing sent, the connection back in the pool)
        when the pool has no open connection or urllib3 would do more than write the
        headers (see :func:`_request_head`): then urllib3 makes the request, and opens the
        connection (TCP, TLS, their errors). A compressed answer is read by urllib3.

        Raises what urllib3 raises for the same failures (``ReadTimeoutError`` for a
        status line that does not come in time, ``SSLError``, ``ProtocolError`` for a
        connection that drops or an answer that is not HTTP); a body that cannot be read
        whole is the answer's ``read_failure``, in urllib3's words. The connection goes
        back to the pool only when a final answer was read whole and does not close it.
        """
        conn = pool._get_conn()
        reusable = False
        try:
            sock: socket.socket | None = getattr(conn, "sock", None)
            head = None if sock is None else _request_head(conn, target, len(payload), headers)
            if sock is None or head is None:
                reusable = True  # untouched: back to the pool as it came
                return None
            sock.settimeout(self._connect_timeout)  # as urllib3 sends: with connect's
            try:
                if len(payload) <= _JOIN_BELOW:
                    sock.sendall(head + payload)
                else:
                    sock.sendall(head)
                    sock.sendall(payload)
            except ssl.SSLError as exc:
                raise urllib3.exceptions.SSLError(exc) from exc
            except OSError as exc:
                # As urllib3: a server may answer (413, 401) and close before reading it all.
                if not isinstance(exc, BrokenPipeError) and exc.errno not in _ANSWER_MAY_FOLLOW:
                    raise urllib3.exceptions.ProtocolError("Connection aborted.", exc) from exc
            sock.settimeout(self._read_timeout)
            answer = _QuickHeadersResponse(sock, method="POST")
            try:
                answer.begin()
            except (TimeoutError, ssl.SSLError, OSError, http.client.HTTPException) as exc:
                raise self._as_urllib3_raises(exc, pool, target) from exc
            answer_headers = urllib3.HTTPHeaderDict(answer.msg.items())
            if "Content-Encoding" in answer_headers:
                # A compressed answer (though identity was asked for): urllib3 decodes it.
                raw = urllib3.HTTPResponse(
                    body=answer,
                    headers=answer_headers,
                    status=answer.status,
                    version=answer.version,
                    reason=answer.reason,
                    preload_content=False,
                    original_response=answer,
                    request_method="POST",
                )
                return _read_answer(raw, limit)
            body, read_failure = _read_body(answer, pool, limit)
            reusable = (
                read_failure is None
                and answer.isclosed()
                and not answer.will_close
                and answer.status >= 200  # else a 101: what follows is not HTTP
            )
            answer.close()
            return Answer(
                answer.status,
                answer.reason or "",
                answer_headers,
                body,
                read_failure,
            )
        finally:
            if not reusable:
                conn.close()
            pool._put_conn(conn)

    def _as_urllib3_raises(
        self, exc: BaseException, pool: _DeadlineHTTPPool, target: str
    ) -> Exception:
        """What urllib3 raises when reading the status line and headers fails with
        ``exc``: a read timeout, a TLS error, or the connection aborted."""
        if isinstance(exc, TimeoutError) or (
            isinstance(exc, ssl.SSLError) and "timed out" in str(exc)
        ):
            return urllib3.exceptions.ReadTimeoutError(
                pool, target, f"Read timed out. (read timeout={self._read_timeout})"
            )
        if isinstance(exc, ssl.SSLError):
            return urllib3.exceptions.SSLError(exc)
        return urllib3.exceptions.ProtocolError("Connection aborted.", exc)

    def _proxy_checked(self, response: Response, secret: str) -> Response:
        """The proxy's credentials scrubbed from the error; a proxy's ``407`` (its answer,
        not the API's) retried."""
        if self._secrets and response.error is not None:
            response = attrs.evolve(response, error=self._scrub(response.error, secret))
        if response.status == 407:
            response = attrs.evolve(
                response,
                error=f"the proxy refused its credentials: {response.error}",
                outcome=Outcome.RETRY,
            )
        return response

    def _overdue(self) -> str:
        return f"deadline exceeded: the request took longer than {self._deadline:g} s"

    def close(self) -> None:
        """Close every pooled connection. Idempotent; a later ``post`` opens new ones."""
        with self._lock:
            self._targets, self._target_hosts = {}, set()
            self._closes += 1
            for pool in self._pools.values():
                pool.clear()


def _origin(url: str) -> str:
    """``scheme://host:port`` of ``url``: the key of the proxy chosen for it."""
    parts = urllib3.util.parse_url(url)
    return f"{parts.scheme}://{parts.host}:{parts.port or ''}"


def _request_head(
    conn: BaseHTTPConnection, target: str, length: int, headers: Mapping[str, str]
) -> bytes | None:
    """The request line and headers urllib3 writes for a POST of ``length`` bytes with
    ``headers``, byte for byte (a test compares them), or ``None`` when urllib3 would do
    more than write them: a header that is not plain text (checked and encoded), one it
    writes itself or leaves out when given (``Host``, ``Content-Length``, ``Accept-Encoding``,
    ``Transfer-Encoding``), or no ``User-Agent`` (its own added)."""
    host = conn.host
    if not _PLAIN_HOST.fullmatch(host):
        return None
    if ":" in host:
        host = f"[{host}]"
    if conn.port != conn.default_port:
        host = f"{host}:{conn.port}"
    lines = [
        f"POST {target} HTTP/1.1\r\nHost: {host}\r\nAccept-Encoding: identity\r\n"
        f"Content-Length: {length}\r\n"
    ]
    agent = False
    for name, value in headers.items():
        if not (
            isinstance(name, str)
            and isinstance(value, str)
            and _HEADER_NAME.fullmatch(name)
            and _PLAIN_VALUE.fullmatch(value)
            and value != urllib3.util.SKIP_HEADER
        ):
            return None
        lower = name.lower()
        if lower in _URLLIB3_WRITES:
            return None
        agent = agent or lower == "user-agent"
        lines.append(f"{name}: {value}\r\n")
    if not agent:
        return None
    lines.append("\r\n")
    return "".join(lines).encode("ascii")


def _read_body(
    answer: http.client.HTTPResponse, pool: urllib3.HTTPConnectionPool, limit: int
) -> tuple[bytes, str | None]:
    """The body of ``answer`` up to ``limit`` bytes, and why it could not be read whole
    (``None`` when it was), in urllib3's words (``HTTPResponse.read`` and its
    ``_error_catcher``)."""
    try:
        if answer.chunked or answer.length is None or answer.length > limit:
            data = answer.read(limit)
            left = answer.length
            if not answer.chunked and left and len(data) < limit:  # the connection ended
                raise http.client.IncompleteRead(data, left)
            return data, None
        return answer.read(), None  # http.client raises IncompleteRead if it is short
    except (TimeoutError, ssl.SSLError) as exc:
        if isinstance(exc, ssl.SSLError) and "read operation timed out" not in str(exc):
            failure: Exception = urllib3.exceptions.SSLError(exc)
        else:
            failure = urllib3.exceptions.ReadTimeoutError(pool, None, "Read timed out.")
        failure.__cause__ = exc
    except (OSError, http.client.HTTPException) as exc:
        failure = urllib3.exceptions.ProtocolError(f"Connection broken: {exc!r}", exc)
        failure.__cause__ = exc
    return b"", _describe(failure)


def _default_ca_bundle() -> str | None:
    try:
        import certifi
    except ImportError:  # pragma: no cover - certifi is a declared dependency
        return None
    return certifi.where()


def _describe(exc: BaseException) -> str:
    """The exception class and text; for urllib3's wrappers, the underlying cause too."""
    text = f"{type(exc).__name__}: {exc}"
    cause = exc.__cause__ or exc.__context__
    if cause is not None and str(cause) not in text:
        text += f" ({type(cause).__name__}: {cause})"
    return text


def _segment_response(answer: Answer, write_key: str) -> Response:
    """What ``answer`` means as Segment's (or a proxy's) answer to a batch."""
    status, headers = answer.status, answer.headers
    now = time.time()
    retry_after = parse_retry_after(headers.get("Retry-After"), now)
    if 200 <= status < 300:
        return Response(status=status, retry_after=retry_after)
    if 300 <= status < 400:
        location = headers.get("Location")
        target = f" to {location}" if location else ""
        error = f"HTTP {status} redirect{target} not followed; check the endpoint setting"
    elif answer.read_failure is not None:
        error = f"HTTP {status} {answer.reason}; body unreadable: {answer.read_failure}"
    else:
        error = error_text(status, answer.reason, answer.body[:_MAX_RESPONSE_BODY])
    reset = parse_rate_limit_reset(headers.get("X-RateLimit-Reset"), now)
    return Response(
        status=status,
        retry_after=retry_after,
        error=scrub(error, write_key),
        rate_limit_reset=reset,
    )


@attrs.frozen
class Answer:
    """An HTTP answer as :meth:`HttpTransport.exchange` read it: ``status``, ``reason``,
    ``headers`` (any case), the ``body`` (cut at the ``max_body`` asked for) and, when the
    body could not be read whole (a dropped connection, the deadline), why."""

    status: int
    reason: str
    headers: Mapping[str, str] = attrs.field(repr=False)
    body: bytes = attrs.field(repr=False)
    read_failure: str | None = None


def _read_answer(raw: urllib3.BaseHTTPResponse, limit: int) -> Answer:
    """Read urllib3's ``raw`` into an :class:`Answer` (the body up to ``limit`` bytes),
    returning the connection to the pool when the body was read whole and closing it
    otherwise."""
    data = b""
    read_failure: str | None = None
    try:
        data = raw.read(limit)
        if not raw.closed:
            raw.close()  # longer than we will read: do not reuse this connection
    except _NETWORK_ERRORS as exc:
        read_failure = _describe(exc)
        raw.close()
    finally:
        raw.release_conn()
    return Answer(raw.status, raw.reason or "", raw.headers, data, read_failure)


def error_text(status: int, reason: str | None, data: bytes) -> str:
    """Segment's ``code: message`` from a JSON error body, else the status and a snippet."""
    try:
        payload = json.loads(data)
    except (ValueError, RecursionError):  # a hostile body must not kill a sender thread
        payload = None
    if isinstance(payload, dict):
        parts = [
            str(payload[name]) for name in ("code", "message") if payload.get(name) is not None
        ]
        if parts:
            return f"HTTP {status}: " + ": ".join(parts)
    head = f"HTTP {status} {reason or ''}".rstrip()
    # Decoded whole (at most _MAX_RESPONSE_BODY): scrub() must see a key entire before it
    # cuts the text, or a key straddling the cut would leave its first half behind.
    snippet = data.decode("utf-8", "replace")
    return f"{head}: {snippet}" if snippet.strip() else head
