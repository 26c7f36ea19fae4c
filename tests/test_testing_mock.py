"""MockTransport and FakeClock themselves: a MockTransport answer is classified exactly as
HttpTransport classifies the same answer from a server; a FakeClock moves only when told,
and tells a test when the threads waiting on it are all blocked."""

from __future__ import annotations

import gzip
import socket
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import urllib3

from selligent_segment import BatchPolicy, Emitter, RetryPolicy, encode
from selligent_segment._clock import Clock
from selligent_segment.delivery._retry import Outcome
from selligent_segment.delivery._transport import (
    BatchTooLarge,
    HttpTransport,
    Response,
    Transport,
    build_body,
)
from selligent_segment.testing import (
    FakeClock,
    MockRequest,
    MockResponse,
    MockTransport,
)

KEY = "sekrit-key-123"
BODIES = [encode({"type": "opened", "email": f"u{i}@example.com", "event_id": str(i)}).body
          for i in range(3)]  # fmt: skip


# -- MockTransport: what the handler sees ----------------------------------------------------


def test_the_handler_sees_the_batch_the_headers_and_the_key_and_the_request_is_recorded() -> None:
    seen: list[MockRequest] = []

    def handler(request: MockRequest) -> MockResponse:
        seen.append(request)
        return MockResponse.ok()

    transport = MockTransport(handler)
    response = transport.post("https://api.example", KEY, BODIES, retry_count=2)
    assert response == Response(status=200)
    (request,) = seen
    assert transport.requests == [request]
    assert transport.responses == [response]
    assert request.endpoint == "https://api.example"
    assert request.url == "https://api.example/v1/batch"
    assert [item["anonymousId"] for item in request.items] == [
        f"u{i}@example.com" for i in range(3)
    ]
    assert request.message_ids == [encode_id(i) for i in range(3)]
    assert request.retry_count == 2
    assert request.write_key == KEY
    assert request.headers == HttpTransport().headers(KEY, 2)
    assert request.headers["X-Retry-Count"] == "2"
    body = request.json()
    assert body["writeKey"] == KEY
    assert len(body["batch"]) == 3
    # The body is the one HttpTransport would send, byte for byte (sentAt aside).
    when = datetime.fromisoformat(body["sentAt"].replace("Z", "+00:00"))
    assert request.content == build_body(BODIES, KEY, when)


def encode_id(i: int) -> str:
    return encode({"type": "opened", "email": f"u{i}@example.com", "event_id": str(i)}).message_id


def test_the_write_key_is_in_no_repr() -> None:
    transport = MockTransport()
    transport.post("https://api.example", KEY, BODIES, retry_count=1)
    (request,) = transport.requests
    for text in (repr(request), repr(transport), repr(transport.requests), str(request)):
        assert KEY not in text
        assert "Basic" not in text
    assert "items=3" in repr(request)


def test_a_request_is_stamped_with_the_transports_clock() -> None:
    clock = FakeClock(start=100.0)
    transport = MockTransport(clock=clock)
    transport.post("https://api.example", KEY, BODIES)
    clock.advance(0.4)
    transport.post("https://api.example", KEY, BODIES)
    assert [r.at for r in transport.requests] == [100.0, 100.4]


def test_gzip_sends_the_body_compressed_at_level_3() -> None:
    transport = MockTransport(gzip=True)
    transport.post("https://api.example", KEY, BODIES)
    (request,) = transport.requests
    assert request.headers["Content-Encoding"] == "gzip"
    plain = gzip.decompress(request.content)
    assert gzip.compress(plain, compresslevel=3, mtime=0) == request.content
    assert len(request.json()["batch"]) == len(request.items) == 3


@pytest.mark.parametrize(("batch_gzip", "mock_gzip"), [(True, False), (False, True)])
def test_the_mock_transports_own_gzip_decides_the_content_not_the_batch_policy(
    batch_gzip: bool, mock_gzip: bool
) -> None:
    """docs/testing.md said ``content`` is the body exactly as it would go on the wire;
    under ``BatchPolicy(gzip=True)`` it was not compressed (found by a review). The page
    says now what decides: ``MockTransport(gzip=True)``; the emitter's ``BatchPolicy`` sets
    up its default HTTP transport only."""
    transport = MockTransport(gzip=mock_gzip)
    with Emitter(KEY, transport=transport, batch=BatchPolicy(gzip=batch_gzip)) as emitter:
        emitter.opened(email="ada@example.com", event_id="o-1")
        assert emitter.flush(timeout=10)
    (request,) = transport.requests
    assert (request.headers.get("Content-Encoding") == "gzip") is mock_gzip
    assert (request.content[:2] == b"\x1f\x8b") is mock_gzip
    assert request.json()["batch"][0]["messageId"] == request.message_ids[0]


def test_posts_are_validated_as_the_real_transport_validates_them() -> None:
    transport = MockTransport()
    with pytest.raises(ValueError, match="write key"):
        transport.post("https://api.example", "", BODIES)
    with pytest.raises(ValueError, match="at least one"):
        transport.post("https://api.example", KEY, [])
    with pytest.raises(ValueError, match="retry_count"):
        transport.post("https://api.example", KEY, BODIES, retry_count=-1)
    with pytest.raises(BatchTooLarge):
        transport.post("https://api.example", KEY, [b"x" * (33 * 1024)])
    assert transport.requests == []


def test_it_satisfies_the_transport_protocol_and_an_emitter_needs_no_socket(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("a socket was opened")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    transport = MockTransport()
    typed: Transport = transport  # mypy checks the protocol
    with Emitter(write_keys={"acme": KEY}, transport=typed) as em:
        em.emit({"type": "opened", "tenant": "acme", "email": "a@example.com", "event_id": "1"})
        assert em.flush(10)
        assert em.stats().delivered == 1
    assert transport.closed
    assert [r.write_key for r in transport.requests] == [KEY]


# -- MockTransport: answers are classified by HttpTransport's own code -----------------------


class _Answering(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    answer: MockResponse = MockResponse.ok()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        answer = type(self).answer
        self.send_response(answer.status)
        for name, value in answer.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(answer.body)))
        self.end_headers()
        self.wfile.write(answer.body)


@pytest.fixture(scope="module")
def answering() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Answering)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


ANSWERS = {
    "200": MockResponse.ok(),
    "204": MockResponse(204),
    "400 Segment error body": MockResponse.error(400, "bad batch", code="invalid_request"),
    "400 html echoing the key": MockResponse(400, {}, f"<html>no {KEY} here</html>".encode()),
    "401": MockResponse.error(401),
    "403": MockResponse.error(403, "forbidden"),
    "404": MockResponse.error(404),
    "413": MockResponse.error(413, "too large"),
    "422": MockResponse.error(422),
    "429 Retry-After": MockResponse.rate_limited(retry_after=3),
    "429 X-RateLimit-Reset": MockResponse.rate_limited(rate_limit_reset=2),
    "429 both": MockResponse.rate_limited(retry_after=1, rate_limit_reset=4),
    "429 neither": MockResponse.rate_limited(),
    "408": MockResponse.error(408),
    "460": MockResponse(460),
    "500 long body": MockResponse(500, {}, b"y" * 20_000),
    "501": MockResponse.error(501),
    "503 Retry-After": MockResponse.error(503, "busy", retry_after="5"),
    "505": MockResponse.error(505),
    "302 redirect": MockResponse(302, {"Location": "https://elsewhere.example/v1/batch"}),
    "600": MockResponse(600),
}


@pytest.mark.parametrize("answer", ANSWERS.values(), ids=ANSWERS.keys())
def test_an_answer_is_classified_exactly_as_http_transport_classifies_it_from_a_server(
    answering: str, answer: MockResponse
) -> None:
    _Answering.answer = answer
    real = HttpTransport(max_connections=1)
    try:
        from_server = real.post(answering, KEY, BODIES)
    finally:
        real.close()
    mocked = MockTransport(lambda request: answer).post(answering, KEY, BODIES)
    assert mocked == from_server
    assert KEY not in repr(mocked)


def test_a_bare_status_code_is_an_answer_with_an_empty_body() -> None:
    transport = MockTransport(lambda request: 503)
    response = transport.post("https://api.example", KEY, BODIES)
    assert (response.status, response.outcome) == (503, Outcome.RETRY)
    assert response.error == "HTTP 503 Service Unavailable"


@pytest.mark.parametrize(
    "failure",
    [
        ConnectionResetError(f"reset while sending {KEY}"),
        TimeoutError("timed out"),
        urllib3.exceptions.ProtocolError("Connection aborted.", ConnectionResetError(104, "x")),
        urllib3.exceptions.ReadTimeoutError(None, "/v1/batch", "read timed out"),  # type: ignore[arg-type]
    ],
    ids=["reset", "timeout", "protocol", "read timeout"],
)
def test_a_network_failure_is_a_retry_without_status_and_its_text_holds_no_key(
    failure: Exception,
) -> None:
    def handler(request: MockRequest) -> MockResponse:
        raise failure

    transport = MockTransport(handler)
    response = transport.post("https://api.example", KEY, BODIES)
    assert (response.status, response.outcome) == (None, Outcome.RETRY)
    assert response.error is not None
    assert response.error.startswith(type(failure).__name__ + ": ")
    assert KEY not in response.error
    assert transport.errors == []
    assert len(transport.requests) == 1


def test_any_other_handler_exception_is_kept_and_raised() -> None:
    def handler(request: MockRequest) -> MockResponse:
        raise AssertionError("the test's own check failed")

    transport = MockTransport(handler)
    with pytest.raises(AssertionError):
        transport.post("https://api.example", KEY, BODIES)
    assert [type(e) for e in transport.errors] == [AssertionError]
    assert transport.responses == []


def test_response_constructors() -> None:
    assert MockResponse.ok().status == 200
    error = MockResponse.error(400, "bad")
    assert error.body == b'{"code": "bad_request", "message": "bad"}'
    limited = MockResponse.rate_limited(retry_after=2.0, rate_limit_reset="1700000000")
    assert limited.status == 429
    assert limited.headers["Retry-After"] == "2"
    assert limited.headers["X-RateLimit-Reset"] == "1700000000"
    for status in (99, 1000, True, "200"):
        with pytest.raises(ValueError, match="status"):
            MockResponse(status)  # type: ignore[arg-type]


def test_wait_for_requests_and_close() -> None:
    transport = MockTransport()
    assert not transport.wait_for_requests(1, timeout=0.01)
    threading.Thread(target=transport.post, args=("https://api.example", KEY, BODIES)).start()
    assert transport.wait_for_requests(1)
    assert not transport.closed
    transport.close()
    transport.close()
    assert transport.closed


# -- FakeClock -----------------------------------------------------------------------------


class Waiting(threading.Thread):
    """A thread that waits on ``clock`` until ``timeout`` passes or :meth:`notify` is
    called, re-checking after every early return as a caller must; keeps the result of
    its last wait and the fake time it stopped at."""

    def __init__(self, clock: Clock, timeout: float | None) -> None:
        super().__init__(daemon=True)
        self.clock = clock
        self.timeout = timeout
        self.cv = threading.Condition()
        self.notified = False
        self.result: bool | None = None
        self.woke_at: float | None = None

    def notify(self) -> None:
        with self.cv:
            self.notified = True
            self.cv.notify()

    def run(self) -> None:
        end = None if self.timeout is None else self.clock.monotonic() + self.timeout
        with self.cv:
            while not self.notified:
                left = None if end is None else end - self.clock.monotonic()
                self.result = self.clock.wait(self.cv, left)
                if self.result is False:
                    break
            self.woke_at = self.clock.monotonic()


def test_the_time_moves_only_when_told() -> None:
    clock = FakeClock()
    assert clock.monotonic() == 0.0
    clock.advance(1.5)
    assert clock.monotonic() == 1.5
    clock.advance_to(10.0)
    assert clock.monotonic() == 10.0
    assert FakeClock(start=5.0).monotonic() == 5.0
    with pytest.raises(ValueError, match="go back"):
        clock.advance_to(9.0)
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="non-negative, finite"):
            clock.advance(bad)
    assert "now=10.0" in repr(clock)


def test_a_wait_times_out_when_the_fake_time_passes_its_timeout_and_not_before() -> None:
    clock = FakeClock(poll=None)
    waiting = Waiting(clock, 5.0)
    waiting.start()
    assert clock.wait_for_waiters(1)
    assert clock.next_deadline() == 5.0
    clock.advance(4.9)
    assert clock.wait_for_waiters(1)  # woken, re-checked, still waiting
    assert waiting.is_alive()
    clock.advance(0.1)
    waiting.join(10)
    assert not waiting.is_alive()
    assert (waiting.result, waiting.woke_at) == (False, 5.0)
    assert clock.waiting == 0


def test_a_notified_wait_returns_true_at_the_same_fake_time() -> None:
    clock = FakeClock(poll=None)
    waiting = Waiting(clock, 60.0)
    waiting.start()
    assert clock.wait_for_waiters(1)
    waiting.notify()
    waiting.join(10)
    assert (waiting.result, waiting.woke_at) == (True, 0.0)


def test_a_wait_without_time_left_returns_false_at_once() -> None:
    clock = FakeClock()
    cv = threading.Condition()
    with cv:
        assert clock.wait(cv, 0.0) is False
        assert clock.wait(cv, -1.0) is False
    assert clock.waiting == 0


def test_the_backstop_poll_returns_early_without_the_time_moving() -> None:
    clock = FakeClock(poll=0.01)
    cv = threading.Condition()
    with cv:
        assert clock.wait(cv, None) is True  # early: the caller re-checks
    assert clock.monotonic() == 0.0
    with pytest.raises(ValueError, match="poll"):
        FakeClock(poll=0.0)


def test_wait_for_waiters_does_not_count_a_thread_already_notified() -> None:
    clock = FakeClock(poll=None)
    waiting = Waiting(clock, None)
    waiting.start()
    assert clock.wait_for_waiters(1)
    assert clock.next_deadline() is None
    with waiting.cv:  # notified, but it cannot resume while this lock is held
        waiting.notified = True
        waiting.cv.notify()
        assert not clock.wait_for_waiters(1, timeout=0.02)
    waiting.join(10)
    assert not clock.wait_for_waiters(1, timeout=0.02)  # nobody waits any more


def test_run_until_goes_from_deadline_to_deadline() -> None:
    clock = FakeClock()
    ticks: list[float] = []
    stop = threading.Event()

    def ticker() -> None:  # does something every 0.25 fake seconds
        cv = threading.Condition()
        with cv:
            while not stop.is_set():
                due = clock.monotonic() + 0.25
                while clock.monotonic() < due and not stop.is_set():
                    clock.wait(cv, due - clock.monotonic())
                ticks.append(clock.monotonic())

    thread = threading.Thread(target=ticker, daemon=True)
    thread.start()
    assert clock.run_until(lambda: len(ticks) >= 4, waiters=1)
    assert ticks[:4] == [0.25, 0.5, 0.75, 1.0]
    assert clock.monotonic() == 1.0
    stop.set()
    clock.advance(1.0)
    thread.join(10)
    assert not clock.run_until(lambda: False, waiters=1, timeout=0.05)


def test_an_emitter_on_a_fake_clock_retries_on_fake_time() -> None:
    """The seams together: a 503 then a 429 with Retry-After: 7, on a 2 s backoff; the
    retries go out at exactly t=2 and t=9, and no wall-clock second is spent."""
    clock = FakeClock()
    answers = iter([MockResponse(503), MockResponse.rate_limited(retry_after=7)])
    transport = MockTransport(lambda request: next(answers, MockResponse.ok()), clock=clock)
    em = Emitter(
        "key",
        transport=transport,
        clock=clock,
        batch=BatchPolicy(linger=0.0),
        retry=RetryPolicy(initial_backoff=2.0, max_backoff=2.0, jitter=False),
    )
    try:
        em.emit({"type": "opened", "email": "a@example.com", "event_id": "1"})
        assert clock.run_until(lambda: em.stats().delivered == 1, waiters=2)
    finally:
        em.close(0)
    assert [(r.at, r.retry_count) for r in transport.requests] == [(0.0, 0), (2.0, 1), (9.0, 2)]
    assert [r.status for r in transport.responses] == [503, 429, 200]


def test_a_wait_spends_no_wall_clock_time() -> None:
    clock = FakeClock()
    waiting = Waiting(clock, 3600.0)
    waiting.start()
    started = time.monotonic()
    assert clock.run_until(lambda: not waiting.is_alive(), waiters=1)
    assert clock.monotonic() == 3600.0
    assert time.monotonic() - started < 30  # an hour of fake time: no hang
