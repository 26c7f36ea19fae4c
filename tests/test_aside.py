"""Batches set aside (delivery/_aside.py): a batch failed with a 5xx that names its own
``Retry-After`` waits that out aside while its tenant sends on; a 429, a failure without a
server wait and a dropped connection still make the tenant wait; a retry sends the bytes
built for the first attempt; the limits of :class:`AsidePolicy` hold.

Scheduling is asserted exactly on a FakeClock, with a MockTransport or with real HTTP to a
LocalSegment on loopback (``Timed``: real requests, fake time).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Sequence
from typing import Any

import orjson
import pytest
from _delivery import SENDERS, Timed, emitter, fake_emitter, record

from selligent_segment import (
    BatchPolicy,
    ConfigurationError,
    Emitter,
    EncodedMessage,
    RetryPolicy,
    encode,
)
from selligent_segment.delivery import _transport
from selligent_segment.delivery._aside import AsidePolicy, about_request
from selligent_segment.delivery._dispatcher import Dispatcher
from selligent_segment.delivery._keys import WriteKeys
from selligent_segment.delivery._stats import Counters
from selligent_segment.delivery._transport import HttpTransport, Response, Transport
from selligent_segment.intake import _memory
from selligent_segment.spool._memory import MemorySpool
from selligent_segment.spool._postgres import PostgresSpool
from selligent_segment.spool._protocol import Lease, Spool
from selligent_segment.testing import (
    FakeClock,
    Fault,
    FaultPlan,
    Handler,
    LocalSegment,
    MockRequest,
    MockResponse,
)
from selligent_segment.testing._local_postgres import LocalPostgres

BATCHES = BatchPolicy(max_messages=10, linger=5.0)  # full batches only, until a flush


def batch_of(request: MockRequest) -> str:
    return str(request.items[0]["properties"]["email_id"])


def emit_batches(em: Emitter, n_batches: int, per_batch: int = 10, tenant: str = "acme") -> None:
    """``n_batches`` full batches in one call, each event tagged with its batch number."""
    em.emit_many(
        [
            record(b * per_batch + i, tenant, email_id=f"batch-{b}")
            for b in range(n_batches)
            for i in range(per_batch)
        ]
    )


def deliver_batches(em: Emitter, clock: FakeClock, n_batches: int) -> None:
    """``n_batches`` full batches of acme emitted, then the fake clock run until every event
    is delivered (asserted)."""
    emit_batches(em, n_batches)
    assert clock.run_until(lambda: em.stats().delivered == 10 * n_batches, waiters=SENDERS)


def email_id_of(messages: Sequence[EncodedMessage]) -> str:
    """The batch a batch of messages is (its first message's ``email_id``)."""
    return str(orjson.loads(messages[0].body)["properties"]["email_id"])


def array_of(content: bytes) -> bytes:
    """The request body up to ``sentAt``: the batch array as joined."""
    head, sep, _ = content.partition(b'],"sentAt":')
    assert sep
    return head


class FirstOf:
    """A handler answering ``answer`` to the first request of batch ``batch``, 200 else."""

    def __init__(self, batch: str, answer: MockResponse) -> None:
        self.batch = batch
        self.answer = answer
        self.done = False
        self.lock = threading.Lock()

    def __call__(self, request: MockRequest) -> MockResponse:
        with self.lock:
            if batch_of(request) == self.batch and not self.done:
                self.done = True
                return self.answer
        return MockResponse.ok()


def run_three_batches(
    handler: Handler, *, in_flight: int = 2, **options: Any
) -> list[tuple[float, str, int]]:
    """Three full batches of acme answered by ``handler``, at most ``in_flight`` requests
    out at once: each request's (fake time, batch, X-Retry-Count), sorted; every event
    delivered once."""
    em, transport, clock = fake_emitter(
        handler, batch=BATCHES, max_requests_per_second=0, **options
    )
    em._dispatcher.max_in_flight = in_flight
    try:
        deliver_batches(em, clock, 3)
        stats = em.stats()
    finally:
        em.close(0)
    assert (stats.delivered, stats.dropped, stats.retried) == (30, {}, 10)
    ids = [m for r in transport.requests if r.retry_count == 0 for m in r.message_ids]
    assert sorted(ids) == sorted(encode(record(i)).message_id for i in range(30))
    return sorted((r.at, batch_of(r), r.retry_count) for r in transport.requests)


# -- what is set aside, what makes the tenant wait -------------------------------------------


def test_a_5xx_with_retry_after_waits_aside_while_the_tenant_sends_on() -> None:
    # Before: the tenant waited out the 1 s with batch-2 (batch-1 may have been out already).
    assert run_three_batches(
        FirstOf("batch-0", MockResponse.error(500, "busy", retry_after=1))
    ) == [
        (0.0, "batch-0", 0),
        (0.0, "batch-1", 0),
        (0.0, "batch-2", 0),
        (1.0, "batch-0", 1),  # its own Retry-After, with X-Retry-Count
    ]


def test_a_429_stops_the_tenants_requests_until_its_retry_after() -> None:
    answer = MockResponse.rate_limited(retry_after=1)
    assert run_three_batches(FirstOf("batch-0", answer), in_flight=1) == [
        (0.0, "batch-0", 0),
        (1.0, "batch-0", 1),
        (1.0, "batch-1", 0),
        (1.0, "batch-2", 0),
    ]
    # Two in flight: what left before the 429 came may be out at t=0; nothing after it
    # before the Retry-After is over (a turn offered while the batch was out did go at
    # t=0: see test_schedule's test_a_turn_in_line_put_off_by_a_later_one_...).
    times = run_three_batches(FirstOf("batch-0", answer))
    assert times[0] == (0.0, "batch-0", 0)
    assert {at for at, _, _ in times} <= {0.0, 1.0}
    assert all(n == 0 for at, _, n in times[1:] if at == 0.0)  # new batches only at t=0
    assert (1.0, "batch-0", 1) in times


def run_with_a_429_settling_during_a_turn(moment: str) -> list[tuple[float, str, int]]:
    """Three batches of acme, two requests in flight; batch-0 is answered 429 (Retry-After
    1 s), and that answer settles while the other request's turn, granted beside it, is
    at ``moment``: looking its key up (``"lookup"``) or leasing, before the lease
    (``"lease"``: the turn then finds batch-0, just given back, at the head of the queue)
    or after it (``"leased"``: the turn has batch-2). Each request's (fake time, batch,
    X-Retry-Count), in the order sent."""
    waiting = threading.Event()
    rate_limited = threading.Event()
    handler = FirstOf("batch-0", MockResponse.rate_limited(retry_after=1))

    def answer(request: MockRequest) -> MockResponse:
        if batch_of(request) == "batch-0" and request.retry_count == 0:
            assert waiting.wait(30)
        return handler(request)

    em, transport, clock = fake_emitter(answer, batch=BATCHES, max_requests_per_second=0)
    dispatcher = em._dispatcher
    dispatcher.max_in_flight = 2
    resolve, lease = dispatcher.keys.resolve, dispatcher.spool.lease
    retry_later = dispatcher._retry_later
    calls: Counter[str] = Counter()
    lock = threading.Lock()

    def at(name: str, nth: int) -> None:
        """At the ``nth`` call of ``name`` (the turn beside batch-0's request), wait until
        batch-0's 429 has settled."""
        with lock:
            calls[name] += 1
            now = calls[name] == nth
        if now:
            waiting.set()
            assert rate_limited.wait(30)

    def spy_resolve(tenant: str) -> str | None:
        if moment == "lookup":
            at("resolve", 2)
        return resolve(tenant)

    def spy_lease(tenant: str, max_messages: int, max_bytes: int) -> Lease | None:
        if moment == "lease":
            at("lease", 2)
        leased = lease(tenant, max_messages, max_bytes)
        if moment == "leased":
            at("leased", 3)  # batch-1 went beside batch-0 first: batch-2's lease is third
        return leased

    def spy_retry_later(*args: Any) -> None:
        retry_later(*args)
        rate_limited.set()

    dispatcher.keys.resolve = spy_resolve  # type: ignore[method-assign]
    dispatcher.spool.lease = spy_lease  # type: ignore[method-assign]
    dispatcher._retry_later = spy_retry_later  # type: ignore[method-assign]
    try:
        deliver_batches(em, clock, 3)
    finally:
        em.close(0)
    return [(r.at, batch_of(r), r.retry_count) for r in transport.requests]


def test_a_batch_leased_while_a_429_settles_beside_it_waits_out_the_retry_after() -> None:
    """batch-2's turn has leased it when batch-0's 429 settles: it is not sent, but goes
    back behind batch-0, which goes again after the Retry-After with X-Retry-Count 1, then
    batch-2. (Its retry count used to be read after the lease: batch-2 went out at once
    with the 429's count, and its success cleared the backoff, so batch-0's retry carried
    X-Retry-Count 0.)"""
    sent = run_with_a_429_settling_during_a_turn("leased")
    assert sorted(sent[:2]) == [(0.0, "batch-0", 0), (0.0, "batch-1", 0)]
    assert sent[2:] == [(1.0, "batch-0", 1), (1.0, "batch-2", 0)]


@pytest.mark.parametrize("moment", ["lookup", "lease"])
def test_the_batch_a_429_gave_back_is_not_sent_again_beside_it(moment: str) -> None:
    """The turn granted beside batch-0's request leases only after batch-0's 429 settled,
    so it finds batch-0 back at the head of the queue: that is not sent at once (twice at
    t=0, inside its Retry-After), but after the Retry-After with X-Retry-Count 1; then the
    other two, maybe together."""
    sent = run_with_a_429_settling_during_a_turn(moment)
    assert sent[:2] == [(0.0, "batch-0", 0), (1.0, "batch-0", 1)]
    assert sorted(sent[2:]) == [(1.0, "batch-1", 0), (1.0, "batch-2", 0)]


class FailFirst(FirstOf):
    """As :class:`FirstOf`, but the first request of the batch raises ``error`` (a
    network failure, as the transport reports it: no status)."""

    def __init__(self, batch: str, error: OSError) -> None:
        super().__init__(batch, MockResponse.ok())
        self.error = error

    def __call__(self, request: MockRequest) -> MockResponse:
        with self.lock:
            failing = batch_of(request) == self.batch and not self.done
            self.done = self.done or failing
        if failing:
            raise self.error
        return MockResponse.ok()


@pytest.mark.parametrize(
    "handler",
    [
        pytest.param(FirstOf("batch-0", MockResponse.error(503, "busy")), id="no Retry-After"),
        pytest.param(FailFirst("batch-0", OSError("connection dropped")), id="dropped"),
    ],
)
def test_a_failure_without_a_server_wait_makes_the_tenant_back_off(handler: FirstOf) -> None:
    retry = RetryPolicy(initial_backoff=0.5, max_backoff=0.5, jitter=False)
    assert run_three_batches(handler, in_flight=1, retry=retry) == [
        (0.0, "batch-0", 0),
        (0.5, "batch-0", 1),
        (0.5, "batch-1", 0),
        (0.5, "batch-2", 0),
    ]


def sends_of_a_failing_head_batch(answer: MockResponse, **options: Any) -> list[tuple[float, int]]:
    """One sender, so the order is exact: batch-0 hiccups once (a 503 with ``Retry-After:
    1``, set aside, delivered at 1 s); batch-1, the head then, is always answered
    ``answer`` until it is given up (asserted). batch-1's sends: (fake time,
    X-Retry-Count)."""
    answered: set[str] = set()

    def handler(request: MockRequest) -> MockResponse:
        batch = batch_of(request)
        if batch == "batch-1":
            return answer
        if batch in answered:
            return MockResponse.ok()
        answered.add(batch)
        return MockResponse.error(503, "busy", retry_after=1)

    em, transport, clock = fake_emitter(
        handler, batch=BATCHES, max_requests_per_second=0, threads=1, **options
    )
    try:
        emit_batches(em, 2)
        assert clock.run_until(
            lambda: em.stats().delivered + sum(em.stats().dropped.values()) == 20, waiters=1
        )
        assert em.stats().dropped == {"retries_exhausted": 10}
    finally:
        em.close(0)
    return [(r.at, r.retry_count) for r in transport.requests if batch_of(r) == "batch-1"]


def test_a_batch_aside_delivered_does_not_reset_the_budget_of_the_batch_failing_at_the_head() -> (
    None
):
    """The tenant's backoff is its head batch's: a batch set aside, delivered later, must
    not clear it, or a batch that always fails is retried past ``max_attempts`` (for as
    long as other batches come and go aside). batch-1 always fails without a server
    wait: sent at 0, 0.5 and 1.0 s, then given up, whatever batch-0 did at 1.0 s."""
    retry = RetryPolicy(initial_backoff=0.5, max_backoff=0.5, max_attempts=3, jitter=False)
    assert sends_of_a_failing_head_batch(MockResponse.error(500, "broken"), retry=retry) == [
        (0.0, 0),
        (0.5, 1),
        (1.0, 2),
    ]


def test_a_batch_aside_delivered_after_a_429_s_wait_lets_its_tenant_send_on() -> None:
    """A 429 makes the whole tenant wait, but holds no attempt of its head batch's budget:
    once its wait is over, a batch set aside and delivered shows the key is let through
    again, and the tenant is healthy (before: it stayed in backoff until the head batch
    itself was delivered, so a 503 with ``Retry-After`` then made the whole tenant wait
    instead of being set aside, which halved the fault mix's throughput). One sender, so
    the order is exact: batch-0 hiccups (503, ``Retry-After: 1``, set aside); batch-1 is
    answered 429 (``Retry-After: 1``); at 1 s batch-0 is delivered, then batch-1 hiccups
    (503, set aside again) and batch-2 goes at once, not a second later."""
    script = {
        "batch-0": [MockResponse.error(503, "busy", retry_after=1)],
        "batch-1": [
            MockResponse.rate_limited(retry_after=1),
            MockResponse.error(503, "busy", retry_after=1),
        ],
    }

    def handler(request: MockRequest) -> MockResponse:
        answers = script.get(batch_of(request))
        return answers.pop(0) if answers else MockResponse.ok()

    em, transport, clock = fake_emitter(
        handler, batch=BATCHES, max_requests_per_second=0, threads=1
    )
    try:
        emit_batches(em, 3)
        assert clock.run_until(lambda: em.stats().delivered == 30, waiters=1)
    finally:
        em.close(0)
    assert [(r.at, batch_of(r), r.retry_count) for r in transport.requests] == [
        (0.0, "batch-0", 0),
        (0.0, "batch-1", 0),
        (1.0, "batch-0", 1),
        (1.0, "batch-1", 1),
        (1.0, "batch-2", 0),
        (2.0, "batch-1", 2),
    ]


def test_a_batch_aside_delivered_does_not_refill_the_server_wait_budget_of_a_head_batchs_5xx() -> (
    None
):
    """A 5xx's own ``Retry-After`` speaks of that request, not of the key: a head batch
    always answered so (here with waits over ``max_wait``, so it is not set aside itself)
    spends its own ``max_rate_limit_duration``, whatever a batch set aside does. Found by
    a review: batch-0, delivered from aside at 2 s, cleared batch-1's 2 s of waiting, so
    batch-1 went a third time at 4 s (and, with two senders, for ever)."""
    answer = MockResponse.error(503, "broken", retry_after=2)
    assert sends_of_a_failing_head_batch(
        answer,
        retry=RetryPolicy(max_rate_limit_duration=3, jitter=False),
        aside=AsidePolicy(max_wait=1),
    ) == [(0.0, 0), (2.0, 1)]


def test_about_request_is_an_answered_retryable_failure_with_its_own_wait() -> None:
    assert about_request(Response(500, retry_after=1.0))
    assert about_request(Response(408, retry_after=2.0))
    assert not about_request(Response(500))  # no server wait: the tenant backs off
    assert not about_request(Response(429, retry_after=1.0))  # the tenant's rate limit
    assert not about_request(Response(None, retry_after=1.0))  # no answer at all
    assert not about_request(Response(400, retry_after=1.0))  # not retryable
    assert not about_request(Response(200, retry_after=1.0))


# -- the retry sends what was built ---------------------------------------------------------


def test_a_retry_sends_the_bytes_built_for_the_first_attempt_without_encoding_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    joins = Counter[int]()
    encodes = Counter[str]()
    joined = _transport._joined
    encode_fields = _memory.encode_fields

    def counted_join(bodies: Any) -> bytes:
        joins[len(bodies)] += 1
        return joined(bodies)

    def counted_encode(fields: Any, tenant: str, *args: Any) -> Any:
        encodes[tenant] += 1
        return encode_fields(fields, tenant, *args)

    monkeypatch.setattr(_transport, "_joined", counted_join)
    monkeypatch.setattr(_memory, "encode_fields", counted_encode)
    em, transport, clock = fake_emitter(
        FirstOf("batch-0", MockResponse.error(503, "busy", retry_after=2)),
        batch=BATCHES,
        max_requests_per_second=0,
    )
    spool = em._dispatcher.spool
    lease = spool.lease
    leased: list[int] = []

    def counted_lease(*args: Any) -> Any:
        got = lease(*args)
        if got is not None:
            leased.append(len(got.messages))
        return got

    monkeypatch.setattr(spool, "lease", counted_lease)
    try:
        deliver_batches(em, clock, 2)
    finally:
        em.close(0)
    first, retry = [r for r in transport.requests if batch_of(r) == "batch-0"]
    assert (first.at, retry.at, retry.retry_count) == (0.0, 2.0, 1)
    assert retry.headers["X-Retry-Count"] == "1"
    assert array_of(retry.content) == array_of(first.content)  # the same bytes; sentAt new
    assert encodes == {"acme": 20}  # each event encoded once
    assert leased == [10, 10]  # and leased once: the retry took nothing from the spool
    assert joins == {10: 2}  # one join per batch: the retry joined nothing


# -- over real HTTP ---------------------------------------------------------------------------


def test_over_http_the_tenant_sends_on_while_a_503_batch_waits_its_retry_after() -> None:
    clock = FakeClock()
    faults = FaultPlan(script=[Fault.http(503, retry_after=1)])
    with LocalSegment(faults=faults) as server:
        timed = Timed(HttpTransport(max_connections=SENDERS), clock)
        em = emitter(server, transport=timed, clock=clock, batch=BATCHES, max_requests_per_second=0)
        try:
            deliver_batches(em, clock, 3)
        finally:
            em.close(0)
        requests = server.requests
        assert server.accepted_count == 30
        assert server.duplicates == 0
    # The 503 and the two other batches at t=0 (recorded by the server in whichever order
    # its threads get there), the retry at t=1.
    answered = [(r.status, r.retry_count) for r in requests]
    assert sorted(answered[:3]) == [(200, 0), (200, 0), (503, 0)]
    assert answered[3:] == [(200, 1)]
    assert timed.at == [0.0, 0.0, 0.0, 1.0]


class Recording:
    """A transport that posts with ``inner`` and notes each request: its write key, the
    message ids of its bodies in order, and the status it got."""

    def __init__(self, inner: Transport) -> None:
        self.inner = inner
        self.sent: list[tuple[str, list[str], int | None]] = []
        self.lock = threading.Lock()

    def post(
        self, endpoint: str, write_key: str, bodies: Sequence[bytes], *, retry_count: int = 0
    ) -> Response:
        response = self.inner.post(endpoint, write_key, bodies, retry_count=retry_count)
        ids = [orjson.loads(body)["messageId"] for body in bodies]
        with self.lock:
            self.sent.append((write_key, ids, response.status))
        return response

    def close(self) -> None:
        self.inner.close()


def test_under_the_fault_mix_every_event_arrives_once_in_order_within_its_request() -> None:
    clock = FakeClock()
    n = 1200
    tenants = ("acme", "globex")
    faults = FaultPlan.mix(seed=1, rates={500: 0.2, 429: 0.05, "drop": 0.05}, retry_after=1)
    position = {encode(record(i, t)).message_id: i for i in range(n) for t in tenants}
    with LocalSegment(faults=faults) as server:
        recording = Recording(Timed(HttpTransport(max_connections=SENDERS), clock))
        em = emitter(
            server,
            transport=recording,
            clock=clock,
            batch=BatchPolicy(max_messages=50, linger=0.0),
            max_requests_per_second=0,
        )
        try:
            em.emit_many([record(i, t) for i in range(n) for t in tenants])
            assert clock.run_until(lambda: em.stats().delivered == 2 * n, waiters=SENDERS)
            stats = em.stats()
        finally:
            em.close(0)
        assert server.duplicates == 0
        assert server.message_ids() == set(position)
    assert (stats.dropped, stats.rejected) == ({}, {})
    statuses = Counter(status for _, _, status in recording.sent)
    assert statuses[500]  # the mix did happen
    assert statuses[429]
    assert statuses[None]
    delivered = [m for _, ids, status in recording.sent if status == 200 for m in ids]
    assert sorted(delivered) == sorted(position)  # each event delivered by one request
    for _, ids, _ in recording.sent:  # each request in the order its events were emitted
        assert [position[m] for m in ids] == sorted(position[m] for m in ids)


def test_a_paused_tenant_holds_nothing_aside_and_sends_it_all_once_resumed() -> None:
    # batch-0 is set aside (503, Retry-After: 5); batch-1's 401 pauses the tenant, which
    # puts batch-0 back in its queue; the new key sends both.
    answers = {"batch-0": [MockResponse.error(503, "busy", retry_after=5)], "batch-1": [401]}

    def handler(request: MockRequest) -> MockResponse | int:
        queue = answers.get(batch_of(request))
        return queue.pop(0) if queue else MockResponse.ok()

    em, transport, clock = fake_emitter(handler, batch=BATCHES, max_requests_per_second=0)
    em._dispatcher.max_in_flight = 1
    try:
        emit_batches(em, 2)
        assert clock.run_until(lambda: "acme" in em._dispatcher.paused(), waiters=SENDERS)
        assert em._dispatcher._state("acme").aside == []
        assert em._dispatcher.aside_bytes == 0
        assert em.stats().queued == 20  # both batches wait in the queue
        em.set_write_key("acme", "key-acme-2")
        assert clock.run_until(lambda: em.stats().delivered == 20, waiters=SENDERS)
    finally:
        em.close(0)
    assert [(batch_of(r), r.write_key) for r in transport.requests][-2:] == [
        ("batch-0", "key-acme-2"),
        ("batch-1", "key-acme-2"),
    ]


@pytest.mark.parametrize(
    ("retry_after", "lease_seconds"),
    [(11, None), (3, 5.0)],
    ids=["over max_wait", "over half a lease that expires"],
)
def test_a_long_server_wait_makes_the_tenant_wait(
    retry_after: int, lease_seconds: float | None
) -> None:
    answer = MockResponse.error(503, "busy", retry_after=retry_after)
    em, transport, clock = fake_emitter(
        FirstOf("batch-0", answer), batch=BATCHES, max_requests_per_second=0
    )
    em._dispatcher.max_in_flight = 1
    if lease_seconds is not None:  # as the PostgreSQL spool's leases, which expire
        em._dispatcher.spool.lease_seconds = lease_seconds  # type: ignore[attr-defined]
    try:
        deliver_batches(em, clock, 2)
    finally:
        em.close(0)
    assert [(r.at, batch_of(r), r.retry_count) for r in transport.requests] == [
        (0.0, "batch-0", 0),
        (retry_after, "batch-0", 1),
        (retry_after, "batch-1", 0),
    ]


def test_a_batch_aside_whose_turn_comes_past_half_its_lease_goes_back_to_the_queue() -> None:
    """batch-0 is set aside for 1 s, but batch-1's 429 (8 s) keeps the tenant waiting past
    half batch-0's 10 s lease: another host may have taken its rows by then, so it is not
    sent from aside (with its own X-Retry-Count) but released and leased again (with the
    tenant's)."""
    answers = {
        "batch-0": MockResponse.error(503, "busy", retry_after=1),
        "batch-1": MockResponse.error(429, "slow down", retry_after=8),
    }
    lock = threading.Lock()
    batch_0_aside = threading.Event()

    def handler(request: MockRequest) -> MockResponse:
        name = batch_of(request)
        with lock:
            first = name in answers
        if name == "batch-1" and first:
            # The two are in flight together: batch-1's 429 settles after batch-0 is set
            # aside, whichever sender the scheduler runs first (else batch-0 goes back to
            # the queue at once, right too, but not what this test is about).
            assert batch_0_aside.wait(30)
        with lock:
            return answers.pop(name, None) or MockResponse.ok()

    em, transport, clock = fake_emitter(handler, batch=BATCHES, max_requests_per_second=0)
    set_aside = em._dispatcher.settler.set_aside

    def spy_aside(lease: Lease, messages: Sequence[EncodedMessage]) -> bool:
        kept = set_aside(lease, messages)
        if email_id_of(messages) == "batch-0":
            batch_0_aside.set()
        return kept

    em._dispatcher.settler.set_aside = spy_aside  # type: ignore[method-assign]
    spool = em._dispatcher.spool
    spool.lease_seconds = 10.0  # type: ignore[attr-defined]
    released: list[tuple[float, str]] = []
    release = spool.release

    def spy(lease: Lease, messages: Sequence[EncodedMessage]) -> None:
        released.append((clock.monotonic(), email_id_of(messages)))
        release(lease, messages)

    spool.release = spy  # type: ignore[method-assign]
    try:
        deliver_batches(em, clock, 2)
    finally:
        em.close(0)
    # batch-0 went back to the queue at the tenant's turn (t=8), not sent from aside.
    assert (8.0, "batch-0") in released
    assert sorted(batch_of(r) for r in transport.requests if r.at >= 5) == ["batch-0", "batch-1"]
    assert em._dispatcher.aside_bytes == 0


def test_a_key_refused_while_a_newer_batch_is_aside_puts_both_back_oldest_first() -> None:
    """batch-1 is set aside (503) while the older batch-0 is still out, and batch-2 goes
    beside it; batch-0's answer is then a 401: the tenant pauses and both go back to the
    memory queue, batch-0 first."""
    batch_2_delivered = threading.Event()
    paused = threading.Event()

    def handler(request: MockRequest) -> MockResponse:
        if batch_of(request) == "batch-1":
            return MockResponse.error(503, "busy", retry_after=5)
        if batch_of(request) == "batch-0":
            assert batch_2_delivered.wait(30)  # answered once batch-1 is aside, batch-2 gone
            return MockResponse.error(401, "bad key")
        return MockResponse.ok()

    em, _, _ = fake_emitter(
        handler, batch=BATCHES, max_requests_per_second=0, on_pause=lambda *_: paused.set()
    )
    dispatcher = em._dispatcher
    delivered = dispatcher.settler.delivered

    def spy_delivered(lease: Lease, messages: Sequence[EncodedMessage]) -> None:
        delivered(lease, messages)
        if email_id_of(messages) == "batch-2":
            batch_2_delivered.set()

    dispatcher.settler.delivered = spy_delivered  # type: ignore[method-assign]
    try:
        emit_batches(em, 3)
        assert paused.wait(30)  # called once the batches are back in the queue
        queued = [
            orjson.loads(m.body)["properties"]["email_id"]
            for m in dispatcher.spool._queues["acme"]  # type: ignore[attr-defined]
        ]
    finally:
        em.close(0)
    assert queued == ["batch-0"] * 10 + ["batch-1"] * 10


# -- the limits ------------------------------------------------------------------------------


def test_in_an_outage_a_tenant_sets_aside_at_most_max_batches_then_waits() -> None:
    clock = FakeClock()
    outage = MockResponse.error(503, "down", retry_after=5)
    em, transport, _ = fake_emitter(
        lambda request: outage if request.at < 5 else MockResponse.ok(),
        clock=clock,
        batch=BATCHES,
        max_requests_per_second=0,
        aside=AsidePolicy(max_batches=2),  # through EmitterConfig
    )
    assert em._dispatcher.aside_policy == AsidePolicy(max_batches=2)
    try:
        emit_batches(em, 6)
        assert clock.run_until(lambda: clock.monotonic() >= 5, waiters=SENDERS)
        before = [r for r in transport.requests if r.at < 5]
        assert clock.run_until(lambda: em.stats().delivered == 60, waiters=SENDERS)
    finally:
        em.close(0)
    # Two batches set aside, the third failure made the tenant wait its Retry-After (a
    # fourth request may have been out beside it): not the six batches.
    assert 3 <= len(before) <= 4
    assert {r.at for r in before} == {0.0}
    assert em._dispatcher.aside_bytes == 0


def test_the_bytes_held_aside_by_all_tenants_stay_under_max_bytes() -> None:
    clock = FakeClock()
    held: list[int] = []
    em: Emitter | None = None

    def handler(request: MockRequest) -> MockResponse:
        assert em is not None
        held.append(em._dispatcher.aside_bytes)
        if request.at < 10:
            return MockResponse.error(500, "busy", retry_after=10)
        return MockResponse.ok()

    em, _, _ = fake_emitter(handler, clock=clock, batch=BATCHES, max_requests_per_second=0)
    # As held: each body and comma twice (the messages' bodies and their joined array).
    one_batch = 2 * sum(
        len(encode(record(i, "acme", email_id="batch-0")).body) + 1 for i in range(10)
    )
    em._dispatcher.aside_policy = AsidePolicy(max_batches=4, max_bytes=one_batch + 50)
    em._dispatcher.max_in_flight = 1  # the tenant with a batch aside sends its next alone
    try:
        emit_batches(em, 3, tenant="acme")
        emit_batches(em, 3, tenant="globex")
        assert clock.run_until(lambda: em.stats().delivered == 60, waiters=SENDERS)
    finally:
        em.close(0)
    assert max(held) <= one_batch + 50
    assert max(held) > 0  # one batch was set aside


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_batches", -1),
        ("max_batches", 1.5),
        ("max_bytes", -1),
        ("max_bytes", True),
        ("max_wait", -0.5),
        ("max_wait", float("nan")),
    ],
)
def test_aside_policy_validation_names_the_field(field: str, value: object) -> None:
    with pytest.raises(ConfigurationError, match=field):
        AsidePolicy(**{field: value})


def test_a_thousand_tenants_under_5xx_faults_use_no_more_threads() -> None:
    clock = FakeClock()
    faults = FaultPlan.mix(seed=3, rates={500: 0.3}, retry_after=1)
    tenants = [f"t{i}" for i in range(1000)]
    with LocalSegment(faults=faults, record_events=False) as server:
        timed = Timed(HttpTransport(max_connections=SENDERS), clock)
        em = Emitter(
            endpoint=server.url,
            write_keys={t: f"key-{t}" for t in tenants},
            transport=timed,
            clock=clock,
            batch=BatchPolicy(linger=0.0),
        )
        before = {t.name for t in threading.enumerate()}
        try:
            em.emit_many([record(i, t) for t in tenants for i in range(2)])
            assert clock.run_until(lambda: em.stats().delivered == 2000, waiters=SENDERS)
            library = [
                t.name
                for t in threading.enumerate()
                if t.name.startswith("selligent-segment") and t.name not in before
            ]
            stats = em.stats()
        finally:
            em.close(0)
        assert server.stats()["unique_message_ids"] == 2000
    assert stats.retried > 0  # batches were set aside and sent again
    assert em.thread_count() == 1 + SENDERS
    assert len([n for n in library if n != "selligent-segment-deadline"]) <= 1 + SENDERS


def dispatcher_on(spool: Spool) -> Dispatcher:
    """A Dispatcher over ``spool`` (nothing started, nothing sent)."""
    return Dispatcher(
        spool=spool,
        keys=WriteKeys("key", None),
        endpoint="http://127.0.0.1:9",
        transport=HttpTransport(),
        batch=BATCHES,
        retry=RetryPolicy(),
        threads=1,
        max_requests_per_second=0,
        counters=Counters(),
        on_failure=lambda failure: None,
        on_pause=lambda tenant, reason: None,
    )


def test_with_the_postgresql_spool_a_batch_is_set_aside_for_under_half_a_lease(
    postgres: LocalPostgres,
) -> None:
    spool = PostgresSpool(postgres.url, schema="aside_lease", lease_seconds=4.0)
    try:
        assert dispatcher_on(spool)._aside_wait() == 2.0  # not max_wait's 10 s
    finally:
        spool.close()
    assert dispatcher_on(MemorySpool(1 << 20))._aside_wait() == AsidePolicy().max_wait == 10.0
