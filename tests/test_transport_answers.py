"""How HttpTransport reads an answer (delivery/_transport.py).

``_QuickHeadersResponse`` is ``http.client.HTTPResponse`` with its header block made by
``_shortcuts.http_headers``: proven here to come to the very same response (every
attribute, the headers, the body read after, the error raised) on generated answers.
"""

from __future__ import annotations

import http.client
import io
from typing import Any

from _http_messages import message_state
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from selligent_segment.delivery import _transport
from selligent_segment.delivery._transport import _QuickHeadersResponse

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


def test_the_transport_reads_answers_with_the_quick_response() -> None:
    assert _transport._DeadlineHTTPConnection.response_class is _QuickHeadersResponse
    assert _transport._DeadlineHTTPSConnection.response_class is _QuickHeadersResponse
