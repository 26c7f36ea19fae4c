"""Promises of docs/delivery.md, docs/guarantees.md and docs/operations.md that no other
module proves, one test each, named after the behaviour; each docstring quotes the page.

Through the public API only (``selligent_segment``, ``selligent_segment.testing``), real
loopback HTTP to a LocalSegment, real spool files in tmp_path, the command line run as a
user runs it; promises about when a request goes out are proved on a FakeClock with a
MockTransport, to the exact (fake) instant, with no wall-clock wait. A promise the code
does not keep is an ``xfail(strict=True)`` test saying what is wrong.
"""

from __future__ import annotations

import contextlib
import gzip
import inspect
import json
import logging
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import attrs
import pytest
from _delivery import emitter, record
from _http_messages import read_request

from selligent_segment import (
    AsidePolicy,
    BatchPolicy,
    ConfigurationError,
    DeliveryFailure,
    Emitter,
    EmitterClosed,
    InvalidEvent,
    RetryPolicy,
    SpoolFile,
    encode,
)
from selligent_segment.spool import _journal
from selligent_segment.testing import (
    FakeClock,
    Fault,
    FaultPlan,
    LocalSegment,
    MockResponse,
    MockTransport,
)

KEYS = {"acme": "key-acme", "globex": "key-globex"}
SEND = [sys.executable, "-m", "selligent_segment", "send"]
SLOW_RETRY = RetryPolicy(initial_backoff=60.0, max_backoff=60.0)


def unreachable_url() -> str:
    """A loopback URL nothing listens on: every request fails and is retried later."""
    down = LocalSegment().start()
    url = down.url
    down.stop()
    return url


def cli(
    *args: str, env: dict[str, str] | None = None, **options: Any
) -> subprocess.CompletedProcess[str]:
    """``python -m selligent_segment ARGS`` as a user runs it (no write key inherited)."""
    full_env = {k: v for k, v in os.environ.items() if k != "SEGMENT_WRITE_KEY"}
    full_env.update(env or {})
    options.setdefault("timeout", 120)
    return subprocess.run(
        [sys.executable, "-m", "selligent_segment", *args],
        capture_output=True,
        text=True,
        env=full_env,
        check=False,
        **options,
    )


def child(script: str) -> subprocess.Popen[str]:
    """A Python child running ``script``, stdout and stderr piped."""
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def fill(spool: Path, records: list[dict[str, Any]]) -> None:
    """Accept ``records`` into ``spool`` while nothing can deliver them, then close."""
    em = Emitter(write_keys=KEYS, endpoint=unreachable_url(), spool=spool, retry=SLOW_RETRY)
    assert em.emit_many(records).accepted == len(records)
    em.close(0.2)


def wait_until(condition: Any, timeout: float = 10.0) -> bool:
    """Poll ``condition()`` until true; False after ``timeout`` wall-clock seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def epoch(timestamp: str) -> float:
    """A message's ``timestamp`` (``...T..:..:...mmmZ``) as seconds since the epoch."""
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


# == docs/delivery.md ==========================================================================

# -- What `emit` does, and does not do ---------------------------------------------------------


@pytest.mark.parametrize(
    "keys",
    [{"acme": "key-acme"}, lambda tenant: "key-acme"],
    ids=["a one-tenant table", "a resolver"],
)
def test_a_record_without_tenant_is_an_invalid_event_with_any_write_keys(keys: Any) -> None:
    """delivery.md: emit raises "`InvalidEvent` for a missing tenant with `write_keys`"."""
    em = Emitter(write_keys=keys, endpoint=unreachable_url())
    with em, pytest.raises(InvalidEvent) as info:
        em.emit({"type": "opened", "email": "a@example.com"})
    assert info.value.field == "tenant"


@pytest.mark.slow
def test_emit_returns_while_a_request_hangs_on_the_network() -> None:
    """delivery.md: `emit` "never waits on the network"."""
    with LocalSegment(faults=FaultPlan(script=[Fault.latency(4.0)])) as server:
        em = emitter(server, threads=1)
        try:
            em.emit(record(0))
            assert server.wait_for_arrivals(1)  # the only sender is held in that request
            assert all(em.emit(record(i)) for i in range(1, 200))
            assert server.accepted_count == 0  # ... and still is: emit did not wait for it
            assert em.flush(20)
        finally:
            em.close()
        assert server.accepted_count == 200


def test_emit_with_a_spool_file_returns_while_another_connection_locks_the_file(
    tmp_path: Path, server: LocalSegment
) -> None:
    """guarantees.md: "`emit` never waits for the database, another process, or the
    network"; the records it accepted meanwhile are delivered once the lock goes."""
    path = tmp_path / "spool.db"
    em = emitter(server, spool=path)
    try:
        assert em.emit(record(0))
        assert em.flush(10)
        locker = sqlite3.connect(path, timeout=0, isolation_level=None)
        try:
            locker.execute("BEGIN EXCLUSIVE")
            assert all(em.emit(record(i)) for i in range(1, 101))
            locker.execute("ROLLBACK")
        finally:
            locker.close()
        assert em.flush(30)
    finally:
        em.close()
    assert server.accepted_count == 101


def test_a_record_without_timestamp_gets_the_time_of_the_emit_call(tmp_path: Path) -> None:
    """delivery.md: "A record without `timestamp` gets the time of the `emit` call, not of
    the encoding" (with a spool file a record is encoded only when a sender leases it)."""
    path = tmp_path / "spool.db"
    em = Emitter(write_keys=KEYS, endpoint=unreachable_url(), spool=path, retry=SLOW_RETRY)
    before = time.time()
    em.emit(record(1))
    after = time.time()
    em.close(0.2)
    while time.time() < after + 0.1:  # encoding comes well after (timestamps hold ms)
        time.sleep(0.01)
    with LocalSegment() as server:
        with emitter(server, spool=path) as later:
            assert later.flush(10)
        (event,) = server.accepted
    assert before - 0.001 <= epoch(event["timestamp"]) <= after


# -- Options -------------------------------------------------------------------------------


def test_the_options_table_gives_the_defaults_of_the_code() -> None:
    """Pins the defaults of ``EmitterConfig`` (which ``Emitter``'s signature reads, and
    which docs/reference.md renders from the code for delivery.md's Options): region "us",
    spool "memory", 256 MiB, 100,000, "raise", 1.0 s, 2 threads, 50 requests/s, 15 s, 5 s,
    True; the batch policy's 2500 messages, 500_000 bytes, 0.1 s linger, no gzip; the aside
    policy's 4 batches, 16,000,000 bytes, 10 s. A change
    of default fails here first, so it is made on purpose."""
    defaults = {
        name: p.default
        for name, p in inspect.signature(Emitter).parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    assert defaults == {
        "write_key": None,
        "write_keys": None,
        "endpoint": None,
        "region": "us",
        "allow_insecure_http": False,
        "spool": "memory",
        "fsync": False,
        "max_spool_bytes": 256 * 1024 * 1024,
        "max_pending": 100_000,
        "on_full": "raise",
        "block_timeout": 1.0,
        "naming": None,
        "profile_updates": None,
        "batch": None,
        "retry": None,
        "aside": None,
        "threads": 2,
        "max_requests_per_second": 50,
        "timeout": 15,
        "request_deadline": None,
        "proxy": None,
        "ca_bundle": None,
        "on_failure": None,
        "on_pause": None,
        "exit_timeout": 5,
        "handle_sigterm": True,
        "transport": None,
        "clock": None,
    }
    assert attrs.asdict(BatchPolicy()) == {
        "max_messages": 2500,
        "max_bytes": 500_000,
        "linger": 0.1,
        "gzip": False,
    }
    assert attrs.asdict(AsidePolicy()) == {
        "max_batches": 4,
        "max_bytes": 16_000_000,
        "max_wait": 10.0,
    }


def _construct(make: Any) -> None:
    made = make()
    if isinstance(made, Emitter):
        made.close(0)


@pytest.mark.parametrize(
    ("setting", "make"),
    [
        ("batch", lambda: Emitter("k", batch="fast")),
        ("retry", lambda: Emitter("k", retry="fast")),
        ("naming", lambda: Emitter("k", naming="segment-spec")),
        ("on_failure", lambda: Emitter("k", on_failure=42)),
        ("on_pause", lambda: Emitter("k", on_pause=42)),
        ("allow_insecure_http", lambda: Emitter("k", allow_insecure_http="no")),
        ("spool", lambda: Emitter("k", spool=42)),
        ("gzip", lambda: BatchPolicy(gzip="no")),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_every_option_is_validated_when_the_emitter_is_constructed(setting: str, make: Any) -> None:
    """delivery.md: "Every option is validated when the `Emitter` is constructed
    (`ConfigurationError` names it)"."""
    with pytest.raises(ConfigurationError) as info:
        _construct(make)
    assert info.value.setting == setting


def test_with_one_write_key_records_need_no_tenant_and_count_as_default(
    server: LocalSegment,
) -> None:
    """delivery.md, `write_key`: "records need no `tenant` (they count as tenant
    `default`)"."""
    with emitter(server, write_keys=None, write_key="key-one") as em:
        assert em.emit({"type": "opened", "email": "a@example.com", "event_id": "1"})
        assert em.flush(10)
        assert set(em.stats().tenants) == {"default"}
    assert len(server.events("key-one")) == 1


def test_exactly_one_of_write_key_and_write_keys_is_required() -> None:
    """delivery.md, `write_keys`: "exactly one of `write_key`/`write_keys`"."""
    with pytest.raises(ConfigurationError, match="exactly one"):
        Emitter("key", write_keys=KEYS)
    with pytest.raises(ConfigurationError, match="exactly one"):
        Emitter()


def test_on_full_block_waits_for_room_then_accepts(server: LocalSegment) -> None:
    """delivery.md, `on_full`: `"block"`: "wait up to `block_timeout`" for room; when room
    comes (Segment is back), the waiting `emit` accepts its event."""
    server.outage(503)
    em = emitter(
        server,
        max_spool_bytes=64 * 1024,
        max_pending=5,
        on_full="block",
        block_timeout=60.0,
        retry=RetryPolicy(initial_backoff=0.05, max_backoff=0.05, max_attempts=1_000_000),
    )
    n = 1000  # ~400 bytes each: far more than 64 KiB and 5 pending hold
    results: list[bool] = []
    failed: list[BaseException] = []

    def emit_all() -> None:
        try:
            results.extend(em.emit(record(i)) for i in range(n))
        except BaseException as exc:  # reported by the assertions below
            failed.append(exc)

    emitting = threading.Thread(target=emit_all)
    try:
        emitting.start()
        # Blocked: while the outage lasts, retried requests come and go and emit stays put.
        stuck = -1
        while stuck != len(results):
            stuck = len(results)
            assert server.wait_for_requests(server.request_count + 3, timeout=10)
        assert emitting.is_alive()
        server.end_outage()
        emitting.join(30)
        assert not emitting.is_alive()
        assert failed == []
        assert results == [True] * n
        assert em.flush(30)
        assert em.stats().refused == {}
    finally:
        server.end_outage()
        em.close()
        emitting.join(10)
    assert server.accepted_count == n


# -- How events are sent -------------------------------------------------------------------


def test_a_request_never_exceeds_max_bytes_as_sent(server: LocalSegment) -> None:
    """delivery.md, Batches: requests of "at most `max_bytes` (500,000 by default) *as
    sent*: the envelope ... is counted before a message is added"."""
    limit = 33 * 1024
    with emitter(server, batch=BatchPolicy(max_bytes=limit, linger=0.5)) as em:
        em.emit_many([record(i, properties={"note": "x" * 2000}) for i in range(100)])
        assert em.flush(20)
    assert server.accepted_count == 100
    assert len(server.requests) > 1
    assert max(r.nbytes for r in server.requests) <= limit


@contextlib.contextmanager
def raw_endpoint() -> Iterator[tuple[str, list[tuple[dict[str, str], bytes]]]]:
    """A loopback HTTP endpoint answering every POST ``200``; yields its URL and the
    (headers, body) of each request as received, byte for byte."""
    listener = socket.create_server(("127.0.0.1", 0))
    received: list[tuple[dict[str, str], bytes]] = []
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            with conn:
                data = b""
                while (request := read_request(conn, data)) is not None:
                    head, body, data = request
                    lines = head.decode("latin-1").split("\r\n")[1:]
                    headers = {
                        k.strip().lower(): v.strip() for k, v in (h.split(":", 1) for h in lines)
                    }
                    received.append((headers, body))
                    conn.sendall(b'HTTP/1.1 200 OK\r\nContent-Length: 16\r\n\r\n{"success":true}')

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}", received
    finally:
        stop.set()
        thread.join(5)
        listener.close()


def test_gzip_compresses_request_bodies_at_level_3() -> None:
    """delivery.md, `batch`: "`gzip=False` (level 3 when on)"."""
    with raw_endpoint() as (url, received):
        em = Emitter(write_keys=KEYS, endpoint=url, batch=BatchPolicy(linger=1.0, gzip=True))
        with em:
            em.emit_many([record(i) for i in range(50)])
            assert em.flush(10)
    ((headers, body),) = received
    assert headers["content-encoding"] == "gzip"
    plain = gzip.decompress(body)
    assert len(json.loads(plain)["batch"]) == 50
    assert gzip.compress(plain, compresslevel=3, mtime=0) == body
    assert gzip.compress(plain, compresslevel=6, mtime=0) != body  # the level shows


def test_linger_holds_an_idle_tenants_first_event_until_a_full_batch_or_flush() -> None:
    """delivery.md, Linger: "the first event of an idle tenant waits `linger` for company;
    a full batch ... goes at once; `flush()` sends everything at once" (on a FakeClock:
    alone, an event leaves exactly `linger` after it came; with company or a flush, at
    the instant the batch is full or the flush is asked)."""
    clock = FakeClock()
    transport = MockTransport(clock=clock)
    batch = BatchPolicy(max_messages=10, linger=60.0)
    em = Emitter(write_keys=KEYS, transport=transport, clock=clock, batch=batch)
    try:
        em.emit(record(0))  # alone: it waits the whole linger
        assert clock.run_until(lambda: len(transport.requests) == 1, waiters=2)
        em.emit(record(1))  # at t=60, alone again: its linger runs to t=120 ...
        assert wait_until(lambda: clock.next_deadline() == 120.0)
        assert clock.wait_for_waiters(2)
        clock.advance_to(119.9)
        assert clock.wait_for_waiters(2)
        assert len(transport.requests) == 1  # ... lingering
        em.emit_many([record(i) for i in range(2, 11)])  # company: a full batch
        assert transport.wait_for_requests(2)  # at once, the clock standing still
        em.emit(record(11))
        assert em.flush(10)  # the lingering one goes now
    finally:
        em.close(0)
    assert [(r.at, len(r.items)) for r in transport.requests] == [
        (60.0, 1),
        (119.9, 10),
        (119.9, 1),
    ]
    assert sum(len(r.items) for r in transport.requests) == 12


@pytest.mark.slow
def test_a_request_past_its_deadline_is_retried_saying_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """delivery.md, Timeouts: an overdue request "counts as a network failure: retried, with
    the error text `deadline exceeded: the request took longer than 30 s`" (here
    `request_deadline=1`, the endpoint holding the first request 5 s)."""
    caplog.set_level(logging.INFO, logger="selligent_segment")
    with LocalSegment(faults=FaultPlan(script=[Fault.latency(5.0)])) as server:
        with emitter(server, request_deadline=1.0) as em:
            em.emit(record(1))
            assert em.flush(15)
            assert em.stats().retried == 1
        retried = [r.getMessage() for r in caplog.records if "retried" in r.getMessage()]
        assert len(retried) == 1, retried
        assert retried[0].endswith("(deadline exceeded: the request took longer than 1 s)")


def test_a_tenant_in_backoff_holds_no_sender_thread(server: LocalSegment) -> None:
    """delivery.md, Retries: backoff is "never slept in a sender thread: the tenant is
    simply scheduled later" (one sender thread, one tenant backing off 60 s)."""
    server.set_faults(FaultPlan(per_key={"key-acme": [503] * 100}))
    em = emitter(server, threads=1, retry=SLOW_RETRY)
    try:
        em.emit(record(1, "acme"))
        assert server.wait_for_requests(1)  # acme's 503: it backs off for 60 s
        em.emit(record(2, "globex"))
        assert server.wait_for(1, timeout=10)
        assert server.events("key-globex")
        assert not server.events("key-acme")
    finally:
        em.close(0.1)


def test_a_429_delays_only_its_own_tenant() -> None:
    """guarantees.md, 429 rate limit: "that tenant waits for `Retry-After` /
    `X-RateLimit-Reset` ...; other tenants are not delayed" (on a FakeClock, one sender:
    globex goes at once while acme waits exactly its 60 s)."""

    def handler(request: Any) -> MockResponse:
        if request.write_key == "key-acme" and request.retry_count == 0:
            return MockResponse.rate_limited(retry_after=60)
        return MockResponse.ok()

    clock = FakeClock()
    transport = MockTransport(handler, clock=clock)
    em = Emitter(
        write_keys=KEYS, transport=transport, clock=clock, threads=1, batch=BatchPolicy(linger=0)
    )
    try:
        em.emit(record(1, "acme"))
        assert transport.wait_for_requests(1)  # acme's 429: it waits 60 s
        em.emit(record(2, "globex"))
        assert transport.wait_for_requests(2)  # globex at once, the clock standing still
        assert clock.run_until(lambda: em.stats().delivered == 2, waiters=1)
        stats = em.stats()
    finally:
        em.close(0)
    assert [(r.at, r.write_key) for r in transport.requests] == [
        (0.0, "key-acme"),
        (0.0, "key-globex"),
        (60.0, "key-acme"),
    ]
    assert [r.status for r in transport.responses] == [429, 200, 200]
    assert stats.tenants["acme"].retried == 1


@pytest.mark.parametrize("status", [404, 501, 505, 302])
def test_other_never_retried_statuses_reject_the_whole_batch(
    server: LocalSegment, status: int
) -> None:
    """delivery.md, Permanent refusals: "Other never-retried statuses (404, 501, 505, 3xx)
    reject the batch" (in one request: no bisection, no retry)."""
    failures: list[DeliveryFailure] = []
    server.set_faults(FaultPlan(script=[status]))
    with emitter(server, batch=BatchPolicy(linger=5.0), on_failure=failures.append) as em:
        em.emit_many([record(i) for i in range(4)])
        assert em.flush(10)
        assert em.stats().rejected == {"rejected": 4}
    assert [(r.status, r.n_items) for r in server.requests] == [(status, 4)]
    assert [(f.reason, f.status, len(f.message_ids)) for f in failures] == [("rejected", status, 4)]


@pytest.mark.parametrize("status", [413, 422])
def test_a_413_or_422_is_bisected_like_a_400(server: LocalSegment, status: int) -> None:
    """delivery.md, Permanent refusals: "a `400`, `413` or `422` for a batch is bisected
    ...; the rest are delivered, the offenders are reported through `on_failure` with the
    status"."""
    failures: list[DeliveryFailure] = []
    server.set_faults(FaultPlan(script=[status, status]))  # the batch, then its first half
    with emitter(server, batch=BatchPolicy(linger=5.0), on_failure=failures.append) as em:
        em.emit_many([record(0), record(1)])
        assert em.flush(10)
        stats = em.stats()
    assert [(r.status, r.n_items) for r in server.requests] == [(status, 2), (status, 1), (200, 1)]
    assert (stats.delivered, stats.rejected) == (1, {"rejected": 1})
    assert [(f.reason, f.status, f.message_ids) for f in failures] == [
        ("rejected", status, (encode(record(0)).message_id,))
    ]
    assert [e["messageId"] for e in server.accepted] == [encode(record(1)).message_id]


@pytest.mark.slow
def test_a_403_pauses_the_tenant_with_one_error_line_and_a_new_key_resumes_it(
    server: LocalSegment, caplog: pytest.LogCaptureFixture
) -> None:
    """delivery.md, Revoked keys: "a `401`/`403` pauses the tenant: its events are kept,
    `on_pause` is called and one ERROR line is logged. `set_write_key(tenant, key)`
    resumes it at once"."""
    paused: list[tuple[str, str]] = []
    caplog.set_level(logging.INFO, logger="selligent_segment")
    server.set_faults(FaultPlan(per_key={"key-acme": [Fault.http(403)]}))
    em = emitter(server, on_pause=lambda tenant, reason: paused.append((tenant, reason)))
    try:
        em.emit_many([record(i) for i in range(3)])
        assert not em.flush(1.0)
        stats = em.stats().tenants["acme"]
        assert (stats.queued, stats.paused, stats.dropped) == (3, "write key refused (403)", {})
        assert paused == [("acme", "write key refused (403)")]
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert errors == ["tenant 'acme' paused: write key refused (403); its events are kept"]
        em.set_write_key("acme", "key-acme-2")
        assert em.flush(10)
    finally:
        em.close()
    assert len(server.events("key-acme-2")) == 3
    assert [r.status for r in server.requests] == [403, 200]


# -- Process life ----------------------------------------------------------------------------


def test_leaving_a_with_block_closes_the_emitter(server: LocalSegment) -> None:
    """delivery.md: "`with Emitter(...) as emitter:` closes on exit" (it flushed what it
    accepted, and accepts nothing more)."""
    with emitter(server, batch=BatchPolicy(linger=30.0)) as em:
        em.emit(record(1))
    assert server.accepted_count == 1
    with pytest.raises(EmitterClosed):
        em.emit(record(2))


@pytest.mark.slow
def test_the_exit_hook_flushes_for_at_most_exit_timeout_then_reports(
    server: LocalSegment,
) -> None:
    """delivery.md: "At interpreter exit every open emitter is flushed for at most
    `exit_timeout` seconds"; what is left is reported `unsent_at_close` (memory spool)."""
    server.outage(503)
    script = f"""
        import atexit, time
        atexit.register(lambda: print("exit hook took", time.monotonic() - ended, flush=True))
        from selligent_segment import BatchPolicy, Emitter
        em = Emitter(
            "key", endpoint={server.url!r}, exit_timeout=1.0, batch=BatchPolicy(linger=0.0),
            on_failure=lambda f: print("failure", f.reason, len(f.message_ids), flush=True),
        )
        for i in range(3):
            em.emit({{"type": "opened", "email": "a@example.com", "event_id": str(i)}})
        ended = time.monotonic()
    """
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "failure unsent_at_close 3" in done.stdout
    took = float(done.stdout.split("exit hook took")[1])
    assert took < 6.0  # exit_timeout (1 s), not close()'s default of 10 s


_WAITING_APP = """
    import logging, sys, threading
    from selligent_segment import BatchPolicy, Emitter, RetryPolicy
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    def make():
        global em
        em = Emitter(
            "key", endpoint={url!r}, exit_timeout=60.0, batch=BatchPolicy(linger={linger}),
            retry=RetryPolicy(initial_backoff=0.05, max_backoff=0.05, max_attempts=10**6),
            on_failure=lambda f: print("failure", f.reason, flush=True),
        )
        em.emit({{"type": "opened", "email": "a@example.com", "event_id": "1"}})
    {make}
    print("ready", flush=True)
    # Timed waits: a SIGTERM that lands just before an untimed wait blocks would
    # leave its handler pending until the wait ends (CPython runs handlers between
    # bytecodes), which here is never.
    while True:
        threading.Event().wait(0.2)
"""


def test_the_sigterm_handler_is_not_installed_off_the_main_thread(
    server: LocalSegment,
) -> None:
    """delivery.md, SIGTERM: "The handler is not installed off the main thread" (the
    first emitter made in another thread leaves SIGTERM its default action)."""
    script = _WAITING_APP.format(
        url=server.url,
        linger=30.0,
        make="t = threading.Thread(target=make); t.start(); t.join()",
    )
    proc = child(script)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "ready\n"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == -signal.SIGTERM, err
    assert "failure" not in out
    assert server.accepted_count == 0


def test_a_second_sigterm_kills_at_once(server: LocalSegment) -> None:
    """delivery.md, SIGTERM: "A second SIGTERM kills at once" (here while the exit hook
    would flush an outage for its exit_timeout of 60 s)."""
    server.outage(503)
    proc = child(_WAITING_APP.format(url=server.url, linger=0.0, make="make()"))
    try:
        assert proc.stdout is not None
        assert proc.stderr is not None
        assert proc.stdout.readline() == "ready\n"
        proc.send_signal(signal.SIGTERM)
        while "SIGTERM: closing" not in (line := proc.stderr.readline()):
            assert line, "the child ended without handling SIGTERM"
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == -signal.SIGTERM
    assert "failure" not in out  # killed in the middle of the flush: no report ran


def _our_new_threads(before: set[threading.Thread]) -> list[str]:
    return sorted(
        t.name
        for t in threading.enumerate()
        if t not in before and t.name.startswith("selligent-segment-") and "deadline" not in t.name
    )


def test_threads_start_at_the_first_emit_or_with_a_spool_file_at_construction(
    server: LocalSegment, tmp_path: Path
) -> None:
    """delivery.md: "Threads start at the first `emit` (with a spool file, when the
    `Emitter` is made, to deliver what the file holds): one encoder and `threads`
    senders"."""
    expected = [
        "selligent-segment-encoder",
        "selligent-segment-sender-0",
        "selligent-segment-sender-1",
        "selligent-segment-sender-2",
    ]
    before = set(threading.enumerate())
    with emitter(server, threads=3) as em:
        assert _our_new_threads(before) == []
        em.emit(record(1))
        assert _our_new_threads(before) == expected
    before = set(threading.enumerate())
    with emitter(server, threads=3, spool=tmp_path / "spool.db"):
        assert _our_new_threads(before) == expected


# -- Counters ------------------------------------------------------------------------------


@pytest.mark.slow
def test_at_a_quiet_moment_accepted_is_delivered_rejected_dropped_and_queued(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """delivery.md, Counters: "At a quiet moment `accepted == delivered + rejected +
    dropped + queued` for each tenant"; `requests` counts the requests made."""
    keys = {"acme": "key-acme", "globex": "key-globex", "initech": "key-initech"}
    faults = FaultPlan(per_key={"key-globex": [500] * 100})
    with LocalSegment(
        write_keys=["key-acme", "key-globex"],  # initech's key is refused: 401
        strict=True,
        refuse=lambda item: "poison" if item["anonymousId"] == "user2@example.com" else None,
        faults=faults,
    ) as server:
        retry = RetryPolicy(initial_backoff=0.01, max_backoff=0.02, max_attempts=3)
        em = emitter(server, write_keys=keys, retry=retry, batch=BatchPolicy(linger=5.0))
        try:
            for tenant, n in (("acme", 5), ("globex", 2), ("initech", 3)):
                em.emit_many([record(i, tenant) for i in range(n)])
            assert not em.flush(2.0)  # initech is paused
            deadline = time.monotonic() + 20
            while (stats := em.stats()).tenants["globex"].dropped != {"retries_exhausted": 2}:
                assert time.monotonic() < deadline, stats
                time.sleep(0.05)
            quiet = em.stats()
            assert quiet.requests == server.request_count
        finally:
            em.close(0)
    tenants = quiet.tenants
    assert (tenants["acme"].delivered, tenants["acme"].rejected) == (4, {"rejected": 1})
    assert (tenants["initech"].queued, tenants["initech"].paused) == (3, "write key refused (401)")
    for name, t in tenants.items():
        assert (
            t.accepted
            == t.delivered + sum(t.rejected.values()) + sum(t.dropped.values()) + t.queued
        ), name


# -- Secrets and personal data ----------------------------------------------------------------


@pytest.mark.slow
def test_log_lines_at_info_and_above_show_no_email_address_and_no_key(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """delivery.md: "Write keys never appear in a log line ... or a `DeliveryFailure`. Log
    lines at INFO and above name tenants and counts, never email addresses" (through a
    retry, a refusal, a too-large event, a pause and a report at close)."""
    keys = {"acme": "wk-secret-acme", "globex": "wk-secret-globex"}
    failures: list[DeliveryFailure] = []
    caplog.set_level(logging.INFO, logger="selligent_segment")
    with LocalSegment(
        write_keys=["wk-secret-acme"],
        strict=True,
        refuse=lambda item: "poison" if item["anonymousId"] == "user3@example.com" else None,
        faults=FaultPlan(script=[503]),
    ) as server:
        em = emitter(server, write_keys=keys, on_failure=failures.append)
        em.emit_many([record(i) for i in range(6)])
        em.emit(record(9, properties={"blob": "x" * 40_000}))  # over 32 KB: too_large
        em.emit_many([record(i, "globex") for i in range(2)])  # refused key: paused
        assert not em.flush(3.0)
        assert not em.close(0.5)
    reasons = {f.reason for f in failures}
    assert reasons == {"rejected", "too_large", "unsent_at_close"}, reasons
    shown = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    shown += [repr(f) + f.detail for f in failures]
    assert any("retried" in line for line in shown)
    assert any("paused" in line for line in shown)
    for line in shown:
        assert "@example.com" not in line, line
        assert "wk-secret" not in line, line


# == docs/guarantees.md ========================================================================


def test_the_spool_file_is_sqlite_in_wal_mode(tmp_path: Path, server: LocalSegment) -> None:
    """guarantees.md: "the SQLite file (WAL mode)"."""
    path = tmp_path / "spool.db"
    with emitter(server, spool=path) as em:
        em.emit(record(1))
        assert em.flush(10)
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_fsync_adds_an_fdatasync_to_every_emit(
    tmp_path: Path, server: LocalSegment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """guarantees.md: "`Emitter(..., fsync=True)` adds an `fdatasync` to every `emit`"
    (and none without it)."""
    calls: list[int] = []
    real = os.fdatasync

    def counting(fd: int) -> None:
        calls.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fdatasync", counting)
    for fsync, expected in ((False, 0), (True, 3)):
        calls.clear()
        with emitter(server, spool=tmp_path / f"spool-{fsync}.db", fsync=fsync) as em:
            for i in range(3):
                em.emit(record(i))
            assert len(calls) == expected, fsync
            assert em.flush(10)


def test_emit_is_one_journal_write_and_emit_many_one_per_512_records(
    tmp_path: Path, server: LocalSegment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """guarantees.md: `emit` "appends it to this process's journal (a file in
    `<spool>.journals/`) with one `write(2)`"; "`emit_many(records)` journals a chunk of
    up to 512 records with one `write(2)`"."""
    path = tmp_path / "spool.db"
    journals = path.with_name("spool.db.journals").resolve()
    writes: list[int] = []

    def counting(real: Callable[[int, Any], int]) -> Callable[[int, Any], int]:
        def write(fd: int, data: Any) -> int:
            with contextlib.suppress(OSError):
                if Path(os.readlink(f"/proc/self/fd/{fd}")).parent == journals:
                    writes.append(len(data))
            return real(fd, data)

        return write

    with emitter(server, spool=path) as em:
        monkeypatch.setattr(os, "write", counting(os.write))
        if _journal._write_holding_gil is not None:  # the compiled twin, where built
            monkeypatch.setattr(
                _journal, "_write_holding_gil", counting(_journal._write_holding_gil)
            )
        em.emit(record(0))
        assert len(writes) == 1
        writes.clear()
        assert em.emit_many([record(i) for i in range(1, 1025)]).accepted == 1024
        assert len(writes) == 2
        writes.clear()
        assert em.emit_many([record(i) for i in range(1025, 2050)]).accepted == 1025
        assert len(writes) == 3
        monkeypatch.undo()
        assert em.flush(30)
    assert server.accepted_count == 2050


def test_with_a_spool_file_a_batch_past_its_retry_budget_becomes_a_requeueable_dead_letter(
    tmp_path: Path, server: LocalSegment
) -> None:
    """guarantees.md, Segment outage (durable spool): past its retry budget "the batch
    becomes a dead letter (kept, requeueable)"."""
    path = tmp_path / "spool.db"
    failures: list[DeliveryFailure] = []
    server.outage(500)
    retry = RetryPolicy(initial_backoff=0.01, max_backoff=0.02, max_attempts=2)
    with emitter(server, spool=path, retry=retry, on_failure=failures.append) as em:
        em.emit(record(1))
        assert em.flush(10)
        assert em.stats().dropped == {"retries_exhausted": 1}
    assert [f.reason for f in failures] == ["retries_exhausted"]
    with SpoolFile(path) as spool:
        (letter,) = spool.dead_letters()
        assert letter.reason.startswith("retries_exhausted: ")
        assert letter.requeueable
        assert letter.message_id == encode(record(1)).message_id
        assert spool.requeue() == 1
    server.end_outage()
    with emitter(server, spool=path) as em:
        assert em.flush(10)
    assert server.message_ids() == {encode(record(1)).message_id}


@pytest.mark.slow
def test_close_with_a_request_out_leaves_its_batch_in_the_file_for_the_next_start(
    tmp_path: Path,
) -> None:
    """guarantees.md, `close()` with a request still out (durable spool): the batch stays
    in the file (its lease freed) and is sent again by the next start with the same
    `messageId`; the late answer settles nothing."""
    path = tmp_path / "spool.db"
    with LocalSegment(faults=FaultPlan(script=[Fault.latency(2.0)])) as server:
        em = emitter(server, spool=path)
        em.emit_many([record(i) for i in range(5)])
        assert server.wait_for_arrivals(1)
        assert not em.close(0.1)
        assert server.wait_for(5)  # the late answer: 200
        with SpoolFile(path) as spool:
            (acme,) = spool.status().tenants
        assert (acme.queued, acme.leased) == (5, 0)
        with emitter(server, spool=path) as again:
            assert again.flush(10)
        assert server.duplicates == 5
    assert server.message_ids() == {encode(record(i)).message_id for i in range(5)}


def test_a_retried_batch_is_sent_again_before_anything_newer() -> None:
    """guarantees.md, Ordering: "A retried batch is sent again before anything newer from
    that process" (on a FakeClock: the newer events are queued while it backs off 0.5 s)."""
    answers = iter([MockResponse(503)])
    clock = FakeClock()
    transport = MockTransport(lambda request: next(answers, MockResponse.ok()), clock=clock)
    retry = RetryPolicy(initial_backoff=0.5, max_backoff=0.5, jitter=False)
    batch = BatchPolicy(max_messages=10, linger=0.0)
    em = Emitter(write_keys=KEYS, transport=transport, clock=clock, retry=retry, batch=batch)
    try:
        em.emit_many([record(i) for i in range(10)])
        # The first batch fails: it is back in the queue and its tenant backs off 0.5 s.
        assert wait_until(lambda: em.stats().retried == 10)
        em.emit_many([record(i) for i in range(10, 30)])
        # Both in the queue, the failed batch back at its head, before the time moves.
        assert wait_until(lambda: (s := em.stats()).accepted == s.queued == 30)
        assert clock.run_until(lambda: em.stats().delivered == 30, waiters=2)
    finally:
        em.close(0)
    failed, retried, *newer = transport.requests
    assert transport.responses[0].status == 503
    assert (failed.at, retried.at, retried.retry_count) == (0.0, 0.5, 1)
    assert retried.message_ids == failed.message_ids  # the same batch, in the same order
    assert [m["anonymousId"] for m in retried.items] == [f"user{i}@example.com" for i in range(10)]
    assert sorted(m for r in newer for m in r.message_ids) == sorted(
        encode(record(i)).message_id for i in range(10, 30)
    )


def test_a_full_spool_is_logged_once_per_ten_seconds(
    server: LocalSegment, caplog: pytest.LogCaptureFixture
) -> None:
    """guarantees.md, spool full: "with one ERROR log line per 10 s; then `on_full`
    applies" (here `drop_newest`: counted and reported through `on_failure`)."""
    failures: list[DeliveryFailure] = []
    caplog.set_level(logging.ERROR, logger="selligent_segment")
    server.outage(503)
    em = emitter(
        server,
        retry=SLOW_RETRY,
        max_spool_bytes=64 * 1024,
        max_pending=5,
        on_full="drop_newest",
        on_failure=failures.append,
    )
    try:
        results = [em.emit(record(i)) for i in range(2000)]
        dropped = results.count(False)
        assert dropped > 100
        assert em.stats().refused == {"spool_full": dropped}
        assert len(failures) == dropped
        lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(lines) == 1, lines
        assert "spool" in lines[0]
    finally:
        em.close(0.1)


@pytest.mark.slow  # half a second or more: the second step of .ci/run
def test_with_a_shared_file_stats_count_what_this_process_did(tmp_path: Path) -> None:
    """guarantees.md, Counters with a shared file: "`accepted` the events it accepted,
    `delivered` the events it delivered (which may include events other processes
    accepted or left behind), `queued` what the file holds for each tenant"."""
    path = tmp_path / "spool.db"
    first = Emitter(write_keys=KEYS, endpoint=unreachable_url(), spool=path, retry=SLOW_RETRY)
    first.emit_many([record(i) for i in range(5)])
    assert not first.flush(0.5)
    before = first.stats()
    assert (before.accepted, before.delivered, before.queued) == (5, 0, 5)
    first.close(0)
    with LocalSegment() as server, emitter(server, spool=path) as second:
        assert second.flush(10)
        after = second.stats()
    assert (after.accepted, after.delivered, after.queued) == (0, 5, 0)


# == docs/operations.md ========================================================================


@pytest.fixture
def keys_file(tmp_path: Path) -> str:
    path = tmp_path / "keys.json"
    path.write_text(json.dumps(KEYS))
    return str(path)


@pytest.mark.slow
def test_the_console_script_and_python_m_are_the_same_command() -> None:
    """operations.md: "`python -m selligent_segment` is the same command" as
    `selligent-segment`."""
    script = Path(sys.executable).with_name("selligent-segment")
    for args in (["--version"], ["send", "--help"], ["spool", "status", "--help"]):
        installed = subprocess.run(
            [str(script), *args], capture_output=True, text=True, timeout=60, check=False
        )
        module = cli(*args)
        assert installed.returncode == module.returncode == 0, installed.stderr
        assert installed.stdout == module.stdout


@pytest.mark.slow
def test_send_keeps_events_in_the_documented_default_spool_file(
    tmp_path: Path, server: LocalSegment, keys_file: str
) -> None:
    """operations.md: "`--spool PATH`, default `$SELLIGENT_SEGMENT_SPOOL`, else
    `$XDG_STATE_HOME/selligent-segment/spool.db` (`~/.local/state/selligent-segment/
    spool.db`)"."""
    data = tmp_path / "in.jsonl"
    data.write_text(json.dumps(record(1)) + "\n")
    home, state, chosen = tmp_path / "home", tmp_path / "state", tmp_path / "chosen.db"
    base = {k: v for k, v in os.environ.items() if k not in ("XDG_STATE_HOME", "HOME")}
    runs = [
        ({"SELLIGENT_SEGMENT_SPOOL": str(chosen), "XDG_STATE_HOME": str(state)}, chosen),
        ({"XDG_STATE_HOME": str(state)}, state / "selligent-segment" / "spool.db"),
        ({"HOME": str(home)}, home / ".local" / "state" / "selligent-segment" / "spool.db"),
    ]
    for env, where in runs:
        done = subprocess.run(
            [*SEND, str(data), "--write-keys", keys_file, "--endpoint", server.url],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env={**{k: v for k, v in base.items() if k != "SELLIGENT_SEGMENT_SPOOL"}, **env},
        )
        assert done.returncode == 0, done.stderr
        assert where.is_file(), (env, sorted(p.name for p in tmp_path.rglob("*.db")))
        with SpoolFile(where) as spool:
            assert spool.status().queued == 0
    assert server.accepted_count == 1  # the same record each time: one messageId


@pytest.mark.slow  # half a second or more: the second step of .ci/run
def test_a_killed_send_loses_nothing_it_had_read(tmp_path: Path, keys_file: str) -> None:
    """operations.md: "An interrupted or killed `send` loses nothing it had read: run
    `selligent-segment flush` ... to deliver the rest"."""
    spool = tmp_path / "spool.db"
    globex = [record(i, "globex") for i in range(25)]
    with LocalSegment(faults=FaultPlan(per_key={"key-globex": [503] * 10_000})) as server:
        send = subprocess.Popen(
            [
                *SEND,
                "-",
                "--spool",
                str(spool),
                "--write-keys",
                keys_file,
                "--endpoint",
                server.url,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        try:
            assert send.stdin is not None
            lines = [json.dumps(r) + "\n" for r in [*globex, record(0, "acme")]]
            send.stdin.write("".join(lines))
            send.stdin.flush()  # stdin stays open: send waits for more
            assert server.wait_for(1, timeout=60)  # acme's event, read after all of globex's
            send.kill()
            assert send.wait(30) == -signal.SIGKILL
        finally:
            send.kill()
        server.set_faults(None)
        flushed = cli(
            "flush", "--spool", str(spool), "--write-keys", keys_file, "--endpoint", server.url
        )
        assert flushed.returncode == 0, flushed.stderr
        assert {e["messageId"] for e in server.events("key-globex")} == {
            encode(r).message_id for r in globex
        }


@pytest.mark.slow  # half a second or more: the second step of .ci/run
def test_a_record_without_event_id_and_timestamp_keeps_its_id_when_sent_again(
    tmp_path: Path, server: LocalSegment, keys_file: str
) -> None:
    """operations.md: "Records without `event_id` and without `timestamp` are stamped with
    the time they are read, and their ids ignore that time: a re-run still gives the same
    ids"."""
    data = tmp_path / "in.jsonl"
    data.write_text(json.dumps({"type": "opened", "tenant": "acme", "email": "a@example.com"}))
    common = [str(data), "--write-keys", keys_file, "--endpoint", server.url]
    before = time.time()
    first = cli("send", *common)
    after = time.time()
    again = cli("send", *common)
    assert (first.returncode, again.returncode) == (0, 0), first.stderr + again.stderr
    assert (server.accepted_count, server.duplicates) == (1, 1)
    (event,) = server.accepted
    assert before - 0.001 <= epoch(event["timestamp"]) <= after


@pytest.mark.slow
def test_flush_stops_when_only_paused_tenants_are_left(tmp_path: Path, keys_file: str) -> None:
    """operations.md, `flush`: "It stops when nothing deliverable is left, when only paused
    tenants (key refused or missing) are left, or after `--timeout` seconds" (here long
    before its --timeout of 600 s)."""
    spool = tmp_path / "spool.db"
    fill(spool, [record(i, "globex") for i in range(3)])
    with LocalSegment(write_keys=["key-acme"]) as server:  # globex's key is refused
        done = cli(
            "flush", "--spool", str(spool), "--write-keys", keys_file, "--endpoint", server.url,
            "--timeout", "600", timeout=60,
        )  # fmt: skip
    assert done.returncode == 3, done.stderr
    assert "  tenant 'globex': 3 events not delivered (write key refused (401))" in (
        done.stderr.splitlines()
    )


def _spool_in_three_states(spool: Path) -> None:
    """acme's events queued (Segment answers it 503), globex's paused (key refused),
    initech's refused for good (a dead letter)."""
    keys = {"acme": "key-acme", "globex": "key-globex", "initech": "key-initech"}
    with LocalSegment(
        write_keys=["key-acme", "key-initech"],
        strict=True,
        refuse=lambda item: "poison" if item["properties"]["email_id"] == "bad" else None,
        faults=FaultPlan(per_key={"key-acme": [503] * 100}),
    ) as server:
        em = Emitter(write_keys=keys, endpoint=server.url, spool=spool, retry=SLOW_RETRY)
        em.emit_many(
            [record(i, "acme") for i in range(3)]
            + [record(i, "globex") for i in range(2)]
            + [record(9, "initech", email_id="bad")]
        )
        deadline = time.monotonic() + 30
        while not (server.request_count >= 3 and em.stats().tenants["globex"].paused):
            assert time.monotonic() < deadline, server.requests
            time.sleep(0.05)
        em.close(0)


@pytest.mark.slow  # half a second or more: the second step of .ci/run
def test_spool_status_prints_each_tenants_backlog_and_state(tmp_path: Path) -> None:
    """operations.md, `spool status`: the size on disk, the journals, the live processes,
    then per tenant "events queued ..., leased ..., dead letters, the age of the oldest
    queued event and the state" (waiting, paused: why, idle)."""
    spool = tmp_path / "spool.db"
    _spool_in_three_states(spool)
    done = cli("spool", "status", "--spool", str(spool))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"spool {spool}"
    assert lines[1].endswith(" in journals), 0 live processes")
    assert lines[1].split()[1:4] == ["bytes", "on", "disk"]
    assert lines[2] == "  tenant     queued   leased    dead  oldest  state"
    rows = [line.split(maxsplit=5) for line in lines[3:6]]
    assert [row[:4] + row[5:] for row in rows] == [
        ["acme", "3", "0", "0", "waiting"],
        ["globex", "2", "0", "0", "paused: write key refused (401)"],
        ["initech", "0", "0", "1", "idle"],
    ]
    assert [row[4][-1] for row in rows[:2]] == ["s", "s"]
    assert rows[2][4] == "-"
    # then "for each tenant that had one, its last delivery error ... and how long ago"
    assert [line.split(":", 1)[0] for line in lines[6:]] == [
        "  last error of 'acme'",
        "  last error of 'globex'",
        "  last error of 'initech'",
    ]
    assert "HTTP 503" in lines[6]
    assert lines[7].startswith("  last error of 'globex': write key refused (401), ")
    assert all(line.endswith(" ago") for line in lines[6:])
    data = json.loads(cli("spool", "status", "--spool", str(spool), "--json").stdout)
    assert [
        (t["tenant"], t["queued"], t["leased"], t["dead_letters"], t["paused"])
        for t in data["tenants"]
    ] == [
        ("acme", 3, 0, 0, None),
        ("globex", 2, 0, 0, "write key refused (401)"),
        ("initech", 0, 0, 1, None),
    ]


@pytest.mark.slow  # half a second or more: the second step of .ci/run
def test_spool_status_counts_only_the_live_processes(tmp_path: Path) -> None:
    """operations.md, `spool status`: "the live processes using the file" (none here: the
    one that used it was killed)."""
    spool = tmp_path / "spool.db"
    killed = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(f"""
            import os
            from selligent_segment import Emitter
            em = Emitter("key", endpoint={unreachable_url()!r}, spool={str(spool)!r})
            em.emit({{"type": "opened", "email": "a@example.com", "event_id": "1"}})
            os.kill(os.getpid(), 9)
        """)],
        timeout=60,
        check=False,
    )  # fmt: skip
    assert killed.returncode == -signal.SIGKILL
    done = cli("spool", "status", "--spool", str(spool), "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["processes"] == 0


def test_spool_status_of_a_missing_file_exits_2_in_one_line(tmp_path: Path) -> None:
    """operations.md, `spool status`: "Exit 0, or 2 when the file is missing, not a spool,
    or corrupt (one line says which)"."""
    missing = tmp_path / "nope.db"
    done = cli("spool", "status", "--spool", str(missing))
    assert done.returncode == 2
    (line,) = done.stderr.splitlines()
    assert str(missing) in line
    assert "no spool file there" in line
    assert not missing.exists()


@pytest.mark.slow
def test_dead_letter_commands_exit_0_when_nothing_matches(tmp_path: Path) -> None:
    """operations.md, `dead-letters`: "Exit 0 (also when nothing matched), or 2"."""
    spool = tmp_path / "spool.db"
    fill(spool, [record(1)])
    listed = cli("dead-letters", "list", "--spool", str(spool))
    requeued = cli("dead-letters", "requeue", "--spool", str(spool), "--tenant", "nobody")
    purged = cli("dead-letters", "purge", "--spool", str(spool), "--reason", "rejected")
    assert (listed.returncode, listed.stdout, listed.stderr) == (0, "", "0 dead letters\n")
    assert (requeued.returncode, requeued.stdout) == (0, "0 dead letters requeued\n")
    assert (purged.returncode, purged.stdout) == (0, "0 dead letters purged\n")


@pytest.mark.slow  # half a second or more: the second step of .ci/run
def test_dead_letters_list_prints_one_line_per_letter(tmp_path: Path) -> None:
    """operations.md: "`list` prints one line per letter: id, tenant, event kind, when it
    failed, status, reason; `--json` adds the message bodies"."""
    spool = tmp_path / "spool.db"
    with LocalSegment(strict=True, refuse=lambda item: "poison") as server:
        em = emitter(server, spool=spool)
        with em:
            em.emit(record(1))
            assert em.flush(10)
    done = cli("dead-letters", "list", "--spool", str(spool))
    assert done.returncode == 0, done.stderr
    (line,) = done.stdout.splitlines()
    letter_id, tenant, kind, failed_at, status, reason = line.split("\t")
    assert (tenant, kind, status) == ("acme", "delivered", "400")
    assert letter_id.isdigit()
    assert datetime.strptime(failed_at, "%Y-%m-%d %H:%M:%SZ")
    assert reason.startswith("rejected: ")
    assert "poison" in reason
    (full,) = json.loads(cli("dead-letters", "list", "--spool", str(spool), "--json").stdout)
    assert full["id"] == int(letter_id)
    assert json.loads(full["body"])["messageId"] == encode(record(1)).message_id


@pytest.mark.slow
def test_dead_letters_reason_matches_the_start_of_the_reason(tmp_path: Path) -> None:
    """operations.md: "`--reason` matches the start of the reason (`--reason rejected`)"."""
    spool = tmp_path / "spool.db"
    with LocalSegment(strict=True, refuse=lambda item: "poison") as server:
        em = emitter(server, spool=spool)
        with em:
            em.emit(record(1))
            assert em.flush(10)
    for reason, count in (("rejected", 1), ("rejected: HTTP 400", 1), ("poison", 0), ("r%", 0)):
        listed = cli("dead-letters", "list", "--spool", str(spool), "--reason", reason, "--json")
        assert listed.returncode == 0, listed.stderr
        assert len(json.loads(listed.stdout)) == count, reason


@pytest.mark.slow
def test_running_emitters_pick_up_requeued_dead_letters_within_seconds(
    tmp_path: Path, server: LocalSegment
) -> None:
    """operations.md: "`requeue` puts them back in their tenants' queues with the same
    `messageId`; running emitters pick them up within seconds" (no flush asked)."""
    spool = tmp_path / "spool.db"
    server.outage(500)
    with emitter(server, spool=spool, retry=RetryPolicy(max_attempts=1)) as em:
        em.emit(record(1))
        assert em.flush(10)
        assert em.stats().dropped == {"retries_exhausted": 1}
        server.end_outage()
        requeued = cli("dead-letters", "requeue", "--spool", str(spool))
        assert requeued.stdout == "1 dead letters requeued\n", requeued.stderr
        assert server.wait_for(1, timeout=20)
    assert server.message_ids() == {encode(record(1)).message_id}


@pytest.mark.parametrize(
    ("where", "says"),
    [
        # /proc takes no new directory, even from root
        (Path("/proc") / f"selligent-segment-{os.getpid()}", "cannot create the spool file: "),
        (Path(__file__), "cannot read the spool file: "),  # a file, not a directory
    ],
    ids=["cannot create", "cannot read"],
)
def test_a_spool_file_that_cannot_be_made_stops_send_in_one_line(
    keys_file: str, where: Path, says: str
) -> None:
    """operations.md, the spool file: "`PATH: cannot create the spool file: ...` / `cannot
    read the spool file: ...`": a new file cannot be made there (exit 2, nothing sent)."""
    spool = where / "spool.db"
    with LocalSegment() as server:
        done = cli(
            "send", "-", "--spool", str(spool), "--write-keys", keys_file,
            "--endpoint", server.url, input=json.dumps(record(1)) + "\n",
        )  # fmt: skip
        assert server.request_count == 0
    assert done.returncode == 2
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"selligent-segment: send: {spool}: {says}")
