"""The overall deadline of one request, against raw-socket servers on 127.0.0.1.

Each server thread answers as slowly as a broken proxy can: one byte at a time, each
byte well within the read timeout, so only a deadline on the whole request ends it.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from _http_messages import read_request

from selligent_segment.delivery._retry import Outcome
from selligent_segment.delivery._transport import DEFAULT_DEADLINE, HttpTransport

KEY = "wk_Secret123"
DEADLINE = 1.0
# Generous: the watchdog acts within tens of milliseconds, but the machine is shared.
MARGIN = 3.0
DRIP = 0.2  # seconds between two bytes; far below the read timeout
WATCHDOG = "selligent-segment-deadline"
FAST_ANSWER = b'HTTP/1.1 200 OK\r\nContent-Length: 16\r\n\r\n{"success":true}'

Handler = Callable[[socket.socket, threading.Event], None]


def message(i: int) -> bytes:
    return json.dumps({"type": "track", "event": "Email Opened", "messageId": f"m{i}"}).encode()


def fast(conn: socket.socket, stop: threading.Event) -> None:
    """Answer every request on the connection at once with a keep-alive 200."""
    while not stop.is_set() and read_request(conn, b"") is not None:
        conn.sendall(FAST_ANSWER)


def drip(
    data: bytes,
    *,
    at_once: bytes = b"",
    handshake: bool = False,
    started: threading.Event | None = None,
) -> Handler:
    """Read the request (or, for ``handshake``, the TLS ClientHello), set ``started``, send
    ``at_once``, then ``data`` one byte per :data:`DRIP` seconds (12 s for 60 bytes)."""

    def handler(conn: socket.socket, stop: threading.Event) -> None:
        if handshake:
            conn.recv(65536)
        elif read_request(conn, b"") is None:
            return
        if started is not None:
            started.set()
        conn.sendall(at_once)
        for i in range(len(data)):
            if stop.wait(DRIP):
                return
            conn.sendall(data[i : i + 1])

    return handler


class RawServer:
    """Serves each accepted connection with the next scripted handler (else :func:`fast`),
    each on its own thread; counts the connections."""

    def __init__(self, *handlers: Handler) -> None:
        self.handlers = list(handlers)
        self.connections = 0
        self.stop = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.threads: list[threading.Thread] = []
        self.accepted: list[socket.socket] = []
        self.acceptor = threading.Thread(target=self._accept, name="raw-server", daemon=True)
        self.acceptor.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listener.getsockname()[1]}"

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return  # the listener was closed
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.connections += 1
            self.accepted.append(conn)
            handler = self.handlers.pop(0) if self.handlers else fast
            thread = threading.Thread(
                target=self._serve, args=(handler, conn), name="raw-server", daemon=True
            )
            self.threads.append(thread)
            thread.start()

    def _serve(self, handler: Handler, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            handler(conn, self.stop)

    def close(self) -> None:
        self.stop.set()
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        self.acceptor.join(5)
        # Wake handlers blocked on a client that keeps its socket (urllib3 2's
        # PoolManager.clear leaves closing the pooled ones to the garbage collector).
        for conn in self.accepted:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        for thread in self.threads:
            thread.join(5)


@contextlib.contextmanager
def serving(*handlers: Handler) -> Iterator[RawServer]:
    server = RawServer(*handlers)
    try:
        yield server
    finally:
        server.close()


@contextlib.contextmanager
def impatient(deadline: float = DEADLINE, connect_timeout: float = 2.0) -> Iterator[HttpTransport]:
    transport = HttpTransport(connect_timeout=connect_timeout, read_timeout=2.0, deadline=deadline)
    try:
        yield transport
    finally:
        transport.close()


def timed_post(transport: HttpTransport, url: str, i: int = 1) -> tuple[float, Outcome, str]:
    started = time.monotonic()
    response = transport.post(url, KEY, [message(i)])
    elapsed = time.monotonic() - started
    assert response.error is None or KEY not in response.error
    return elapsed, response.outcome, f"{response.status} {response.error}"


# -- the deadline ends what the read timeout cannot -----------------------------------------


@pytest.mark.slow
@pytest.mark.fault_injection
def test_a_status_line_dripped_byte_by_byte_ends_at_the_deadline() -> None:
    answer = b"HTTP/1.1 200 OK\r\nX-Slow: " + b"z" * 30 + b"\r\nContent-Length: 16\r\n\r\n"
    with serving(drip(answer)) as server, impatient() as transport:
        elapsed, outcome, text = timed_post(transport, server.url)
        assert elapsed < DEADLINE + MARGIN, text
        assert outcome is Outcome.RETRY
        assert text.startswith("None deadline exceeded")
        # The connection went: the next post opens a new one and is delivered.
        assert timed_post(transport, server.url, 2)[1] is Outcome.DELIVERED
        assert server.connections == 2


@pytest.mark.slow
@pytest.mark.fault_injection
def test_a_body_dripped_byte_by_byte_ends_at_the_deadline() -> None:
    head = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 60\r\n\r\n"
    with serving(drip(b"x" * 60, at_once=head)) as server, impatient() as transport:
        elapsed, outcome, text = timed_post(transport, server.url)
        assert elapsed < DEADLINE + MARGIN, text
        assert outcome is Outcome.RETRY
        assert text.startswith("503 ")
        assert "deadline exceeded" in text
        assert timed_post(transport, server.url, 2)[1] is Outcome.DELIVERED
        assert server.connections == 2


@pytest.mark.slow
def test_a_success_status_with_a_dripped_body_is_delivered_and_its_connection_dropped() -> None:
    # As for any 2xx whose body could not be read: Segment has taken the batch.
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 60\r\n\r\n"
    with serving(drip(b"x" * 60, at_once=head)) as server, impatient() as transport:
        elapsed, outcome, text = timed_post(transport, server.url)
        assert elapsed < DEADLINE + MARGIN, text
        assert outcome is Outcome.DELIVERED
        assert timed_post(transport, server.url, 2)[1] is Outcome.DELIVERED
        assert server.connections == 2


@pytest.mark.slow
def test_a_tls_handshake_dripped_byte_by_byte_ends_at_the_deadline() -> None:
    # A TLS record header announcing 16 KB, then its bytes one at a time: the handshake
    # would go on until the (long) connect timeout.
    record = b"\x16\x03\x03\x40\x00"
    with serving(drip(b"\x02" * 60, at_once=record, handshake=True)) as server:
        url = server.url.replace("http://", "https://")
        with impatient(connect_timeout=10.0) as transport:
            elapsed, outcome, text = timed_post(transport, url)
        assert elapsed < DEADLINE + MARGIN, text
        assert outcome is Outcome.RETRY
        assert text.startswith("None deadline exceeded")


def never_accepting(stack: contextlib.ExitStack, host: str, port: int = 0) -> int:
    """A listener on ``host`` whose accept queue is full, so the next SYN gets no answer
    (on Linux): a connect to it hangs until its timeout. Its port."""
    listener = stack.enter_context(socket.create_server((host, port), backlog=0))
    port = listener.getsockname()[1]
    for _ in range(4):
        waiting = stack.enter_context(socket.socket())
        waiting.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            waiting.connect((host, port))
    return port


def assert_connecting_ends_at_the_deadline(url: str) -> None:
    """A post to ``url``, whose connect never completes, ends at the deadline, though its
    connect timeout is ten times longer."""
    with impatient(connect_timeout=10.0) as transport:
        elapsed, outcome, text = timed_post(transport, url)
    assert elapsed < DEADLINE + MARGIN, text
    assert outcome is Outcome.RETRY
    assert text.startswith("None deadline exceeded")


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="Linux drops a SYN to a full accept queue")
def test_a_connection_that_is_never_accepted_ends_at_the_deadline() -> None:
    with contextlib.ExitStack() as stack:
        port = never_accepting(stack, "127.0.0.1")
        assert_connecting_ends_at_the_deadline(f"http://127.0.0.1:{port}")


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="Linux drops a SYN to a full accept queue")
def test_a_host_of_many_addresses_never_accepting_ends_at_the_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Found by a review: urllib3 tries each address of a host with the whole connect
    timeout, and the watchdog cannot cut a connect; six addresses that drop packets took
    six times the (once clipped) timeout, 6 s here. Each now gets only the time left."""
    addresses = [f"127.0.0.{last}" for last in range(2, 8)]
    resolve = socket.getaddrinfo

    def six_addresses(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host != "collector.test":
            return resolve(host, port, *args, **kwargs)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in addresses]

    with contextlib.ExitStack() as stack:
        port = never_accepting(stack, addresses[0])
        for address in addresses[1:]:
            never_accepting(stack, address, port)
        monkeypatch.setattr(socket, "getaddrinfo", six_addresses)
        assert_connecting_ends_at_the_deadline(f"http://collector.test:{port}")


@pytest.mark.slow
def test_a_tls_handshake_after_a_slow_proxy_connect_ends_at_the_deadline() -> None:
    """Found by a review: the TLS handshake after a proxy's ``CONNECT`` had the time left
    when the TCP connection opened, not when the ``CONNECT`` answer ended: a proxy that
    dripped its answer until just before the deadline, then sent nothing, made the
    request last up to twice its deadline (the connect timeout more, at most)."""
    deadline = 4.0
    established = b"HTTP/1.1 200 Connection established\r\n\r\n"

    def proxy(conn: socket.socket, stop: threading.Event) -> None:
        if read_request(conn, b"") is None:
            return
        for i in range(len(established)):  # done at about 3.7 s
            if stop.wait(3.7 / len(established)):
                return
            conn.sendall(established[i : i + 1])
        with contextlib.suppress(OSError):
            while conn.recv(65536):  # the ClientHello, never answered
                pass

    with serving(proxy) as server:
        transport = HttpTransport(
            proxy=server.url, connect_timeout=10.0, read_timeout=2.0, deadline=deadline
        )
        try:
            started = time.monotonic()
            response = transport.post("https://collector.test", KEY, [message(1)])
            elapsed = time.monotonic() - started
        finally:
            transport.close()
    assert elapsed < deadline + 2.0, response.error
    assert response.outcome is Outcome.RETRY


@pytest.mark.slow
def test_an_overdue_request_does_not_disturb_another_on_the_same_transport() -> None:
    answer = b"HTTP/1.1 200 OK\r\nX-Slow: " + b"z" * 30 + b"\r\nContent-Length: 16\r\n\r\n"
    dripping = threading.Event()
    with serving(drip(answer, started=dripping)) as server, impatient() as transport:
        slow: list[tuple[float, Outcome, str]] = []
        thread = threading.Thread(target=lambda: slow.append(timed_post(transport, server.url)))
        thread.start()
        assert dripping.wait(MARGIN)  # the slow post has the dripping connection
        # Fast posts on a second connection, before, across and after the slow one's deadline.
        outcomes = []
        while thread.is_alive():
            outcomes.append(timed_post(transport, server.url, 2)[1])
        thread.join()
        outcomes.append(timed_post(transport, server.url, 3)[1])
        assert slow[0][0] < DEADLINE + MARGIN, slow[0][2]
        assert slow[0][1] is Outcome.RETRY
        assert set(outcomes) == {Outcome.DELIVERED}


# -- healthy requests -------------------------------------------------------------------------


@pytest.mark.slow
def test_fast_requests_keep_their_connection_long_after_their_deadlines_passed() -> None:
    # Deadlines of requests that ended long ago fall due while the connection is pooled
    # or carries later requests: none of them may shut it down.
    with serving() as server, impatient(deadline=0.2) as transport:
        started = time.monotonic()
        outcomes = []
        while time.monotonic() - started < 1.0:
            outcomes.append(timed_post(transport, server.url, len(outcomes))[1])
        assert len(outcomes) > 10
        assert set(outcomes) == {Outcome.DELIVERED}
        assert server.connections == 1


@pytest.mark.slow
def test_many_transports_share_one_watchdog_thread() -> None:
    def others() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name != "raw-server"]

    answer = b"HTTP/1.1 200 OK\r\nX-Slow: " + b"z" * 30 + b"\r\n\r\n"
    with serving(*[drip(answer) for _ in range(3)]) as server:
        before = others()
        for i in range(30):
            with impatient(deadline=0.3) as transport:
                elapsed, outcome, text = timed_post(transport, server.url, i)
                assert elapsed < 0.3 + MARGIN, text
                assert outcome is (Outcome.RETRY if i < 3 else Outcome.DELIVERED), text
        after = others()
    assert len([t for t in after if t.name == WATCHDOG]) == 1
    assert len(after) <= len(before) + 1


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_gets_its_own_watchdog() -> None:
    answer = b"HTTP/1.1 200 OK\r\nX-Slow: " + b"z" * 30 + b"\r\nContent-Length: 16\r\n\r\n"
    with serving(fast, drip(answer)) as server, impatient() as transport:
        # The parent's watchdog thread exists; the child has only its (dead) copy.
        assert timed_post(transport, server.url)[1] is Outcome.DELIVERED
        pid = os.fork()
        if pid == 0:  # the child: its post gets the dripping connection
            code = 2
            try:
                elapsed, outcome, _ = timed_post(transport, server.url, 2)
                code = 0 if elapsed < DEADLINE + MARGIN and outcome is Outcome.RETRY else 1
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert server.connections == 2


# -- the setting ------------------------------------------------------------------------------


def test_the_deadline_is_validated_and_shown() -> None:
    for bad in (0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="deadline must be a positive"):
            HttpTransport(deadline=bad)
    with pytest.raises(TypeError, match="deadline must be a number"):
        HttpTransport(deadline=True)
    with pytest.raises(TypeError, match="deadline must be a number"):
        HttpTransport(deadline="30")  # type: ignore[arg-type]
    assert "deadline=2.5," in repr(HttpTransport(deadline=2.5))


def test_the_default_deadline_never_cuts_the_timeouts_short() -> None:
    assert f"deadline={DEFAULT_DEADLINE}," in repr(HttpTransport())
    assert "deadline=65.0," in repr(HttpTransport(connect_timeout=5.0, read_timeout=60.0))


# -- the host's name is looked up once, and nothing is sent past the deadline ---------------


def _resolving(monkeypatch: pytest.MonkeyPatch, delay: float = 0.0) -> list[str]:
    """``collector.test`` resolves to 127.0.0.1 (after ``delay`` seconds: a slow resolver);
    the list of its lookups."""
    resolve = socket.getaddrinfo
    lookups: list[str] = []

    def fake(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host != "collector.test":
            return resolve(host, port, *args, **kwargs)
        lookups.append(host)
        time.sleep(delay)  # the resolver's own time, not a synchronisation
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    return lookups


def test_a_host_is_looked_up_once_per_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by a review: a host of one address was looked up by the deadline's connect,
    then again by urllib3's, doubling the time a slow resolver takes (which nothing
    bounds)."""
    lookups = _resolving(monkeypatch)
    with serving() as server, impatient() as transport:
        port = server.url.rsplit(":", 1)[1]
        _, outcome, text = timed_post(transport, f"http://collector.test:{port}")
    assert outcome is Outcome.DELIVERED, text
    assert lookups == ["collector.test"]


def test_a_name_that_does_not_resolve_is_looked_up_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by a second review: a failed lookup was made again by urllib3's connect."""
    lookups: list[str] = []

    def unknown(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        lookups.append(host)
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", unknown)
    with impatient() as transport:
        _, outcome, text = timed_post(transport, "http://collector.test:9")
    assert outcome is Outcome.RETRY
    assert "Failed to resolve 'collector.test'" in text, text
    assert lookups == ["collector.test"]


@pytest.mark.slow
def test_nothing_is_sent_once_the_deadline_passed_while_looking_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Found by a review: a request whose deadline passed while its host was looked up was
    still sent, then cut by the watchdog: the server took it, the client counted a
    failure and sent it again (with a slow resolver, every attempt a duplicate)."""
    _resolving(monkeypatch, delay=DEADLINE + 0.2)
    received: list[tuple[bytes, bytes, bytes]] = []

    def recording(conn: socket.socket, stop: threading.Event) -> None:
        request = read_request(conn, b"")
        if request is not None:
            received.append(request)
            conn.sendall(FAST_ANSWER)

    with serving(recording, recording) as server, impatient() as transport:
        port = server.url.rsplit(":", 1)[1]
        _, outcome, text = timed_post(transport, f"http://collector.test:{port}")
    assert outcome is Outcome.RETRY
    assert text.startswith("None deadline exceeded"), text
    assert received == []
