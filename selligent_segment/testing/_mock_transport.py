"""A transport that answers from a function: no socket, no server, no waiting.

``Emitter(transport=MockTransport(handler))`` hands every batch to ``handler(request)``
instead of the network, in the style of ``httpx.MockTransport``::

    def handler(request: MockRequest) -> MockResponse:
        if len(request.items) > 10:
            return MockResponse.error(400, "too many")
        return MockResponse.ok()

The handler gets a :class:`MockRequest` (the URL, the batch as parsed JSON items and as
the raw body, ``retry_count``, the headers; the write key too, never in a repr) and
returns a :class:`MockResponse` (or just a status code), or raises an ``OSError`` (any
exception a real request can raise: ``ConnectionResetError``, ``TimeoutError``, urllib3's
errors) to simulate a network failure. What it returns is classified by the very code
:class:`~selligent_segment.delivery._transport.HttpTransport` runs on a real answer
(statuses, ``Retry-After``, ``X-RateLimit-Reset``, Segment's error bodies, key scrubbing):
the response is handed to it as a ``urllib3`` response read from memory.
"""

from __future__ import annotations

import gzip as _gzip
import io
import json
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from types import MappingProxyType
from typing import Any

import attrs
import orjson
import urllib3

from selligent_segment._clock import SYSTEM_CLOCK, Clock
from selligent_segment._limits import BATCH_PATH
from selligent_segment.delivery._transport import (
    _MAX_RESPONSE_BODY,
    _NETWORK_ERRORS,
    GZIP_LEVEL,
    HttpTransport,
    Response,
    _describe,
    _read_answer,
    _segment_response,
    build_body,
    scrub,
)
from selligent_segment.testing._rules import OK, reason_phrase, status_code_slug

__all__ = ["Handler", "MockRequest", "MockResponse", "MockTransport"]

_REDACTED = "[redacted]"
_SECRET_HEADERS = frozenset({"authorization"})


def _headers(value: Mapping[str, str] | None) -> Mapping[str, str]:
    return MappingProxyType(dict(value or {}))


@attrs.frozen(repr=False)
class MockRequest:
    """One batch as :class:`MockTransport` received it; what a handler is given.

    ``endpoint`` is the base URL the sender posts to and ``url`` the full one
    (``endpoint + "/v1/batch"``); ``items`` the messages of the batch, parsed (dicts, in
    order); ``content`` the request body as this transport sends it (gzip only with
    ``MockTransport(gzip=True)``: an Emitter's ``BatchPolicy(gzip=...)`` sets up its default
    transport, never one passed in); ``retry_count`` the attempts already made (the
    ``X-Retry-Count`` header, sent when positive); ``headers`` the request headers as
    :class:`HttpTransport` sends them (``Authorization`` carries the key);
    ``write_key`` the key; ``at`` the transport's clock when the request was made.
    ``repr`` shows neither the key, nor the headers or body that carry it.
    """

    endpoint: str
    url: str
    items: tuple[dict[str, Any], ...] = attrs.field(eq=False)
    content: bytes
    retry_count: int
    headers: Mapping[str, str] = attrs.field(eq=False)
    write_key: str
    at: float

    @property
    def message_ids(self) -> list[str]:
        """The ``messageId`` of each item, in order."""
        return [str(item.get("messageId")) for item in self.items]

    def json(self) -> dict[str, Any]:
        """The whole body parsed (``batch``, ``sentAt``, ``writeKey``), decompressed."""
        body = self.content
        if self.headers.get("Content-Encoding") == "gzip":
            body = _gzip.decompress(body)
        parsed: dict[str, Any] = orjson.loads(body)
        return parsed

    def __repr__(self) -> str:
        return (
            f"MockRequest(url={self.url!r}, items={len(self.items)}, "
            f"retry_count={self.retry_count}, at={self.at!r})"
        )


def _status(_instance: object, _attribute: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 100 <= value <= 999:
        raise ValueError(f"status must be an int from 100 to 999, not {value!r}")


@attrs.frozen
class MockResponse:
    """What a handler answers: a status, headers, and an optional body (at most the
    first 16 KB is read, as from a real server). Classified as :class:`HttpTransport`
    classifies a real answer: ``Retry-After`` and ``X-RateLimit-Reset`` are parsed from
    ``headers``, an error text is taken from a JSON ``{"code", "message"}`` body."""

    status: int = attrs.field(validator=_status)
    headers: Mapping[str, str] = attrs.field(factory=dict, converter=_headers, eq=False)
    body: bytes = b""

    @classmethod
    def ok(cls, status: int = 200) -> MockResponse:
        """Segment's success: ``200 {"success": true}``."""
        return cls(status, {"Content-Type": "application/json"}, OK.body)

    @classmethod
    def error(
        cls,
        status: int,
        message: str = "",
        *,
        code: str | None = None,
        retry_after: float | str | None = None,
        rate_limit_reset: float | str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> MockResponse:
        """An error as Segment words it: a JSON ``{"code", "message"}`` body (``code``
        defaults to the status phrase in snake case), with ``Retry-After`` and
        ``X-RateLimit-Reset`` headers when given."""
        if code is None:
            code = status_code_slug(status)
        merged = {"Content-Type": "application/json", **(headers or {})}
        if retry_after is not None:
            merged["Retry-After"] = _header_number(retry_after)
        if rate_limit_reset is not None:
            merged["X-RateLimit-Reset"] = _header_number(rate_limit_reset)
        body = json.dumps({"code": code, "message": message or code}).encode()
        return cls(status, merged, body)

    @classmethod
    def rate_limited(
        cls,
        *,
        retry_after: float | str | None = None,
        rate_limit_reset: float | str | None = None,
    ) -> MockResponse:
        """A ``429`` with the pacing headers given (neither: a counted backoff)."""
        return cls.error(
            429, "rate limit exceeded", retry_after=retry_after, rate_limit_reset=rate_limit_reset
        )


def _header_number(value: float | str) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


#: What a handler may return: a response, or a bare status code (empty body).
Handler = Callable[[MockRequest], MockResponse | int]


def _always_ok(_request: MockRequest) -> MockResponse:
    return MockResponse.ok()


# HttpTransport's headers, from one instance (it holds no key and opens no connection
# before a post): the mock sends exactly what the real transport sends.
_HEADERS: HttpTransport | None = None
_HEADERS_LOCK = threading.Lock()


def _request_headers(write_key: str, retry_count: int) -> dict[str, str]:
    global _HEADERS
    if _HEADERS is None:
        with _HEADERS_LOCK:
            if _HEADERS is None:
                _HEADERS = HttpTransport(max_connections=1)
    return _HEADERS.headers(write_key, retry_count)


class MockTransport:
    """A :class:`~selligent_segment.delivery._transport.Transport` that answers every
    batch with ``handler(request)`` (default: always ``200``), for tests without sockets.

    Guarantees: ``post`` validates and builds the body as :class:`HttpTransport` does
    (``ValueError`` for an empty key or batch, :class:`BatchTooLarge` over Segment's
    limits), records the request before calling the handler (so a handler that blocks is
    already visible in :attr:`requests`), and reports the answer as the real transport
    reports the same answer from a server; an exception from the handler that a real
    request can raise (``OSError``, ``urllib3`` and ``http.client`` errors) becomes
    ``status=None``, :attr:`Outcome.RETRY`, with the same scrubbed error text. Any other
    exception (an assertion in the handler, say) is kept in :attr:`errors` and re-raised.
    ``at`` of each request is read from ``clock`` (the system's by default: pass the
    Emitter's :class:`FakeClock` to see fake times). Thread-safe; the handler runs on the
    sender thread, possibly two at once.
    """

    def __init__(
        self,
        handler: Handler | None = None,
        *,
        clock: Clock | None = None,
        gzip: bool = False,
    ) -> None:
        self.handler: Handler = handler if handler is not None else _always_ok
        self.clock: Clock = clock if clock is not None else SYSTEM_CLOCK
        self.gzip = bool(gzip)
        self._cv = threading.Condition(threading.Lock())
        self._requests: list[MockRequest] = []
        self._responses: list[Response] = []
        self._errors: list[BaseException] = []
        self._closed = False

    def __repr__(self) -> str:
        return (
            f"MockTransport(handler={getattr(self.handler, '__name__', self.handler)!r}, "
            f"requests={len(self._requests)}, closed={self._closed})"
        )

    def post(
        self, endpoint: str, write_key: str, bodies: Sequence[bytes], *, retry_count: int = 0
    ) -> Response:
        """Hand ``bodies`` as one batch to the handler and classify its answer (see the
        class text)."""
        if not write_key:
            raise ValueError("write key is empty")
        if isinstance(retry_count, bool) or not isinstance(retry_count, int) or retry_count < 0:
            raise ValueError("retry_count must be a non-negative int")
        body = build_body(bodies, write_key, datetime.now(timezone.utc))
        headers = _request_headers(write_key, retry_count)
        content = body
        if self.gzip:
            content = _gzip.compress(body, compresslevel=GZIP_LEVEL, mtime=0)
            headers["Content-Encoding"] = "gzip"
        request = MockRequest(
            endpoint=endpoint,
            url=endpoint + BATCH_PATH,
            items=tuple(orjson.loads(body)["batch"]),
            content=content,
            retry_count=retry_count,
            headers=MappingProxyType(headers),
            write_key=write_key,
            at=self.clock.monotonic(),
        )
        with self._cv:
            self._requests.append(request)
            self._cv.notify_all()
        try:
            answer = self.handler(request)
        except _NETWORK_ERRORS as exc:
            response = Response(status=None, error=scrub(_describe(exc), write_key))
        except BaseException as exc:
            with self._cv:
                self._errors.append(exc)
                self._cv.notify_all()
            raise
        else:
            response = _classify(answer, write_key)
        with self._cv:
            self._responses.append(response)
            self._cv.notify_all()
        return response

    def close(self) -> None:
        """Mark the transport closed (:attr:`closed`); idempotent, and a later ``post``
        still works, as with :class:`HttpTransport`."""
        self._closed = True

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    @property
    def requests(self) -> list[MockRequest]:
        """Every request received, in arrival order (a copy)."""
        with self._cv:
            return list(self._requests)

    @property
    def responses(self) -> list[Response]:
        """What each answered request came to, in the order answered (a copy)."""
        with self._cv:
            return list(self._responses)

    @property
    def errors(self) -> list[BaseException]:
        """Exceptions the handler raised that no real request raises (a copy)."""
        with self._cv:
            return list(self._errors)

    def wait_for_requests(self, count: int, timeout: float = 10.0) -> bool:
        """Block until ``count`` requests have arrived; False after ``timeout``
        wall-clock seconds."""
        with self._cv:
            return self._cv.wait_for(lambda: len(self._requests) >= count, timeout)


def _classify(answer: MockResponse | int, write_key: str) -> Response:
    """``answer`` as :class:`HttpTransport` reports the same answer from a server: it is
    read through the transport's own response handling, from memory."""
    if not isinstance(answer, MockResponse):
        answer = MockResponse(answer)
    raw = urllib3.HTTPResponse(
        body=io.BytesIO(answer.body),
        headers=dict(answer.headers),
        status=answer.status,
        reason=reason_phrase(answer.status),
        preload_content=False,
    )
    return _segment_response(_read_answer(raw, _MAX_RESPONSE_BODY), write_key)
