"""The dispatcher: rate cap per write key, server pacing, paused tenants, two requests in
flight, fairness, bisection; and the batch policy it works with.

Scheduling is asserted exactly, on a FakeClock with a MockTransport (no socket, no
wall-clock wait): "the third request leaves at t=0.4". A few tests run over real loopback
HTTP to a LocalSegment, end to end.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any

import pytest
from _delivery import FAST_RETRY, Timed, emitter, fake_emitter, record

from selligent_segment import BatchPolicy, ConfigurationError, Emitter, RetryPolicy, encode
from selligent_segment._clock import SYSTEM_CLOCK, Clock
from selligent_segment.delivery._dispatcher import PAUSED_RECHECK, Dispatcher
from selligent_segment.delivery._keys import WriteKeys, fingerprint
from selligent_segment.delivery._stats import Counters
from selligent_segment.delivery._transport import HttpTransport, Response, Transport
from selligent_segment.spool._memory import MemorySpool
from selligent_segment.spool._protocol import Lease
from selligent_segment.testing import (
    FakeClock,
    Fault,
    FaultPlan,
    Handler,
    LocalSegment,
    MockRequest,
    MockResponse,
    MockTransport,
)

ONE_PER_REQUEST = BatchPolicy(max_messages=1, linger=0.0)
SENDERS = 2  # the Emitter's default number of sender threads


def times_of(requests: Iterable[MockRequest], key: str | None = None) -> list[float]:
    """The fake times of ``requests`` (those sent with ``key``, when given)."""
    return [r.at for r in requests if key is None or r.write_key == key]


# -- the request-rate cap is per write key ----------------------------------------------------

RATE = 5.0  # requests/s; the bucket then holds max(1, RATE / 10) = 1 token
PER_TENANT = 5


def _send_two_tenants(keys: dict[str, str]) -> MockTransport:
    em, transport, clock = fake_emitter(
        write_keys=keys, batch=ONE_PER_REQUEST, max_requests_per_second=RATE
    )
    try:
        em.emit_many([record(i, t) for i in range(PER_TENANT) for t in ("acme", "globex")])
        assert clock.run_until(lambda: em.stats().delivered == 2 * PER_TENANT, waiters=SENDERS)
    finally:
        em.close(0)
    assert sorted(m for r in transport.requests for m in r.message_ids) == sorted(
        encode(record(i, t)).message_id for i in range(PER_TENANT) for t in ("acme", "globex")
    )
    return transport


def test_tenants_sharing_a_write_key_share_its_rate_cap() -> None:
    transport = _send_two_tenants({"acme": "key-shared", "globex": "key-shared"})
    # One bucket of one token for both tenants: one request every 1 / RATE s, exactly.
    assert times_of(transport.requests) == pytest.approx([i / RATE for i in range(2 * PER_TENANT)])


def test_tenants_with_their_own_keys_each_get_the_whole_rate() -> None:
    transport = _send_two_tenants({"acme": "key-acme", "globex": "key-globex"})
    for key in ("key-acme", "key-globex"):  # each key keeps to its own cap ...
        assert times_of(transport.requests, key) == pytest.approx(
            [i / RATE for i in range(PER_TENANT)]
        )
    # ... and together they finish at 0.8 s, a whole second ahead of one shared bucket (1.8 s).
    assert max(times_of(transport.requests)) == pytest.approx((PER_TENANT - 1) / RATE)


def test_rate_buckets_are_kept_by_key_fingerprint_never_by_key(server: LocalSegment) -> None:
    keys = {"acme": "sekrit-shared", "globex": "sekrit-shared", "initech": "sekrit-own"}
    with emitter(server, write_keys=keys) as em:
        for tenant in keys:
            em.emit(record(1, tenant))
        assert em.flush(10)
        buckets = em._dispatcher.limits.buckets
        assert set(buckets) == {fingerprint("sekrit-shared"), fingerprint("sekrit-own")}
        assert "sekrit" not in repr(buckets) + repr(em._dispatcher._tenants)


# -- server pacing --------------------------------------------------------------------------


def test_x_ratelimit_reset_on_a_429_is_obeyed_outside_the_retry_budget(
    server: LocalSegment,
) -> None:
    """End to end over real HTTP, scheduled on a FakeClock: two 429s with
    X-RateLimit-Reset: 1 and no Retry-After. Counted as backoff, they would exhaust
    max_attempts=2; as server pacing they are waited out, exactly 1 s each, and delivered."""
    server.set_faults(FaultPlan(script=[Fault.http(429, x_ratelimit_reset=1)] * 2))
    retry = RetryPolicy(initial_backoff=0.01, max_backoff=0.05, max_attempts=2)
    clock = FakeClock()
    transport = Timed(HttpTransport(), clock)
    em = emitter(server, retry=retry, clock=clock, transport=transport)
    try:
        em.emit(record(1))
        assert clock.run_until(lambda: em.stats().delivered == 1, waiters=SENDERS)
        stats = em.stats()
    finally:
        em.close(0)
    assert (stats.delivered, stats.dropped, stats.retried) == (1, {}, 2)
    assert transport.at == [0.0, 1.0, 2.0]
    assert [r.retry_count for r in server.requests] == [0, 1, 2]
    assert [r.status for r in server.requests] == [429, 429, 200]


def test_a_429_without_either_header_takes_a_counted_backoff(server: LocalSegment) -> None:
    server.set_faults(FaultPlan(script=[429, 429]))
    retry = RetryPolicy(initial_backoff=0.01, max_backoff=0.05, max_attempts=2)
    with emitter(server, retry=retry) as em:
        em.emit(record(1))
        assert em.flush(10)
        assert em.stats().dropped == {"retries_exhausted": 1}
    assert len(server.requests) == 2


# -- paused tenants -----------------------------------------------------------------------------


class Resolver:
    """A key resolver that records when (on ``clock``) the senders ask it."""

    def __init__(self, keys: dict[str, str], clock: Clock = SYSTEM_CLOCK) -> None:
        self.keys = keys
        self.clock = clock
        self.asked: list[float] = []
        self.lock = threading.Lock()

    def __call__(self, tenant: str) -> str | None:
        key = self.keys.get(tenant)  # read first: what is recorded is what was answered
        if threading.current_thread().name.startswith("selligent-segment-sender"):
            with self.lock:
                self.asked.append(self.clock.monotonic())
        return key


def _accepts_only(key: str) -> Handler:
    """A handler that answers 200 to ``key`` and 401 to any other key."""

    def handler(request: MockRequest) -> MockResponse:
        return MockResponse.ok() if request.write_key == key else MockResponse.error(401)

    return handler


def test_a_paused_tenant_is_rechecked_and_resumes_when_its_resolver_gives_a_new_key() -> None:
    paused: list[tuple[str, str]] = []
    clock = FakeClock()
    resolver = Resolver({"acme": "key-old"}, clock)
    em, transport, _ = fake_emitter(
        _accepts_only("key-new"),
        clock=clock,
        write_keys=resolver,
        on_pause=lambda t, r: paused.append((t, r)),
    )
    try:
        em.emit_many([record(i) for i in range(3)])
        # The first turn sends with key-old and is refused (401); each re-check, every
        # PAUSED_RECHECK seconds exactly, asks the resolver again, gets the same refused
        # key and sends nothing.
        assert clock.run_until(lambda: len(resolver.asked) >= 3, waiters=SENDERS)
        assert clock.wait_for_waiters(SENDERS)  # that third turn is over
        assert resolver.asked == [0.0, PAUSED_RECHECK, 2 * PAUSED_RECHECK]
        assert [(r.at, r.write_key) for r in transport.requests] == [(0.0, "key-old")]
        assert transport.responses[0].status == 401
        assert em.stats().tenants["acme"].paused == "write key refused (401)"
        resolver.keys["acme"] = "key-new"
        assert clock.run_until(lambda: em.stats().delivered == 3, waiters=SENDERS)
        stats = em.stats()
    finally:
        em.close(0)
    # The next re-check finds the new key and sends the tenant's three events at once.
    assert [(r.at, r.write_key, len(r.items)) for r in transport.requests[1:]] == [
        (3 * PAUSED_RECHECK, "key-new", 3)
    ]
    assert resolver.asked[3] == 3 * PAUSED_RECHECK
    assert stats.tenants["acme"].paused is None
    assert (stats.delivered, stats.dropped, stats.queued) == (3, {}, 0)
    assert paused == [("acme", "write key refused (401)")]


def test_a_tenant_without_a_key_is_paused_and_resumes_when_one_appears() -> None:
    """And the pause its spool records (for ``spool status`` and every host) is cleared
    when it resumes by itself: it stayed after the resolver gave a key and the events
    went (found by a review, with the PostgreSQL spool)."""
    clock = FakeClock()
    resolver = Resolver({}, clock)
    em, transport, _ = fake_emitter(clock=clock, write_keys=resolver)
    marks: list[tuple[str, str | None]] = []
    em._intake.mark_paused = lambda tenant, reason: marks.append((tenant, reason))  # type: ignore[method-assign]
    try:
        em.emit(record(1))
        assert clock.run_until(lambda: len(resolver.asked) >= 2, waiters=SENDERS)
        assert clock.wait_for_waiters(SENDERS)
        assert resolver.asked == [0.0, PAUSED_RECHECK]
        assert transport.requests == []
        assert em.stats().tenants["acme"].paused == "no write key configured"
        resolver.keys["acme"] = "key-acme"
        assert clock.run_until(lambda: em.stats().delivered == 1, waiters=SENDERS)
    finally:
        em.close(0)
    assert [(r.at, r.write_key) for r in transport.requests] == [(2 * PAUSED_RECHECK, "key-acme")]
    assert marks == [("acme", "no write key configured"), ("acme", None)]


# -- two requests in flight per tenant ----------------------------------------------------------


class Gate:
    """A ``refuse`` hook that holds the first batch in the server until a second batch
    arrives (or ``timeout`` passes): it proves two requests were in the server at once."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.batches: list[str] = []
        self.second = threading.Event()
        self.overlapped: bool | None = None
        self.lock = threading.Lock()

    def __call__(self, item: Any) -> str | None:
        batch = item["properties"]["email_id"]
        with self.lock:
            first_item = batch not in self.batches
            if first_item:
                self.batches.append(batch)
            position = self.batches.index(batch)
        if first_item and position == 0:
            self.overlapped = self.second.wait(self.timeout)
        elif first_item and position == 1:
            self.second.set()
        return None


class ClockGate:
    """A MockTransport handler that holds the first batch until a second batch arrives or
    ``timeout`` seconds of ``clock`` pass: it proves whether two requests were out at once.
    Request i is answered ``answers[i]`` (then 200)."""

    def __init__(self, clock: Clock, timeout: float, answers: Sequence[int] = ()) -> None:
        self.clock = clock
        self.timeout = timeout
        self.answers = list(answers)
        self.batches: list[str] = []
        self.overlapped: bool | None = None
        self.cv = threading.Condition()
        self.count = 0

    def __call__(self, request: MockRequest) -> MockResponse:
        batch = request.items[0]["properties"]["email_id"]
        with self.cv:
            answer = self.answers[self.count] if self.count < len(self.answers) else 200
            self.count += 1
            if batch not in self.batches:
                self.batches.append(batch)
                self.cv.notify_all()
            if self.overlapped is None and self.batches.index(batch) == 0:
                end = self.clock.monotonic() + self.timeout
                while len(self.batches) < 2 and self.clock.monotonic() < end:
                    self.clock.wait(self.cv, end - self.clock.monotonic())
                self.overlapped = len(self.batches) >= 2
        return MockResponse(answer)


def emit_batches(em: Emitter, n_batches: int, per_batch: int) -> None:
    """Emit ``n_batches`` full batches in one call (one hand-over to the senders), each
    event tagged with its batch's number."""
    em.emit_many(
        [
            record(b * per_batch + i, email_id=f"batch-{b}")
            for b in range(n_batches)
            for i in range(per_batch)
        ]
    )


def batch_of(request: MockRequest) -> str:
    return str(request.items[0]["properties"]["email_id"])


def test_a_healthy_tenant_with_a_backlog_has_two_requests_in_flight() -> None:
    gate = Gate(timeout=5.0)
    with LocalSegment(refuse=gate) as server:
        batch = BatchPolicy(max_messages=10, linger=5.0)
        with emitter(server, batch=batch, max_requests_per_second=0) as em:
            emit_batches(em, 4, 10)
            assert em.flush(20)
        assert server.accepted_count == 40
    assert gate.overlapped is True


def test_a_single_request_in_flight_when_overlap_is_off() -> None:
    clock = FakeClock()
    gate = ClockGate(clock, timeout=1.0)
    batch = BatchPolicy(max_messages=10, linger=5.0)
    em, transport, _ = fake_emitter(gate, clock=clock, batch=batch, max_requests_per_second=0)
    em._dispatcher.max_in_flight = 1
    try:
        emit_batches(em, 2, 10)
        assert clock.run_until(lambda: em.stats().delivered == 20, waiters=SENDERS)
    finally:
        em.close(0)
    # In order, one at a time: the first batch waited its 1 s for a second that could not
    # come while it was in flight; the second left the moment the first was answered.
    assert gate.overlapped is False
    assert [(r.at, batch_of(r), len(r.items)) for r in transport.requests] == [
        (0.0, "batch-0", 10),
        (1.0, "batch-1", 10),
    ]


def test_two_failures_in_flight_together_count_as_one_attempt() -> None:
    # Both batches are out at once (the first is held until the second arrives) and both
    # get a 500. Counted twice, max_attempts=2 would drop a batch; counted once, both are
    # delivered, after one backoff.
    clock = FakeClock()
    gate = ClockGate(clock, timeout=2.0, answers=[500, 500])
    batch = BatchPolicy(max_messages=10, linger=5.0)
    retry = RetryPolicy(initial_backoff=0.01, max_backoff=0.05, max_attempts=2, jitter=False)
    em, transport, _ = fake_emitter(
        gate, clock=clock, batch=batch, retry=retry, max_requests_per_second=0
    )
    try:
        emit_batches(em, 2, 10)
        assert clock.run_until(lambda: em.stats().delivered == 20, waiters=SENDERS)
        stats = em.stats()
    finally:
        em.close(0)
    assert gate.overlapped is True  # the second was sent while the first was held
    assert [(r.at, r.retry_count) for r in transport.requests] == [
        (0.0, 0),
        (0.0, 0),
        (0.01, 1),  # one backoff for both, then one batch at a time
        (0.01, 1),  # its own first retry, though the batch before it was just delivered
    ]
    assert [r.status for r in transport.responses] == [500, 500, 200, 200]
    assert (stats.delivered, stats.dropped) == (20, {})


def _new_dispatcher(
    spool: MemorySpool,
    keys: WriteKeys,
    transport: Transport,
    batch: BatchPolicy,
    *,
    threads: int = 1,
    clock: Clock = SYSTEM_CLOCK,
) -> Dispatcher:
    """A Dispatcher of ``threads`` senders (not started) on ``clock``, no rate cap,
    failures and pauses ignored."""
    return Dispatcher(
        spool=spool,
        keys=keys,
        endpoint="https://api.segment.io",
        transport=transport,
        batch=batch,
        retry=FAST_RETRY,
        threads=threads,
        max_requests_per_second=0,
        counters=Counters(),
        on_failure=lambda failure: None,
        on_pause=lambda tenant, reason: None,
        clock=clock,
    )


def _dispatcher(backlog: int, full_at: int = 10) -> tuple[Dispatcher, Any]:
    spool = MemorySpool(1 << 20)
    spool.put_many([encode(record(i), tenant="acme") for i in range(backlog)])
    keys = WriteKeys("key", None)
    dispatcher = _new_dispatcher(spool, keys, HttpTransport(), BatchPolicy(), threads=2)
    dispatcher.full_at = full_at
    state = dispatcher._state("acme")
    state.in_flight = 1
    return dispatcher, state


def test_overlap_only_while_the_tenant_is_healthy_and_a_full_batch_waits() -> None:
    now = time.monotonic()
    dispatcher, state = _dispatcher(backlog=10)
    assert dispatcher._may_overlap(state, now)
    for change in (
        {"backoff.retries": 1},  # a retry is pending: its batch must go first, alone
        {"paused": "write key refused (401)"},
        {"not_before": now + 1.0},  # waiting out a backoff or Retry-After
        {"in_flight": 2},  # both slots taken
        {"in_flight": 0},  # nothing in flight: an ordinary turn, not an overlap
    ):
        dispatcher, state = _dispatcher(backlog=10)
        for path, value in change.items():
            *owners, name = path.split(".")
            target: Any = state
            for owner in owners:
                target = getattr(target, owner)
            setattr(target, name, value)
        assert not dispatcher._may_overlap(state, now), change
    dispatcher, state = _dispatcher(backlog=9)  # less than a full batch behind
    assert not dispatcher._may_overlap(state, now)
    dispatcher, state = _dispatcher(backlog=10)
    dispatcher.turns.put("globex", now, now)  # another tenant waits for a sender: it goes first
    assert not dispatcher._may_overlap(state, now)
    dispatcher, state = _dispatcher(backlog=10)
    dispatcher.max_in_flight = 1
    assert not dispatcher._may_overlap(state, now)
    # A refused batch being bisected, its last part out (no part left to send): a new
    # batch beside it would settle first and end the bisection's tally early.
    dispatcher, state = _dispatcher(backlog=10)
    messages = tuple(encode(record(i), tenant="acme") for i in range(4))
    state.bisection.split(Lease("acme", messages), messages, 400, "bad")
    state.bisection.parts.clear()
    assert state.bisection.active
    assert not dispatcher._may_overlap(state, now)


def test_a_token_short_only_by_rounding_is_whole_and_a_short_bucket_waits_on_the_clock() -> None:
    """At 20 requests/s a token takes 0.05 s, which floating point makes 0.9999999999999964
    of a token: that counts as a token (on a fake clock, waiting for the rest would be a
    busy loop at one instant); a bucket really short waits for its refill."""
    clock = FakeClock(start=5.0)
    dispatcher, state = _dispatcher(backlog=10)
    dispatcher.clock = clock
    dispatcher.limits.rate, dispatcher.limits.burst = 20.0, 2.0
    state.in_flight = 0
    assert dispatcher._take_token(state, "tag")
    assert dispatcher._take_token(state, "tag")
    assert not dispatcher._take_token(state, "tag")  # the burst of two is spent
    assert dispatcher._ready_at(state, clock.monotonic(), lingering=False) == 5.05
    clock.advance_to(5.05)
    assert dispatcher._ready_at(state, clock.monotonic(), lingering=False) <= 5.05  # now
    assert dispatcher._take_token(state, "tag")
    clock.advance_to(5.06)
    assert dispatcher._ready_at(state, 5.06, lingering=False) == pytest.approx(5.1)


# -- fairness -----------------------------------------------------------------------------------


def _one_sender(
    spool: MemorySpool,
    tenants: Sequence[str],
    transport: MockTransport,
    clock: FakeClock,
    batch: BatchPolicy,
) -> Dispatcher:
    """A Dispatcher of one sender thread on ``clock``, each tenant with a key of its own
    (``key-TENANT``)."""
    keys = WriteKeys(None, {t: f"key-{t}" for t in tenants})
    return _new_dispatcher(spool, keys, transport, batch, clock=clock)


def test_a_huge_tenant_sends_one_batch_then_goes_to_the_back_of_the_line() -> None:
    """One sender, a tenant with 2,000 queued events and five with one each: the big one
    sends one batch, then each small one its event, then the big one the rest; no time
    passes for any of it."""
    small = [f"small{i}" for i in range(5)]
    spool = MemorySpool(1 << 24)
    spool.put_many(
        [encode(record(i, "big"), tenant="big") for i in range(2000)]
        + [encode(record(i, t), tenant=t) for i, t in enumerate(small)]
    )
    clock = FakeClock()
    transport = MockTransport(clock=clock)
    dispatcher = _one_sender(
        spool, ["big", *small], transport, clock, BatchPolicy(max_messages=10, linger=0.0)
    )
    dispatcher.notify_put(["big", *small])
    dispatcher.start()
    try:
        assert transport.wait_for_requests(200 + len(small))
    finally:
        dispatcher.stop(10)
    order = [r.write_key for r in transport.requests]
    assert order[:7] == ["key-big", *[f"key-{t}" for t in small], "key-big"]
    assert set(order[7:]) == {"key-big"}
    assert set(times_of(transport.requests)) == {0.0}


# -- the batch policy ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "setting"),
    [
        ({"max_messages": 0}, "max_messages"),
        ({"max_messages": 2501}, "max_messages"),
        ({"max_messages": 10.0}, "max_messages"),
        ({"max_messages": True}, "max_messages"),
        ({"max_bytes": 33 * 1024 - 1}, "max_bytes"),
        ({"max_bytes": 500 * 1024 + 1}, "max_bytes"),
        ({"max_bytes": float("nan")}, "max_bytes"),
        ({"linger": -0.1}, "linger"),
        ({"linger": 60.5}, "linger"),
        ({"linger": float("inf")}, "linger"),
        ({"linger": "0.1"}, "linger"),
    ],
)
def test_batch_policy_validation_names_the_setting(changes: dict[str, Any], setting: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        BatchPolicy(**changes)
    assert info.value.setting == setting


def test_batch_policy_edges_are_accepted() -> None:
    BatchPolicy(max_messages=1, max_bytes=33 * 1024, linger=0)
    BatchPolicy(max_messages=2500, max_bytes=500 * 1024, linger=60)
    assert BatchPolicy(linger=1).linger == 1


# -- bisection goes through the scheduler ---------------------------------------------------


def test_bisection_requests_obey_the_rate_cap_and_are_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An endpoint that refuses everything with a 400: the 2N-1 bisection requests are
    paced by the key's rate cap like any other request, and the whole refused batch is
    one ERROR line, not one per message."""
    rate, n = 20.0, 16
    failures: list[Any] = []
    caplog.set_level(logging.DEBUG, logger="selligent_segment")
    em, transport, clock = fake_emitter(
        lambda request: MockResponse.error(400, "refused"),
        batch=BatchPolicy(linger=5.0),
        max_requests_per_second=rate,
        on_failure=failures.append,
    )
    try:
        em.emit_many([record(i) for i in range(n)])
        assert clock.run_until(lambda: em.stats().rejected == {"rejected": n}, waiters=SENDERS)
    finally:
        em.close(0)
    times = times_of(transport.requests)
    assert len(times) == 2 * n - 1
    # The batch leaves when its linger (5 s) is over; the bucket's burst of two tokens
    # takes it and the first half at once, then one request every 1 / rate s, exactly.
    assert times == pytest.approx([5.0] + [5.0 + i / rate for i in range(2 * n - 2)])
    assert sorted(m for f in failures for m in f.message_ids) == sorted(
        encode(record(i)).message_id for i in range(n)
    )
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    message = errors[0].getMessage()
    assert f"a batch of {n} events was refused" in message
    assert f"bisected in {2 * n - 1} requests: 0 delivered, {n} rejected" in message


class _SettledByItems:
    """A transport refusing its first batch as a whole (400), then answering every part
    with a partial answer that settles each message on its own (as the destination's
    does)."""

    def __init__(self) -> None:
        self.posts = 0
        self.lock = threading.Lock()

    def post(
        self, endpoint: str, write_key: str, bodies: Sequence[bytes], *, retry_count: int = 0
    ) -> Response:
        with self.lock:
            self.posts += 1
            first = self.posts == 1
        if first:
            return Response(400, error="bad batch")
        return Response(200, items=dict.fromkeys(range(len(bodies))))

    def close(self) -> None:
        pass


def test_a_bisection_whose_last_part_is_settled_item_by_item_is_over() -> None:
    """Each part of a refused batch settled by a partial answer, the last one too: the
    bisection is over (else the tenant would never get a second request again)."""
    em, _, clock = fake_emitter(max_requests_per_second=0)
    transport = _SettledByItems()
    em._dispatcher.transport = transport
    try:
        em.emit_many([record(1, "acme"), record(2, "acme")])
        em._dispatcher.start_flush()
        tenants = em._dispatcher._tenants
        # Awaited, not read once: the last part's messages are counted delivered just
        # before its sender ends the bisection.
        assert clock.run_until(
            lambda: em.stats().delivered == 2 and not tenants["acme"].bisection.active,
            waiters=SENDERS,
        )
    finally:
        em.close(0)
    assert transport.posts == 3  # the batch, then its two halves


def test_a_batch_refused_beside_one_being_bisected_waits_and_is_bisected_on_its_own(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Two batches out at once, each with one poisoned message; the second's 400 comes once
    the first's bisection is under way. It goes back whole and is bisected after the
    first, on its own: two log lines, each with its own batch's counts."""
    caplog.set_level(logging.WARNING, "selligent_segment")
    poisoned = {"user3@example.com", "user13@example.com"}
    second_out = threading.Event()
    first_split = threading.Event()

    def handler(request: MockRequest) -> MockResponse:
        head, whole = request.items[0]["anonymousId"], len(request.items) == 10
        if whole and head == "user0@example.com":
            assert second_out.wait(30)  # both batches out at once
        elif whole and head == "user10@example.com" and not second_out.is_set():
            second_out.set()
            assert first_split.wait(30)  # refused once the first one is being bisected
        if any(item["anonymousId"] in poisoned for item in request.items):
            return MockResponse.error(400, "poison")
        return MockResponse.ok()

    em, transport, clock = fake_emitter(
        handler, batch=BatchPolicy(max_messages=10, linger=5.0), max_requests_per_second=0
    )
    dispatcher = em._dispatcher
    refused = dispatcher._refused

    def spy_refused(state: Any, lease: Lease, messages: Any, *args: Any) -> None:
        refused(state, lease, messages, *args)
        if messages[0].body.find(b"user0@example.com") >= 0 and len(messages) == 10:
            first_split.set()

    dispatcher._refused = spy_refused  # type: ignore[method-assign]
    try:
        em.emit_many([record(i) for i in range(20)])
        assert clock.run_until(lambda: em.stats().delivered == 18, waiters=SENDERS)
        stats = em.stats()
    finally:
        em.close(0)
    assert stats.rejected == {"rejected": 2}
    lines = [r.getMessage() for r in caplog.records if "bisected" in r.getMessage()]
    assert (
        lines
        == [
            "tenant 'acme': a batch of 10 events was refused (HTTP 400: bad_request: poison); "
            "bisected in 9 requests: 9 delivered, 1 rejected"
        ]
        * 2
    )
    whole = [r for r in transport.requests if len(r.items) == 10]
    assert [r.items[0]["anonymousId"] for r in whole] == [
        "user0@example.com",
        "user10@example.com",
        "user10@example.com",  # again, once the first batch's bisection was done
    ]


def test_a_transient_failure_mid_bisection_sends_the_rest_again_in_order() -> None:
    """A 503 while a refused batch is bisected puts that part and every part still to go
    back at the head of the queue, in order; the poison message still ends rejected and
    everything else is delivered once, in order."""
    poison = "user5@example.com"

    def refuse(item: Any) -> str | None:
        return "poison" if item.get("anonymousId") == poison else None

    # Request 1 (the whole batch) is handled normally: 400; request 2 (its first half): 503.
    plan = FaultPlan(script=[Fault.latency(0), 503])
    with LocalSegment(strict=True, refuse=refuse, faults=plan) as server:
        with emitter(server, batch=BatchPolicy(linger=5.0)) as em:
            em.emit_many([record(i) for i in range(8)])
            assert em.flush(30)
            assert em.stats().rejected == {"rejected": 1}
            assert em.stats().delivered == 7
        assert [r.status for r in server.requests][:3] == [400, 503, 400]
        assert [e["anonymousId"] for e in server.accepted] == [
            f"user{i}@example.com" for i in range(8) if i != 5
        ]
        assert server.duplicates == 0


def test_a_batch_given_up_still_leaves_its_tenant_waiting_the_servers_retry_after() -> None:
    """The answer that ends a batch's budget still says how long the server wants the
    key to wait: the tenant's next batch is not sent inside that wait (one sender, one
    request at a time; every answer says ``Retry-After: 5``)."""
    em, transport, clock = fake_emitter(
        lambda request: MockResponse.rate_limited(retry_after=5),
        batch=BatchPolicy(max_messages=10, linger=5.0),
        retry=RetryPolicy(max_rate_limit_duration=10.0, jitter=False),
        max_requests_per_second=0,
        threads=1,
    )
    try:
        em.emit_many([record(i, email_id=f"batch-{i // 10}") for i in range(20)])
        assert clock.run_until(lambda: len(transport.requests) >= 5, waiters=1)
    finally:
        em.close(0)
    assert [r.at for r in transport.requests[:5]] == [0.0, 5.0, 10.0, 15.0, 20.0]


@pytest.mark.parametrize("call", ["resume", "set_write_key"])
def test_resuming_a_tenant_that_is_not_paused_keeps_its_servers_retry_after(call: str) -> None:
    """resume() (or a key rotation) is for a paused tenant; on one waiting out a 429's
    Retry-After it sent at once, inside the wait the server asked for."""
    answers = iter([MockResponse.rate_limited(retry_after=5)])
    em, transport, clock = fake_emitter(
        lambda request: next(answers, MockResponse.ok()),
        retry=RetryPolicy(jitter=False),
        max_requests_per_second=0,
    )
    try:
        em.emit(record(1))
        assert clock.run_until(lambda: em.stats().retried == 1, waiters=SENDERS)
        if call == "resume":
            em.resume("acme")
        else:
            em.set_write_key("acme", "key-acme-rotated")
        assert clock.run_until(lambda: em.stats().delivered == 1, waiters=SENDERS)
    finally:
        em.close(0)
    assert times_of(transport.requests) == [0.0, 5.0]


def test_a_turn_that_fails_before_its_request_leaves_gives_its_batch_and_token_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A failure between the lease and the post (here the per-tenant endpoint, as the
    destination looks it up, raising once) left the batch leased: never sent again. And
    its rate token was kept, though no request left: with a token every 4 s, the batch
    went at 4 s, not at 1 s (the sender error's pause)."""
    em, transport, clock = fake_emitter(max_requests_per_second=0.25)
    url = em._dispatcher.endpoint
    assert isinstance(url, str)
    calls: list[str] = []

    def endpoint(tenant: str) -> str:
        calls.append(tenant)
        if len(calls) == 1:
            raise LookupError("the tenant's configuration is being replaced")
        return url

    em._dispatcher.endpoint = endpoint
    try:
        em.emit(record(1))
        assert clock.run_until(lambda: em.stats().delivered == 1, waiters=SENDERS)
    finally:
        em.close(0)
    assert calls == ["acme", "acme"]
    assert [r.message_ids for r in transport.requests] == [[encode(record(1)).message_id]]
    assert times_of(transport.requests) == [1.0]
    assert "sender error for tenant 'acme'" in caplog.text


def test_stopped_senders_start_no_request_after_their_current_one() -> None:
    """stop() during a request: the sender ended with it. It took every turn already due
    first (each a new request), and after an Emitter's close() had reported those events
    ``unsent_at_close``, so a caller replaying them sent them twice."""
    spool = MemorySpool(1 << 20)
    spool.put_many([encode(record(i, t), tenant=t) for t in ("a", "b", "c") for i in range(3)])
    clock = FakeClock()
    stopper: list[Dispatcher] = []

    def stop_during_the_first_request(request: MockRequest) -> MockResponse:
        stopper[0].stop(0)  # from the sender itself: it is not joined
        return MockResponse.ok()

    transport = MockTransport(stop_during_the_first_request, clock=clock)
    dispatcher = _one_sender(spool, ["a", "b", "c"], transport, clock, BatchPolicy(linger=0.0))
    stopper.append(dispatcher)
    dispatcher.notify_put(["a", "b", "c"])
    dispatcher.start()
    (sender,) = dispatcher._threads
    sender.join(10)
    assert not sender.is_alive()
    assert len(transport.requests) == 1  # b's and c's turns were due: not taken
    assert spool.backlog("b") == spool.backlog("c") == 3


class _HeldThenRateLimited:
    """Request 0 is held until request 1 arrives (answered 500 at once), then 1 s of the
    fake clock more, and answered 429 with ``Retry-After: 120``; later ones 200."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.cv = threading.Condition()
        self.count = 0

    def __call__(self, request: MockRequest) -> MockResponse:
        with self.cv:
            n, self.count = self.count, self.count + 1
            self.cv.notify_all()
            if n == 1:
                return MockResponse.error(500, "boom")
            if n == 0:
                while self.count < 2:
                    self.clock.wait(self.cv, 5.0)
                end = self.clock.monotonic() + 1.0
                while self.clock.monotonic() < end:
                    self.clock.wait(self.cv, end - self.clock.monotonic())
                return MockResponse.rate_limited(retry_after=120)
        return MockResponse.ok()


def test_a_retry_after_is_obeyed_when_a_request_beside_it_failed_first() -> None:
    """Two requests of a tenant in flight: one gets a 500 (a short backoff), then the other
    a 429 with Retry-After: 120. The second failure is not counted as an attempt (the
    first set the backoff), but the server's wait was dropped with it: the tenant sent
    again after the 500's backoff."""
    clock = FakeClock()
    batch = BatchPolicy(max_messages=10, linger=5.0)
    em, transport, _ = fake_emitter(
        _HeldThenRateLimited(clock), clock=clock, batch=batch, max_requests_per_second=0
    )
    try:
        emit_batches(em, 2, 10)
        assert clock.run_until(lambda: em.stats().delivered == 20, waiters=SENDERS, timeout=20)
    finally:
        em.close(0)
    times = times_of(transport.requests)
    assert times[:2] == [0.0, 0.0]
    assert min(times[2:]) >= 121.0, times


def test_an_on_failure_that_raises_systemexit_keeps_the_sender_and_its_tenant_going(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An on_failure that raised a BaseException (sys.exit() in a "fatal" handler) killed
    the sender thread that called it, and its tenant stayed in flight for ever: no later
    event of it was sent (found by a review). Now a library thread logs it, naming the
    callback (never an event's email), and goes on."""
    answers = iter([MockResponse(400)])

    def handler(request: MockRequest) -> MockResponse:
        return next(answers, MockResponse.ok())

    def on_failure(failure: Any) -> None:
        raise SystemExit("fatal: events rejected")

    transport = MockTransport(handler)
    em = Emitter(
        write_key="k",
        transport=transport,
        batch=ONE_PER_REQUEST,
        on_failure=on_failure,
        threads=1,
    )
    try:
        em.emit(record(0, "default"))
        em.emit(record(1, "default"))
        assert em.flush(10)
        assert em.stats().delivered == 1
        assert em.stats().rejected == {"rejected": 1}
        assert [t.name for t in threading.enumerate() if t.name.startswith("selligent-segment-s")]
        logged = [r for r in caplog.records if "callback" in r.getMessage()]
        assert logged
        assert "on_failure" in logged[0].getMessage()
        assert "user0@example.com" not in caplog.text
    finally:
        em.close(0)
