"""How HttpTransport reads an answer, and writes a request on a kept connection
(delivery/_transport.py).

``_QuickHeadersResponse`` is ``http.client.HTTPResponse`` with its header block made by
``_shortcuts.http_headers``: proven here to come to the very same response (every
attribute, the headers, the body read after, the error raised) on generated answers.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import http.client
import io
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any
from unittest import mock

import pytest
import urllib3
from _http_messages import message_state, read_request
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from selligent_segment.delivery import _transport
from selligent_segment.delivery._transport import (
    Answer,
    HttpTransport,
    Response,
    _QuickHeadersResponse,
)

SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class _Socket:
    """What ``HTTPResponse`` reads from: ``makefile`` over fixed bytes."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def makefile(self, mode: str) -> io.BufferedReader:
        return io.BufferedReader(io.BytesIO(self.data))  # type: ignore[arg-type]


def read(cls: type[http.client.HTTPResponse], data: bytes, method: str) -> dict[str, Any]:
    """Everything a response of ``cls`` comes to on ``data``: its state after ``begin``,
    its headers and the body read after (or the error, as class and text)."""
    response = cls(_Socket(data), method=method)  # type: ignore[arg-type]
    try:
        response.begin()
    except (http.client.HTTPException, ValueError) as exc:
        return {"error": (type(exc), str(exc))}
    state: dict[str, Any] = {
        name: getattr(response, name, None)
        for name in ("status", "code", "reason", "version", "chunked", "chunk_left", "length")
    }
    state["will_close"] = response.will_close
    state["message"] = message_state(response.msg)
    try:
        state["body"] = response.read()
    except (http.client.HTTPException, ValueError) as exc:
        state["body"] = (type(exc), str(exc))
    return state


_STATUS_LINES = st.sampled_from(
    [
        b"HTTP/1.1 200 OK\r\n",
        b"HTTP/1.1 200 OK\n",
        b"HTTP/1.0 503 Service Unavailable\r\n",
        b"HTTP/1.1 429 \r\n",
        b"HTTP/1.1 204 No Content\r\n",
        b"HTTP/1.1 304 Not Modified\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n",
        b"HTTP/1.1 100 Continue\r\nX: y\r\n\r\nHTTP/1.1 400 Bad Request\r\n",
        b"HTTP/0.9 200 OK\r\n",
        b"HTTP/2 200\r\n",
        b"HTTP/1.1 2000 Odd\r\n",
        b"ICY 200 OK\r\n",
        b"",
    ]
)
_HEADERS = st.sampled_from(
    [
        b"Content-Type: application/json\r\n",
        b"Content-Type: multipart/mixed\r\n",
        b"content-type: Multipart/Mixed; boundary=x\r\n",
        b"Content-Type: message/rfc822\r\n",
        b"Content-Length: 17\r\n",
        b"Content-Length: 3\r\n",
        b"Content-Length: -1\r\n",
        b"Content-Length: x\r\n",
        b"Transfer-Encoding: chunked\r\n",
        b"Transfer-Encoding: gzip\r\n",
        b"Connection: close\r\n",
        b"Connection: keep-alive\r\n",
        b"Keep-Alive: timeout=5\r\n",
        b"Retry-After: 2\r\n",
        b"X-RateLimit-Reset: 1700000000\r\n",
        b"X-Folded: a\r\n  b\r\n",
        b"X-Bare: a\rb\r\n",
        b"X-Latin: caf\xe9\r\n",
        b"No colon here\r\n",
        b"Proxy-Connection: close\r\n",
    ]
)
_BODIES = st.sampled_from(
    [b"", b'{"success":true}', b"3\r\nabc\r\n0\r\n\r\n", b"zz\r\n", b"0\r\n\r\n", b"abc"]
)


@st.composite
def answers(draw: st.DrawFn) -> bytes:
    head = draw(_STATUS_LINES) + b"".join(draw(st.lists(_HEADERS, max_size=6)))
    end = draw(st.sampled_from([b"\r\n", b"\r\n", b"\n", b""]))
    return head + end + draw(_BODIES)


@pytest.mark.slow  # half a second or more: the second step of .ci/run
@settings(SETTINGS)
@given(answers(), st.sampled_from(["POST", "HEAD"]))
@example(
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 16\r\n\r\n"
    b'{"success":true}',
    "POST",
)
@example(b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 101 + b"\r\n", "POST")
@example(b"HTTP/1.1 200 OK\r\nX: " + b"y" * 70_000 + b"\r\n\r\n", "POST")
def test_the_quick_response_reads_what_http_client_reads(data: bytes, method: str) -> None:
    assert read(_QuickHeadersResponse, data, method) == read(http.client.HTTPResponse, data, method)


EARLY_HINTS = (
    b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
    b"HTTP/1.1 102 Processing\r\n\r\n"
)


def test_the_quick_response_skips_every_interim_answer() -> None:
    """RFC 9110 (15.2): a client reads past any number of 1xx answers but 101 to the final
    one. The standard library skips a 100 only, and takes a 103 for the answer."""
    final = read(_QuickHeadersResponse, EARLY_HINTS + OK, "POST")
    assert (final["status"], final["body"]) == (200, b'{"success":true}')
    assert final["message"] == read(http.client.HTTPResponse, OK, "POST")["message"]
    assert final["will_close"] is False
    assert read(http.client.HTTPResponse, EARLY_HINTS + OK, "POST")["status"] == 103
    switching = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n"
    assert read(_QuickHeadersResponse, switching, "POST")["status"] == 101


def test_the_transport_reads_answers_with_the_quick_response() -> None:
    assert _transport._DeadlineHTTPConnection.response_class is _QuickHeadersResponse
    assert _transport._DeadlineHTTPSConnection.response_class is _QuickHeadersResponse


# -- the request on a kept connection -------------------------------------------------------
#
# HttpTransport.exchange sends on a connection it already holds open by writing the request
# itself and reading the answer with http.client (_on_kept_connection); a new connection
# goes through urllib3. Proven here against urllib3 on a raw loopback server that answers
# with scripted bytes: the request bytes, and what every answer comes to, are the same.

OK = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 16\r\n\r\n"
    b'{"success":true}'
)


class _RawServer:
    """A loopback server that records each request's bytes and answers each with the
    next scripted bytes (then closes the connection when the script says so)."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.script: list[tuple[bytes, bool, float]] = []  # answer, then close?, delay
        self.requests: list[bytes] = []
        self.connections = 0
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def answer(self, data: bytes, *, close: bool = False, delay: float = 0.0) -> None:
        with self.lock:
            self.script.append((data, close, delay))

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            buffer = b""
            while (request := read_request(conn, buffer)) is not None:
                head, body, buffer = request
                with self.lock:
                    self.requests.append(head + b"\r\n\r\n" + body)
                    data, close, delay = self.script.pop(0) if self.script else (OK, False, 0.0)
                if delay:
                    time.sleep(delay)  # a slow server: what the read timeout is for
                try:
                    conn.sendall(data)
                except OSError:  # the client has gone (it gave up on the request)
                    return
                if close:
                    with contextlib.suppress(OSError):  # the client may have closed first
                        conn.shutdown(socket.SHUT_RDWR)
                    return

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def raw_server() -> Iterator[_RawServer]:
    server = _RawServer()
    try:
        yield server
    finally:
        server.close()


def _exchange(
    transport: HttpTransport, url: str, *, interpret: bool = False, headers: Any = None
) -> tuple[Response, Answer | None]:
    answers: list[Answer] = []

    def keep(answer: Answer) -> Response:
        answers.append(answer)
        return Response(answer.status)

    response = transport.exchange(
        url,
        b'{"batch":[]}',
        headers or {"Content-Type": "application/json", "User-Agent": "t", "X-Key": "k"},
        secret="k",
        interpret=keep if interpret else None,
        max_body=64,
    )
    return response, (answers[0] if answers else None)


def _answer_state(answer: Answer | None) -> Any:
    if answer is None:
        return None
    headers = sorted((k.lower(), v) for k, v in answer.headers.items())
    return (answer.status, answer.reason, headers, answer.body, answer.read_failure)


def _with_length(status_line: bytes, body: bytes) -> bytes:
    return b"%b\r\nContent-Length: %d\r\n\r\n%b" % (status_line, len(body), body)


ANSWERS = {
    "ok": (OK, False),
    "rate limited": (
        b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 2\r\nX-RateLimit-Reset: 9\r\n"
        b"Content-Length: 2\r\n\r\n{}",
        False,
    ),
    "error body": (
        _with_length(b"HTTP/1.1 400 Bad Request", b'{"code":"invalid","message":"k"}'),
        False,
    ),
    "chunked": (
        b"HTTP/1.1 500 Oops\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        False,
    ),
    "long body": (b"HTTP/1.1 503 Busy\r\nContent-Length: 100\r\n\r\n" + b"x" * 100, False),
    "closes": (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}", True),
    "cut short, over the limit": (
        b"HTTP/1.1 500 Oops\r\nContent-Length: 100\r\n\r\nonly this",
        True,
    ),
    "gzip": (
        _with_length(
            b"HTTP/1.1 400 Bad Request\r\nContent-Encoding: gzip",
            gzip.compress(b'{"code":"invalid","message":"bad batch"}'),
        ),
        False,
    ),
    "not gzip": (_with_length(b"HTTP/1.1 400 Bad\r\nContent-Encoding: gzip", b"plain"), False),
    "says close": (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}", False),
    "no length": (b"HTTP/1.1 502 Bad Gateway\r\n\r\nproxy says no", True),
    "short body": (b"HTTP/1.1 500 Oops\r\nContent-Length: 50\r\n\r\nonly this", True),
    "short chunk": (b"HTTP/1.1 500 Oops\r\nTransfer-Encoding: chunked\r\n\r\n9\r\nabc", True),
    "redirect": (
        b"HTTP/1.1 301 Moved\r\nLocation: https://x.test/\r\nContent-Length: 0\r\n\r\n",
        False,
    ),
    "not http": (b"SMTP ready\r\n\r\n", True),
    "nothing": (b"", True),
    "no content": (b"HTTP/1.1 204 No Content\r\n\r\n", False),
    "early hints": (EARLY_HINTS + OK, False),
}


@pytest.mark.parametrize("interpret", [False, True], ids=["segment", "interpret"])
@pytest.mark.parametrize("name", list(ANSWERS))
def test_an_answer_on_a_kept_connection_comes_to_what_urllib3_makes_of_it(
    raw_server: _RawServer, name: str, interpret: bool
) -> None:
    data, close = ANSWERS[name]
    url = raw_server.url + "/v1/batch"
    fresh = HttpTransport(proxy=False)  # its one request opens a connection: urllib3's
    raw_server.answer(data, close=close)
    first = _exchange(fresh, url, interpret=interpret)
    kept = HttpTransport(proxy=False)
    _exchange(kept, url)  # opens the connection, kept alive
    raw_server.answer(data, close=close)
    with mock.patch.object(urllib3.HTTPConnectionPool, "urlopen", side_effect=AssertionError):
        second = _exchange(kept, url, interpret=interpret)
    assert second[0] == first[0]
    assert _answer_state(second[1]) == _answer_state(first[1])
    # Kept again only when the answer was read whole and leaves the connection open.
    before = raw_server.connections
    assert _exchange(kept, url)[0].status == 200
    reused = raw_server.connections == before
    whole = ("ok", "rate limited", "error body", "chunked", "redirect", "no content")
    whole += ("early hints",)
    assert reused == (name in whole or (name == "long body" and not interpret))
    fresh.close()
    kept.close()


class _FailingSend:
    """A kept connection's socket whose next ``sendall`` sends its bytes and then fails
    with ``error``, as a server that answered and closed before reading all of a request
    makes it fail; everything else is the socket's."""

    def __init__(self, sock: socket.socket, error: OSError) -> None:
        self.sock = sock
        self.error: OSError | None = error

    def sendall(self, data: bytes) -> None:
        self.sock.sendall(data)
        error, self.error = self.error, None
        if error is not None:
            raise error

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sock, name)


@pytest.mark.parametrize(
    ("error", "read"),
    [
        (BrokenPipeError(errno.EPIPE, "Broken pipe"), True),
        (ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"), True),
        (OSError(errno.EPROTOTYPE, "Protocol wrong type for socket"), True),
        (OSError(errno.EHOSTUNREACH, "No route to host"), False),
    ],
    ids=["broken pipe", "reset", "EPROTOTYPE", "other"],
)
def test_a_send_that_fails_on_a_kept_connection_reads_the_answer_as_urllib3_does(
    raw_server: _RawServer, error: OSError, read: bool
) -> None:
    """urllib3 reads the answer after a send that failed with a broken pipe, a reset or
    EPROTOTYPE (a server may answer, 413 or 401, and close before reading it all), and
    reports any other failure as the connection aborted: so does a kept connection."""
    url = raw_server.url + "/v1/batch"
    kept = HttpTransport(proxy=False)
    _exchange(kept, url)  # opens the connection, kept alive
    pool, _ = kept._target(url)
    assert isinstance(pool, urllib3.HTTPConnectionPool)
    assert pool.pool is not None
    conn = pool.pool.queue[-1]  # the connection the next request takes (LIFO)
    assert conn is not None
    assert conn.sock is not None
    conn.sock = _FailingSend(conn.sock, error)
    raw_server.answer(_with_length(b"HTTP/1.1 413 Too Large", b'{"message":"big"}'), close=True)
    with mock.patch.object(urllib3.HTTPConnectionPool, "urlopen", side_effect=AssertionError):
        response, _ = _exchange(kept, url)
    if read:
        assert (response.status, response.error) == (413, "HTTP 413: big")
    else:
        assert response.status is None
        assert response.error is not None
        assert "Connection aborted" in response.error
        assert "No route to host" in response.error
    assert raw_server.requests[-1].endswith(b'{"batch":[]}')  # the request was all sent
    kept.close()


@pytest.mark.slow  # half a second or more: the second step of .ci/run
@pytest.mark.parametrize(
    ("settings", "said"),
    [
        ({"read_timeout": 0.2}, "Read timed out. (read timeout=0.2)"),
        ({"read_timeout": 1}, "Read timed out. (read timeout=1)"),
        ({"read_timeout": 5.0, "deadline": 0.3}, "deadline exceeded"),
    ],
    ids=["read timeout", "whole seconds", "deadline"],
)
def test_a_slow_answer_fails_as_it_does_through_urllib3(
    raw_server: _RawServer, settings: dict[str, Any], said: str
) -> None:
    url = raw_server.url + "/v1/batch"
    fresh = HttpTransport(proxy=False, **settings)
    raw_server.answer(OK, delay=1.3)
    first = _exchange(fresh, url)[0]
    kept = HttpTransport(proxy=False, **settings)
    _exchange(kept, url)
    before = raw_server.connections
    raw_server.answer(OK, delay=1.3)
    with mock.patch.object(urllib3.HTTPConnectionPool, "urlopen", side_effect=AssertionError):
        second = _exchange(kept, url)[0]
    assert first.status is second.status is None
    assert first.error == second.error
    assert said in (second.error or "")
    assert _exchange(kept, url)[0].status == 200
    assert raw_server.connections == before + 1  # the late connection was not kept


def test_the_request_on_a_kept_connection_is_byte_for_byte_urllib3s(
    raw_server: _RawServer,
) -> None:
    transport = HttpTransport(proxy=False)
    for url in (raw_server.url + "/v1/batch", raw_server.url + "/p/v1/batch?x=1&y=%20"):
        for headers in (
            {
                "Content-Type": "application/json",
                "User-Agent": "t",
                "Authorization": "Basic a2V5Og==",
            },
            {"User-Agent": "t", "X-Retry-Count": "2", "Content-Encoding": "gzip", "X-ApiKey": "k"},
        ):
            transport.close()
            _exchange(transport, url, headers=headers)  # a new connection: urllib3 writes it
            with mock.patch.object(
                urllib3.HTTPConnectionPool, "urlopen", side_effect=AssertionError
            ):
                _exchange(transport, url, headers=headers)  # the kept one: written here
            by_urllib3, by_hand = raw_server.requests[-2:]
            assert by_hand == by_urllib3
    assert raw_server.requests[-1].startswith(b"POST /p/v1/batch?x=1&y=%20 HTTP/1.1\r\nHost: ")


@pytest.mark.parametrize(
    "headers",
    [
        {"User-Agent": "t", "X-Name": "caf\xe9"},
        {"User-Agent": "t", "X Bad": "v"},
        {"User-Agent": "t", "X-Retry-Count": 2},
        {"X-Key": "k"},
        {"User-Agent": "t", "Host": "example.test"},
        {"User-Agent": "t", "content-length": "12"},
        {"User-Agent": "t", "Accept-Encoding": "gzip"},
        {"User-Agent": urllib3.util.SKIP_HEADER},
    ],
    ids=[
        "latin-1 value",
        "name with a space",
        "not text",
        "no user agent",
        "host",
        "content length",
        "accept encoding",
        "skipped",
    ],
)
def test_headers_urllib3_must_check_encode_or_add_to_go_through_urllib3(
    raw_server: _RawServer, headers: dict[str, Any]
) -> None:
    transport = HttpTransport(proxy=False)
    url = raw_server.url + "/v1/batch"
    _exchange(transport, url)
    with (
        mock.patch.object(
            urllib3.HTTPConnectionPool, "urlopen", wraps=transport._target(url)[0].urlopen
        ) as urlopen,
        contextlib.suppress(ValueError),
    ):  # http.client refuses the name, as before
        _exchange(transport, url, headers=headers)
    assert urlopen.call_count == 1
    assert _exchange(transport, url)[0].status == 200  # no connection lost on the way
    transport.close()


@pytest.mark.parametrize("message", ["a NUL \\u0000 here", "a lone \\ud800 surrogate"])
def test_a_refusal_whose_text_no_spool_can_write_still_dead_letters_its_batch(
    raw_server: _RawServer, tmp_path: Any, message: str
) -> None:
    # Segment (or a proxy) refuses the batch with a message holding a NUL or a lone
    # surrogate: the batch is still a dead letter with a readable reason, and the next
    # event is still delivered (the reason once failed to be written: a spool's text
    # column refuses a NUL, and no UTF-8 encoder writes a lone surrogate).
    from selligent_segment import BatchPolicy, Emitter, RetryPolicy, SpoolFile

    body = b'{"code":"invalid","message":"%b"}' % message.encode()
    raw_server.answer(_with_length(b"HTTP/1.1 400 Bad Request", body))
    emitter = Emitter(
        write_key="wk_1",
        endpoint=raw_server.url,
        allow_insecure_http=True,
        spool=tmp_path / "spool.db",
        batch=BatchPolicy(linger=0.0),
        retry=RetryPolicy(max_attempts=1),
        max_requests_per_second=0,
    )
    try:
        emitter.emit({"type": "delivered", "email": "a@example.com", "event_id": "one"})
        assert emitter.flush(timeout=10)
        emitter.emit({"type": "delivered", "email": "b@example.com", "event_id": "two"})
        assert emitter.flush(timeout=10)
        stats = emitter.stats()
    finally:
        emitter.close(timeout=5)
    assert (stats.delivered, sum(stats.rejected.values())) == (1, 1)
    with SpoolFile(tmp_path / "spool.db") as spool:
        (letter,) = spool.dead_letters()
    assert letter.reason.startswith("rejected: HTTP 400: invalid: a ")
    assert "\ufffd" in letter.reason  # what could not be written, shown as replaced
