"""The dispatcher over real loopback HTTP: rate cap per write key, server pacing, paused
tenants, two requests in flight; and the batch policy it works with."""

from __future__ import annotations

import itertools
import logging
import threading
import time
from typing import Any

import pytest
from _delivery import FAST_RETRY, emitter, record

from selligent_segment import BatchPolicy, ConfigurationError, Emitter, RetryPolicy, encode
from selligent_segment.delivery._dispatcher import Dispatcher
from selligent_segment.delivery._keys import WriteKeys, fingerprint
from selligent_segment.delivery._stats import Counters
from selligent_segment.delivery._transport import HttpTransport
from selligent_segment.spool._memory import MemorySpool
from selligent_segment.testing import Fault, FaultPlan, LocalSegment

ONE_PER_REQUEST = BatchPolicy(max_messages=1, linger=0.0)


def arrival_times(server: LocalSegment) -> list[float]:
    """When the server received each request, in order (its own monotonic clock)."""
    return sorted(r.received_at for r in server.requests)


# -- the request-rate cap is per write key ----------------------------------------------------

RATE = 5.0  # requests/s; the bucket then holds max(1, RATE / 10) = 1 token
PER_TENANT = 5


def _send_two_tenants(server: LocalSegment, keys: dict[str, str]) -> None:
    with emitter(
        server, write_keys=keys, batch=ONE_PER_REQUEST, max_requests_per_second=RATE
    ) as em:
        for i in range(PER_TENANT):
            em.emit(record(i, "acme"))
            em.emit(record(i, "globex"))
        assert em.flush(30)
    assert server.accepted_count == 2 * PER_TENANT


def test_tenants_sharing_a_write_key_share_its_rate_cap(server: LocalSegment) -> None:
    _send_two_tenants(server, {"acme": "key-shared", "globex": "key-shared"})
    times = arrival_times(server)
    assert len(times) == 2 * PER_TENANT
    # One bucket of one token: request i leaves no earlier than i / RATE after the first.
    # Lower bounds only (a slow machine can only add time); 0.25 s absorbs the first
    # request reaching the server late.
    assert times[-1] - times[0] >= (len(times) - 1) / RATE - 0.25
    for i in range(2, len(times)):
        assert times[i] - times[0] >= (i - 1) / RATE - 0.25, i


def test_tenants_with_their_own_keys_each_get_the_whole_rate(server: LocalSegment) -> None:
    _send_two_tenants(server, {"acme": "key-acme", "globex": "key-globex"})
    for key in ("key-acme", "key-globex"):  # each key keeps to its own cap ...
        own = sorted(r.received_at for r in server.requests if r.write_key == key)
        assert len(own) == PER_TENANT
        assert own[-1] - own[0] >= (PER_TENANT - 1) / RATE - 0.25
    # ... and together they run well ahead of what one shared bucket would allow (the
    # last request about 1.0 s ahead of it): noise could only shrink that lead by
    # delaying later requests more than earlier ones, by 0.6 s.
    times = arrival_times(server)
    lead = max(i / RATE - (t - times[0]) for i, t in enumerate(times))
    assert lead >= 0.4, times


def test_rate_buckets_are_kept_by_key_fingerprint_never_by_key(server: LocalSegment) -> None:
    keys = {"acme": "sekrit-shared", "globex": "sekrit-shared", "initech": "sekrit-own"}
    with emitter(server, write_keys=keys) as em:
        for tenant in keys:
            em.emit(record(1, tenant))
        assert em.flush(10)
        buckets = em._dispatcher._buckets
        assert set(buckets) == {fingerprint("sekrit-shared"), fingerprint("sekrit-own")}
        assert "sekrit" not in repr(buckets) + repr(em._dispatcher._tenants)


# -- server pacing --------------------------------------------------------------------------


def test_x_ratelimit_reset_on_a_429_is_obeyed_outside_the_retry_budget(
    server: LocalSegment,
) -> None:
    # Two 429s with X-RateLimit-Reset: 1 and no Retry-After. Counted as backoff, they
    # would exhaust max_attempts=2; as server pacing they are waited out and delivered.
    server.set_faults(FaultPlan(script=[Fault.http(429, x_ratelimit_reset=1)] * 2))
    retry = RetryPolicy(initial_backoff=0.01, max_backoff=0.05, max_attempts=2)
    with emitter(server, retry=retry) as em:
        em.emit(record(1))
        assert em.flush(15)
        stats = em.stats()
    assert (stats.delivered, stats.dropped, stats.retried) == (1, {}, 2)
    times = [r.received_at for r in server.requests]
    assert len(times) == 3
    assert all(b - a >= 0.95 for a, b in itertools.pairwise(times))
    assert [r.retry_count for r in server.requests] == [0, 1, 2]


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
    """A key resolver that records when the senders ask it, for tests to wait on."""

    def __init__(self, keys: dict[str, str]) -> None:
        self.keys = keys
        self.asked: list[float] = []
        self.cv = threading.Condition()

    def __call__(self, tenant: str) -> str | None:
        if threading.current_thread().name.startswith("selligent-segment-sender"):
            with self.cv:
                self.asked.append(time.monotonic())
                self.cv.notify_all()
        return self.keys.get(tenant)

    def wait_asked(self, times: int, timeout: float = 10.0) -> bool:
        with self.cv:
            return self.cv.wait_for(lambda: len(self.asked) >= times, timeout)


def test_a_paused_tenant_is_rechecked_and_resumes_when_its_resolver_gives_a_new_key() -> None:
    paused: list[tuple[str, str]] = []
    resolver = Resolver({"acme": "key-old"})
    with LocalSegment(write_keys=["key-new"]) as server:
        em = emitter(server, write_keys=resolver, on_pause=lambda t, r: paused.append((t, r)))
        em._dispatcher.paused_recheck = 0.2
        try:
            for i in range(3):
                em.emit(record(i))
            # The first turn sends with key-old and is refused (401); each re-check asks
            # the resolver again, gets the same refused key and sends nothing.
            assert resolver.wait_asked(3)
            assert server.request_count == 1
            assert server.requests[0].status == 401
            assert em.stats().tenants["acme"].paused == "write key refused (401)"
            resolver.keys["acme"] = "key-new"
            assert server.wait_for(3, timeout=10)
            assert em.flush(10)
            stats = em.stats()
        finally:
            em.close()
        assert len(server.events("key-new")) == 3
    assert stats.tenants["acme"].paused is None
    assert (stats.delivered, stats.dropped, stats.queued) == (3, {}, 0)
    assert paused == [("acme", "write key refused (401)")]
    first, second, third = resolver.asked[:3]
    assert second - first >= 0.19  # re-checked after paused_recheck, not sooner
    assert third - second >= 0.19


def test_a_tenant_without_a_key_is_paused_and_resumes_when_one_appears() -> None:
    resolver = Resolver({})
    with LocalSegment() as server:
        em = emitter(server, write_keys=resolver)
        em._dispatcher.paused_recheck = 0.2
        try:
            em.emit(record(1))
            assert resolver.wait_asked(2)
            assert server.request_count == 0
            assert em.stats().tenants["acme"].paused == "no write key configured"
            resolver.keys["acme"] = "key-acme"
            assert server.wait_for(1, timeout=10)
            assert em.flush(10)
        finally:
            em.close()
        assert len(server.events("key-acme")) == 1


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


def emit_batches(em: Emitter, n_batches: int, per_batch: int) -> None:
    """Emit ``n_batches`` full batches, each event tagged with its batch's number."""
    for b in range(n_batches):
        for i in range(per_batch):
            em.emit(record(b * per_batch + i, email_id=f"batch-{b}"))


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
    gate = Gate(timeout=1.0)
    with LocalSegment(refuse=gate) as server:
        batch = BatchPolicy(max_messages=10, linger=5.0)
        em = emitter(server, batch=batch, max_requests_per_second=0)
        em._dispatcher.max_in_flight = 1
        try:
            emit_batches(em, 2, 10)
            assert em.flush(20)
        finally:
            em.close()
        # In order, one at a time: the first batch waited its 1 s for a second that
        # could not come while it was in flight.
        assert [e["properties"]["email_id"] for e in server.accepted][::10] == [
            "batch-0",
            "batch-1",
        ]
    assert gate.overlapped is False


def test_two_failures_in_flight_together_count_as_one_attempt() -> None:
    # Both batches are in the server at once (the first is held 2 s) and both get a 500.
    # Counted twice, max_attempts=2 would drop a batch; counted once, both are delivered.
    plan = FaultPlan(script=[Fault.http(500, delay=2.0), Fault.http(500, delay=2.0)])
    with LocalSegment(faults=plan) as server:
        batch = BatchPolicy(max_messages=10, linger=5.0)
        retry = RetryPolicy(initial_backoff=0.01, max_backoff=0.05, max_attempts=2)
        with emitter(server, batch=batch, retry=retry, max_requests_per_second=0) as em:
            emit_batches(em, 2, 10)
            assert em.flush(20)
            stats = em.stats()
        first, second = sorted(r.received_at for r in server.requests)[:2]
        assert second - first < 2.0  # the second was sent while the first was held
    assert (stats.delivered, stats.dropped) == (20, {})


def _dispatcher(backlog: int, full_at: int = 10) -> tuple[Dispatcher, Any]:
    spool = MemorySpool(1 << 20)
    spool.put_many([encode(record(i), tenant="acme") for i in range(backlog)])
    dispatcher = Dispatcher(
        spool=spool,
        keys=WriteKeys("key", None),
        endpoint="http://127.0.0.1:9",
        transport=HttpTransport(),
        batch=BatchPolicy(),
        retry=FAST_RETRY,
        threads=2,
        max_requests_per_second=0,
        counters=Counters(),
        on_failure=lambda failure: None,
        on_pause=lambda tenant, reason: None,
    )
    dispatcher.full_at = full_at
    state = dispatcher._state("acme")
    state.in_flight = 1
    return dispatcher, state


def test_overlap_only_while_the_tenant_is_healthy_and_a_full_batch_waits() -> None:
    now = time.monotonic()
    dispatcher, state = _dispatcher(backlog=10)
    assert dispatcher._may_overlap(state, now)
    for change in (
        {"retries": 1},  # a retry is pending: its batch must go first, alone
        {"paused": "write key refused (401)"},
        {"not_before": now + 1.0},  # waiting out a backoff or Retry-After
        {"in_flight": 2},  # both slots taken
        {"in_flight": 0},  # nothing in flight: an ordinary turn, not an overlap
    ):
        dispatcher, state = _dispatcher(backlog=10)
        for name, value in change.items():
            setattr(state, name, value)
        assert not dispatcher._may_overlap(state, now), change
    dispatcher, state = _dispatcher(backlog=9)  # less than a full batch behind
    assert not dispatcher._may_overlap(state, now)
    dispatcher, state = _dispatcher(backlog=10)
    dispatcher._ready.append("globex")  # another tenant waits for a sender: it goes first
    assert not dispatcher._may_overlap(state, now)
    dispatcher, state = _dispatcher(backlog=10)
    dispatcher.max_in_flight = 1
    assert not dispatcher._may_overlap(state, now)


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
    burst = max(1.0, rate / 10)
    failures: list[Any] = []
    caplog.set_level(logging.DEBUG, logger="selligent_segment")
    with LocalSegment(strict=True, refuse=lambda item: "refused") as server:
        with emitter(
            server,
            batch=BatchPolicy(linger=5.0),
            max_requests_per_second=rate,
            on_failure=failures.append,
        ) as em:
            em.emit_many([record(i) for i in range(n)])
            assert em.flush(30)
            assert em.stats().rejected == {"rejected": n}
        times = arrival_times(server)
    assert len(times) == 2 * n - 1
    # Not faster than the bucket allows: request i needs i - burst refills after the first.
    for i, t in enumerate(times):
        assert t - times[0] >= (i - burst) / rate - 0.02, (i, t - times[0])
    assert sorted(m for f in failures for m in f.message_ids) == sorted(
        encode(record(i)).message_id for i in range(n)
    )
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    message = errors[0].getMessage()
    assert f"a batch of {n} events was refused" in message
    assert f"bisected in {2 * n - 1} requests: 0 delivered, {n} rejected" in message


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
