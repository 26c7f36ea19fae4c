"""Delivery through the Emitter, over real loopback HTTP to LocalSegment; the tests of
scheduling (Retry-After, rate cap, backoff, paused re-checks) run on a FakeClock and assert
exact times, most of them through a MockTransport."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from _delivery import Timed, emitter, fake_emitter, record
from _forks import wait_child

from selligent_segment import (
    BatchPolicy,
    CallbackRecord,
    ConfigurationError,
    DeliveryFailure,
    Emitter,
    EmitterClosed,
    InvalidEvent,
    RetryPolicy,
    SpoolFull,
    UnknownTenant,
    encode,
)
from selligent_segment.delivery._dispatcher import PAUSED_RECHECK
from selligent_segment.delivery._transport import HttpTransport
from selligent_segment.testing import (
    FakeClock,
    Fault,
    FaultPlan,
    LocalSegment,
    MockRequest,
    MockResponse,
    MockTransport,
)

SENDERS = 2  # the Emitter's default number of sender threads


# -- the basics -----------------------------------------------------------------------------


def test_events_reach_each_tenants_workspace_with_its_key(server: LocalSegment) -> None:
    with emitter(server) as em:
        em.emit(record(1, "acme"))
        em.emit(record(2, "globex"))
        em.emit(CallbackRecord.from_dict(record(3, "acme")))
        assert em.flush(10)
    assert {e["properties"]["email_id"] for e in server.accepted} == {"m-1"}
    assert len(server.events("key-acme")) == 2
    assert len(server.events("key-globex")) == 1
    assert server.events("key-globex")[0]["anonymousId"] == "user2@example.com"
    request = server.requests[0]
    expected = "Basic " + base64.b64encode(f"{request.write_key}:".encode()).decode()
    assert request.headers["authorization"] == expected


def test_convenience_methods_name_each_kind(server: LocalSegment) -> None:
    with emitter(server, write_keys=None, write_key="k") as em:
        em.delivered(email="a@example.com", event_id="1")
        em.opened(email="a@example.com", event_id="2")
        em.link_clicked(email="a@example.com", event_id="3", link_url="https://x.example")
        em.unsubscribed(email="a@example.com", event_id="4")
        em.bounced(email="a@example.com", event_id="5", bounce_type="hard")
        em.marked_as_spam(email="a@example.com", event_id="6")
        assert em.flush(10)
    assert [e["event"] for e in server.accepted] == [
        "Email Delivered",
        "Email Opened",
        "Email Link Clicked",
        "Email Unsubscribed",
        "Email Bounced",
        "Email Marked as Spam",
    ]


def test_invalid_record_raises_naming_the_field_and_costs_no_other_event(
    server: LocalSegment,
) -> None:
    with emitter(server) as em:
        em.emit(record(1))
        with pytest.raises(InvalidEvent) as info:
            em.emit(record(2, email="nope"))
        assert info.value.field == "email"
        em.emit(record(3))
        assert em.flush(10)
    assert sorted(e["anonymousId"] for e in server.accepted) == [
        "user1@example.com",
        "user3@example.com",
    ]


def test_tenant_is_required_and_must_be_known_with_several_keys(server: LocalSegment) -> None:
    with emitter(server) as em:
        with pytest.raises(InvalidEvent) as info:
            em.emit({"type": "opened", "email": "a@example.com"})
        assert info.value.field == "tenant"
        with pytest.raises(UnknownTenant) as unknown:
            em.emit(record(1, "initech"))
        assert "key-" not in str(unknown.value)


def test_emit_after_close_raises_and_close_is_idempotent(server: LocalSegment) -> None:
    em = emitter(server)
    em.emit(record(1))
    assert em.close(10)
    assert em.close(10)
    with pytest.raises(EmitterClosed):
        em.emit(record(2))
    assert server.accepted_count == 1


def test_configuration_is_validated_on_construction(server: LocalSegment) -> None:
    with pytest.raises(ConfigurationError, match="write_key"):
        Emitter(endpoint=server.url)
    with pytest.raises(ConfigurationError, match="threads"):
        Emitter("k", endpoint=server.url, threads=0)
    with pytest.raises(ConfigurationError, match="on_full"):
        Emitter("k", endpoint=server.url, on_full="explode")
    with pytest.raises(ConfigurationError, match="endpoint"):
        Emitter("k", endpoint="http://example.com")
    with pytest.raises(ConfigurationError, match="max_spool_bytes"):
        Emitter("k", endpoint=server.url, max_spool_bytes=1000)
    with pytest.raises(ConfigurationError, match="aside"):
        Emitter("k", endpoint=server.url, aside={"max_batches": 0})


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("timeout", float("nan")),
        ("block_timeout", float("inf")),
        ("max_requests_per_second", float("nan")),
        ("exit_timeout", float("-inf")),
        ("threads", 2.0),
        ("max_pending", True),
        ("request_deadline", 0.0),
        ("request_deadline", float("inf")),
        # Past what a wait or a socket timeout takes: a thread died of OverflowError later.
        ("timeout", 1e10),
        ("request_deadline", 1e10),
        ("block_timeout", 1e10),
        ("exit_timeout", 1e10),
        ("max_requests_per_second", 1e-12),
    ],
)
def test_numeric_options_refuse_nan_infinity_and_wrong_types(
    server: LocalSegment, setting: str, value: object
) -> None:
    with pytest.raises(ConfigurationError) as info:
        Emitter("k", endpoint=server.url, **{setting: value})
    assert info.value.setting == setting


def test_write_keys_never_appear_in_repr(server: LocalSegment) -> None:
    em = emitter(server, write_keys={"acme": "sekrit-key-1"})
    try:
        assert "sekrit" not in repr(em)
        assert "sekrit" not in repr(em.stats())
    finally:
        em.close()


def test_stats_count_per_tenant(server: LocalSegment) -> None:
    with emitter(server) as em:
        for i in range(5):
            em.emit(record(i, "acme"))
        em.emit(record(9, "globex"))
        assert em.flush(10)
        stats = em.stats()
    assert stats.accepted == stats.delivered == 6
    assert stats.tenants["acme"].delivered == 5
    assert stats.tenants["globex"].delivered == 1
    assert stats.queued == 0


# -- retries ----------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [408, 410, 460, 500, 502, 503, 504, "drop"])
def test_retryable_failures_are_retried_until_delivered(
    server: LocalSegment, status: int | str
) -> None:
    server.set_faults(FaultPlan(script=[status, status]))
    with emitter(server) as em:
        em.emit(record(1))
        assert em.flush(10)
        assert em.stats().retried == 2
    assert server.accepted_count == 1
    assert [r.retry_count for r in server.requests] == [0, 1, 2]


@pytest.mark.parametrize("status", [501, 505, 404])
def test_never_retried_statuses_are_reported_not_retried(server: LocalSegment, status: int) -> None:
    failures: list[DeliveryFailure] = []
    server.set_faults(FaultPlan(script=[status]))
    with emitter(server, on_failure=failures.append) as em:
        em.emit(record(1))
        assert em.flush(10)
        assert em.stats().rejected == {"rejected": 1}
    assert len(server.requests) == 1
    assert [f.status for f in failures] == [status]
    assert failures[0].message_ids


def test_retry_after_is_obeyed_and_does_not_use_the_retry_budget(server: LocalSegment) -> None:
    """End to end over real HTTP, scheduled on a FakeClock: three 429s with Retry-After: 1
    are each waited out, exactly 1 s, without using up max_attempts=2."""
    server.set_faults(FaultPlan(script=[Fault.http(429, retry_after=1)] * 3))
    retry = RetryPolicy(initial_backoff=0.01, max_backoff=0.05, max_attempts=2)
    clock = FakeClock()
    transport = Timed(HttpTransport(), clock)
    em = emitter(server, retry=retry, clock=clock, transport=transport)
    try:
        em.emit(record(1))
        assert clock.run_until(lambda: em.stats().delivered == 1, waiters=SENDERS)
    finally:
        em.close(0)
    assert transport.at == [0.0, 1.0, 2.0, 3.0]
    assert [r.status for r in server.requests] == [429, 429, 429, 200]
    assert server.accepted_count == 1


def test_retry_budget_exhausted_is_reported(server: LocalSegment) -> None:
    failures: list[DeliveryFailure] = []
    server.outage(500)
    retry = RetryPolicy(initial_backoff=0.01, max_backoff=0.02, max_attempts=3)
    with emitter(server, retry=retry, on_failure=failures.append) as em:
        em.emit(record(1))
        assert em.flush(10)
        assert em.stats().dropped == {"retries_exhausted": 1}
    assert len(server.requests) == 3
    assert failures[0].reason == "retries_exhausted"
    assert "3 attempts" in failures[0].detail


# -- permanent failures ---------------------------------------------------------------------


def test_a_400_is_bisected_to_isolate_the_offenders() -> None:
    poison = {"user7@example.com", "user12@example.com"}

    def refuse(item: Any) -> str | None:
        return "poison" if item.get("anonymousId") in poison else None

    failures: list[DeliveryFailure] = []
    with LocalSegment(strict=True, refuse=refuse) as server:
        batch = BatchPolicy(linger=5.0)
        with emitter(server, batch=batch, on_failure=failures.append) as em:
            for i in range(20):
                em.emit(record(i))
            assert em.flush(10)
            assert em.stats().rejected == {"rejected": 2}
            assert em.stats().delivered == 18
        assert server.accepted_count == 18
    refused = sorted(m for f in failures for m in f.message_ids)
    assert len(refused) == 2
    assert {f.status for f in failures} == {400}


@pytest.mark.slow  # a second or more of real waiting
def test_401_pauses_the_tenant_keeps_its_events_and_a_new_key_resumes_it() -> None:
    paused: list[tuple[str, str]] = []
    with LocalSegment(write_keys=["key-globex"]) as server:
        em = emitter(server, on_pause=lambda t, r: paused.append((t, r)))
        try:
            for i in range(3):
                em.emit(record(i, "acme"))
            em.emit(record(9, "globex"))
            assert not em.flush(1.0)
            assert server.events("key-globex")
            stats = em.stats()
            assert stats.tenants["acme"].queued == 3
            assert stats.tenants["acme"].paused is not None
            assert stats.dropped == {}
            assert paused == [("acme", "write key refused (401)")]
            server.add_write_key("key-acme-2")
            em.set_write_key("acme", "key-acme-2")
            assert em.flush(10)
        finally:
            em.close()
        assert len(server.events("key-acme-2")) == 3


def test_a_key_replaced_while_a_request_with_the_old_one_is_out_is_used_at_once() -> None:
    # The 401 for the old key arrives after set_write_key: no pause, no 30 s re-check wait.
    paused: list[tuple[str, str]] = []
    replaced = threading.Event()

    def handler(request: MockRequest) -> MockResponse:
        if request.write_key != "key-acme-2":
            assert replaced.wait(10)  # the old key's request is out until the key changes
            return MockResponse.error(401)
        return MockResponse.ok()

    em, transport, clock = fake_emitter(handler, on_pause=lambda t, r: paused.append((t, r)))
    assert em._dispatcher.paused_recheck == PAUSED_RECHECK >= 30
    try:
        em.emit(record(1, "acme"))
        assert transport.wait_for_requests(1)
        em.set_write_key("acme", "key-acme-2")
        replaced.set()
        assert clock.run_until(lambda: em.stats().delivered == 1, waiters=SENDERS)
    finally:
        em.close(0)
    assert [(r.at, r.write_key) for r in transport.requests] == [
        (0.0, "key-acme"),
        (0.0, "key-acme-2"),  # at once, not after a re-check
    ]
    assert [r.status for r in transport.responses] == [401, 200]
    assert paused == []


@pytest.mark.parametrize("looked_up", ["key-acme", None], ids=["old key", "no key"])
def test_a_key_replaced_just_after_a_turn_looked_the_old_one_up_is_used_at_once(
    looked_up: str | None,
) -> None:
    """The key is replaced between the turn's lookup of the old key (or of none) and its
    request: the old key's 401, or the missing key, makes no pause either."""
    paused: list[tuple[str, str]] = []

    def handler(request: MockRequest) -> MockResponse:
        return MockResponse.ok() if request.write_key == "key-acme-2" else MockResponse.error(401)

    em, transport, clock = fake_emitter(handler, on_pause=lambda t, r: paused.append((t, r)))
    keys = em._dispatcher.keys
    resolve = keys.resolve

    def resolve_then_replace(tenant: str) -> str | None:
        key = resolve(tenant)
        if key == "key-acme":
            em.set_write_key("acme", "key-acme-2")
            return looked_up
        return key

    keys.resolve = resolve_then_replace  # type: ignore[method-assign]
    try:
        em.emit(record(1, "acme"))
        assert clock.run_until(lambda: em.stats().delivered == 1, waiters=SENDERS)
    finally:
        em.close(0)
    sent = [(r.at, r.write_key) for r in transport.requests]
    assert sent == [(0.0, "key-acme"), (0.0, "key-acme-2")][looked_up is None :]  # at once
    assert paused == []


# -- tenants on one pool ------------------------------------------------------------------------


def test_one_tenants_outage_does_not_delay_another() -> None:
    def handler(request: MockRequest) -> MockResponse:
        return MockResponse(503) if request.write_key == "key-acme" else MockResponse.ok()

    em, transport, clock = fake_emitter(
        handler, retry=RetryPolicy(initial_backoff=5.0, max_backoff=5.0)
    )
    try:
        em.emit_many([record(1, "acme"), record(2, "globex")])
        assert clock.run_until(lambda: len(transport.requests) == 3, waiters=SENDERS)
        stats = em.stats()
    finally:
        em.close(0)
    # globex goes at once while acme backs off; acme tries again exactly 5 s later.
    assert sorted((r.at, r.write_key) for r in transport.requests) == [
        (0.0, "key-acme"),
        (0.0, "key-globex"),
        (5.0, "key-acme"),
    ]
    assert stats.tenants["globex"].delivered == 1
    assert stats.tenants["acme"].delivered == 0


def test_a_huge_tenant_does_not_starve_small_ones() -> None:
    # The one sender's first request is held until every event is accepted, so the small
    # tenants are queued while the big one has 199 batches to go, however fast the
    # encoder runs; each request then yields the CPU for 1 ms, as a real one does, or the
    # sender could send dozens of batches before the encoder hands the last ones over
    # (the dispatcher's own test pins the exact order).
    accepted = threading.Event()

    def handler(request: MockRequest) -> MockResponse:
        assert accepted.wait(10)
        time.sleep(0.001)
        return MockResponse.ok()

    batch = BatchPolicy(max_messages=10, linger=0.0)
    keys = {"big": "key-big", **{f"small{i}": f"key-small{i}" for i in range(5)}}
    em, transport, _ = fake_emitter(
        handler, write_keys=keys, batch=batch, threads=1, max_requests_per_second=0
    )
    with em:
        for i in range(2000):
            em.emit(record(i, "big"))
        for i in range(5):
            em.emit(record(i, f"small{i}"))
        for _ in range(1000):
            if em.stats().accepted == 2005:
                break
            time.sleep(0.01)
        accepted.set()
        assert em.flush(30)
    order = [r.write_key for r in transport.requests]
    assert sum(len(r.items) for r in transport.requests) == 2005
    last_small = max(i for i, key in enumerate(order) if key != "key-big")
    assert last_small < 20, order[:30]
    assert {r.at for r in transport.requests} == {0.0}  # no time passes for fairness


def test_request_rate_is_capped_per_tenant() -> None:
    # 20 requests/s: a token bucket with bursts of max(1, 20/10) = 2 requests.
    batch = BatchPolicy(max_messages=1, linger=0.0)
    em, transport, clock = fake_emitter(batch=batch, max_requests_per_second=20)
    try:
        em.emit_many([record(i) for i in range(8)])
        assert clock.run_until(lambda: em.stats().delivered == 8, waiters=SENDERS)
    finally:
        em.close(0)
    # The burst of 2 at once, then one request every 50 ms, exactly.
    assert [r.at for r in transport.requests] == pytest.approx(
        [0.0, 0.0, 0.05, 0.10, 0.15, 0.20, 0.25, 0.30]
    )


@pytest.mark.slow  # a second or more of real waiting
def test_thousands_of_tenants_share_a_fixed_pool(server: LocalSegment) -> None:
    keys = {f"t{i}": f"key-{i}" for i in range(2000)}
    with emitter(server, write_keys=keys, threads=2) as em:
        for i in range(2000):
            em.emit(record(i, f"t{i}"))
        assert em.flush(60)
        ours = [t for t in threading.enumerate() if t.name.startswith("selligent-segment-")]
        # Besides its own threads, at most the transports' one shared deadline watchdog.
        shared = [t for t in ours if t.name == "selligent-segment-deadline"]
        assert len(ours) - len(shared) == em.thread_count() == 3
        assert len(shared) <= 1
    assert server.accepted_count == 2000


# -- batch limits -------------------------------------------------------------------------------


def test_requests_stay_within_500_kb_and_2500_messages(server: LocalSegment) -> None:
    with emitter(server, batch=BatchPolicy(max_messages=2500, linger=0.5)) as em:
        for i in range(60):
            em.emit(record(i, properties={"blob": "x" * 30_000}))
        for i in range(60, 3060):
            em.emit(record(i))
        assert em.flush(30)
    assert server.accepted_count == 3060
    assert server.dropped == []
    assert max(r.nbytes for r in server.requests) <= 500 * 1024
    assert max(r.n_items for r in server.requests) <= 2500


def test_gzip_bodies_are_accepted(server: LocalSegment) -> None:
    with emitter(server, batch=BatchPolicy(linger=0.0, gzip=True)) as em:
        em.emit(record(1))
        assert em.flush(10)
    assert server.requests[0].headers.get("content-encoding") == "gzip"
    assert server.accepted_count == 1


# -- full spool ---------------------------------------------------------------------------------


def _stalled(server: LocalSegment, **options: Any) -> Emitter:
    server.outage(503)
    retry = RetryPolicy(initial_backoff=60.0, max_backoff=60.0)
    return emitter(server, retry=retry, max_spool_bytes=64 * 1024, max_pending=5, **options)


def _fill(em: Emitter) -> None:
    # ~400 bytes each: the 64 KiB spool takes ~160, then the pending queue fills.
    def emit_until_refused() -> None:
        for i in range(10_000):
            em.emit(record(i))

    with pytest.raises(SpoolFull):
        emit_until_refused()


def test_full_spool_raises_by_default(server: LocalSegment) -> None:
    em = _stalled(server)
    _fill(em)
    assert em.stats().refused == {"spool_full": 1}
    em.close(0.1)


@pytest.mark.parametrize(
    ("refused_call", "resume", "invalid"), [(1, 2, [0, 1]), (2, 515, [0, 1, 3])]
)
def test_emit_many_stopped_by_a_full_spool_says_where_to_resume(
    monkeypatch: pytest.MonkeyPatch, refused_call: int, resume: int, invalid: list[int]
) -> None:
    """SpoolFull part-way through emit_many: ``accepted`` alone did not say which
    records it covered, and the invalid ones refused before it were not reported at all.
    Every record before ``next_index`` was accepted or is in ``refused``; none from it on
    was accepted. Records 0, 1, 3 and 700 are invalid; the full queue refuses the first
    chunk of 512 valid records (from index 2), or the second (from index 515: index 700
    is in it, not reported yet). The chunk step raises as a full queue makes it raise
    (tests/test_sqlite_spool.py's test_emit_many_at_the_spool_size_cap_applies_on_full
    does it for real; here a real full queue would race with the encoder)."""
    em, _, _ = fake_emitter()
    bad = {**record(0), "email": "not-an-email"}
    records: list[Any] = [record(i) for i in range(1200)]
    records[0] = records[1] = records[3] = records[700] = bad
    calls: list[int] = []

    def full_at_call(*args: Any) -> int:
        calls.append(1)
        if len(calls) == refused_call:
            raise SpoolFull("spool full")
        return 512

    monkeypatch.setattr(em, "_accept_chunk", full_at_call)
    try:
        with pytest.raises(SpoolFull) as caught:
            em.emit_many(records)
    finally:
        em.close(0)
    assert (caught.value.next_index, [i for i, _ in caught.value.refused]) == (resume, invalid)
    assert str(caught.value.refused[0][1]) == "email: not a plausible email address"


def test_full_spool_drop_newest_reports_every_drop(server: LocalSegment) -> None:
    failures: list[DeliveryFailure] = []
    em = _stalled(server, on_full="block", block_timeout=0.05)
    _fill(em)
    em.close(0.1)
    em = _stalled(server, on_full="drop_newest", on_failure=failures.append)
    results = [em.emit(record(i)) for i in range(2000)]
    assert results.count(False) == em.stats().refused["spool_full"] == len(failures)
    assert results.count(False) > 0
    em.close(0.1)


def test_stats_add_up_while_the_encoder_holds_records_at_the_spool_cap() -> None:
    """At the spool's size cap the encoder holds the records of its step, counted
    accepted, until there is room: they were in neither the inbox nor the spool, and
    ``queued`` missed them, so accepted != delivered + rejected + dropped + queued at a
    quiet moment (found by a review). Now ``queued`` counts them."""
    arrived, go_on = threading.Event(), threading.Event()

    def held(request: MockRequest) -> MockResponse:
        arrived.set()
        go_on.wait(10)
        return MockResponse.ok()

    em = Emitter(write_key="k", transport=MockTransport(held), max_spool_bytes=64 * 1024)
    pressure = em._backpressure
    try:
        em.emit(record(0, "default", properties={"pad": "x" * 30_000}))
        assert arrived.wait(10)  # its request is out: it is in the spool, leased
        em.emit_many([record(i, "default", properties={"pad": "x" * 1000}) for i in range(100)])
        with pressure.room:  # notified each time the held step looks for room again
            assert pressure.room.wait_for(lambda: pressure.at_cap, 10)
        stats = em.stats()
        settled = stats.delivered + sum(stats.rejected.values()) + sum(stats.dropped.values())
        assert (stats.accepted, stats.queued) == (101, 101)
        assert stats.accepted == settled + stats.queued
        assert stats.tenants["default"].queued == 101
    finally:
        go_on.set()
        em.close(1)


def test_emit_many_drop_newest_reports_each_tenants_drops() -> None:
    """emit_many with on_full="drop_newest": a dropped chunk was reported once, as one
    event of its first record's tenant; the other tenants' drops were never reported
    (found by a review). Now one failure per tenant, its detail giving the count."""
    failures: list[DeliveryFailure] = []
    em = Emitter(
        write_keys={"acme": "key-acme", "globex": "key-globex"},
        transport=MockTransport(),
        max_pending=1,
        on_full="drop_newest",
        on_failure=failures.append,
    )
    em._encoder.stopping = True  # nothing leaves the inbox: it stays at max_pending
    try:
        assert em.emit(record(0, "acme"))
        tenants = ["acme", "globex", "globex"]
        result = em.emit_many([record(i, t) for i, t in enumerate(tenants, 1)])
        assert (result.accepted, len(result.refused)) == (0, 3)
        assert sorted((f.tenant, f.reason.value, f.detail) for f in failures) == [
            ("acme", "spool_full", "spool full"),
            ("globex", "spool_full", "spool full: 2 events dropped"),
        ]
        assert em.stats().refused == {"spool_full": 3}
    finally:
        em.close(0)


# -- process life -------------------------------------------------------------------------------


def test_close_reports_what_could_not_be_delivered(server: LocalSegment) -> None:
    failures: list[DeliveryFailure] = []
    server.outage(503)
    em = emitter(server, on_failure=failures.append)
    for i in range(3):
        em.emit(record(i))
    assert not em.close(0.3)
    assert em.stats().dropped == {"unsent_at_close": 3}
    assert sum(len(f.message_ids) for f in failures) == 3


@pytest.mark.slow  # a second or more of real waiting
def test_close_reports_a_batch_whose_request_is_still_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """close() while a request hangs: its events are reported unsent_at_close and counted
    as dropped; when the late answer comes, nothing is counted twice and nothing raises."""
    failures: list[DeliveryFailure] = []
    caplog.set_level(logging.INFO, logger="selligent_segment")
    with LocalSegment(faults=FaultPlan(script=[Fault.latency(2.0)])) as server:
        em = emitter(server, on_failure=failures.append)
        em.emit_many([record(i) for i in range(5)])
        assert server.wait_for_arrivals(1)
        assert not em.close(0.1)
        assert em.stats().dropped == {"unsent_at_close": 5}
        assert sorted(m for f in failures for m in f.message_ids) == sorted(
            encode(record(i)).message_id for i in range(5)
        )
        assert server.wait_for(5)  # the held request is answered 200 after all
        for thread in threading.enumerate():
            if thread.name.startswith("selligent-segment-sender"):
                thread.join(10)
                assert not thread.is_alive()
    stats = em.stats()
    assert (stats.delivered, stats.dropped) == (0, {"unsent_at_close": 5})
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR and r.exc_info]
    assert "still out at close ended (delivered)" in caplog.text


def test_interpreter_exit_flushes(server: LocalSegment) -> None:
    script = textwrap.dedent(
        f"""
        from selligent_segment import Emitter, BatchPolicy
        em = Emitter("k", endpoint={server.url!r}, batch=BatchPolicy(linger=30.0))
        for i in range(5):
            em.emit({{"type": "opened", "email": "a@example.com", "event_id": str(i)}})
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=30)
    assert server.accepted_count == 5


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_child_works_and_never_resends_the_parents_events(server: LocalSegment) -> None:
    em = emitter(server, write_keys=None, write_key="k", batch=BatchPolicy(linger=30.0))
    for i in range(5):
        em.emit(record(i, "default"))
    pid = os.fork()
    if pid == 0:  # the child: emit one of its own, flush, report by exit status
        code = 1
        try:
            em.emit(record(100, "default"))
            code = 0 if em.flush(10) else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert em.flush(10)
    em.close()
    ids = [e["messageId"] for e in server.accepted]
    assert len(ids) == 6
    assert server.duplicates == 0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_one_emitter_failing_its_rebuild_after_fork_leaves_the_others_working(
    server: LocalSegment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The at-fork hook rebuilt each emitter in turn, and CPython ignores what such a hook
    raises: the emitters after a failing one kept the parent's state, with no threads,
    and took events in the child that never went out."""
    broken = emitter(server, write_keys=None, write_key="k")
    working = emitter(server, write_keys=None, write_key="k")

    def fail() -> None:
        raise OSError("the spool directory is gone")

    monkeypatch.setattr(broken, "_after_fork_in_child", fail)
    pid = os.fork()
    if pid == 0:  # the child: the broken one is closed, the other delivers
        code = 1
        try:
            try:
                broken.emit(record(1, "default"))
                code = 3
            except EmitterClosed:
                working.emit(record(2, "default"))
                code = 0 if working.flush(10) else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    monkeypatch.undo()
    broken.close()
    working.close()
    assert os.waitstatus_to_exitcode(status) == 0
    assert [e["messageId"] for e in server.accepted] == [encode(record(2, "default")).message_id]


def test_asyncio_code_gets_awaitable_flush_and_close(server: LocalSegment) -> None:
    async def main() -> tuple[bool, bool]:
        em = emitter(server)
        em.emit(record(1))
        flushed = await em.aflush(10)
        closed = await em.aclose(10)
        return flushed, closed

    assert asyncio.run(main()) == (True, True)
    assert server.accepted_count == 1


def test_records_left_unencoded_at_close_are_reported(server: LocalSegment) -> None:
    failures: list[DeliveryFailure] = []
    em = emitter(server, on_failure=failures.append)
    em.close(1)
    # Simulate an emit() that passed the closed check just before close() finished.
    em._intake.inbox.append((CallbackRecord.from_dict(record(1)).fields(), "acme", None))  # type: ignore[attr-defined]
    em._intake.close(em._dispatcher)
    assert em.stats().dropped == {"unsent_at_close": 1}
    assert [len(f.message_ids) for f in failures] == [1]


def test_a_resolver_that_raises_pauses_the_tenant_and_keeps_its_events(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[str] = []

    def resolver(tenant: str) -> str | None:
        calls.append(tenant)
        if len(calls) == 1:
            raise RuntimeError("db down: secret-key-material")
        return "key-acme"

    paused: list[tuple[str, str]] = []
    em, transport, clock = fake_emitter(
        write_keys=resolver, on_pause=lambda t, r: paused.append((t, r))
    )
    try:
        em.emit(record(1, "acme"))
        assert clock.run_until(lambda: em.stats().delivered == 1, waiters=SENDERS)
    finally:
        em.close(0)
    assert paused == [("acme", "no write key configured")]
    # Re-checked after PAUSED_RECHECK (30 s) exactly: the resolver answers, the event goes.
    assert [(r.at, r.write_key) for r in transport.requests] == [(PAUSED_RECHECK, "key-acme")]
    assert "RuntimeError" in caplog.text
    assert "secret-key-material" not in caplog.text


def test_an_emitter_from_a_config_has_its_settings(server: LocalSegment) -> None:
    from selligent_segment import EmitterConfig

    config = EmitterConfig(write_key="k", endpoint=server.url, threads=3)
    em = Emitter.from_config(config)
    try:
        assert em.config is config
        assert em.config.threads == 3
        assert em.emit(record(1, "default"))
        assert em.flush(10)
    finally:
        em.close()
    assert server.accepted_count == 1


@pytest.mark.parametrize(
    ("setting", "value"),
    [("transport", object()), ("clock", object()), ("naming", "segment-spec")],
)
def test_seams_and_policies_of_the_wrong_kind_are_refused_naming_the_setting(
    setting: str, value: object
) -> None:
    with pytest.raises(ConfigurationError) as info:
        Emitter("k", **{setting: value})
    assert info.value.setting == setting


@pytest.mark.parametrize("url", ["redis://h", "mysql://u@h/x", "s3://bucket/spool"])
def test_a_spool_url_with_a_scheme_not_served_is_refused_and_creates_nothing(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigurationError, match="spool is not served") as info:
        Emitter("k", spool=url)
    assert info.value.setting == "spool"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "url", ["postgresql://app:s3cret@127.0.0.1:1/events", "postgres://app:s3cret@127.0.0.1:1/x"]
)
def test_a_postgresql_spool_that_cannot_be_reached_is_a_clear_error_creating_nothing(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once taken for a file path (a directory named ``postgresql:`` appeared); now the
    PostgreSQL spool, which names the server, never the password, and writes no file."""
    from selligent_segment import SpoolError

    monkeypatch.chdir(tmp_path)
    with pytest.raises(
        SpoolError, match=r"PostgreSQL spool postgres(ql)?://app:\*\*\*@127\.0\.0\.1:1/"
    ):
        Emitter("k", spool=url)
    assert list(tmp_path.iterdir()) == []


def test_an_encoder_step_that_fails_keeps_its_records_and_delivers_them_later(
    tmp_path: Path, server: LocalSegment, caplog: pytest.LogCaptureFixture
) -> None:
    """A step of the encoder that fails (here the spool's size check raises once) puts its
    journal records back: they are delivered by the next step, counted once, and flush()
    finishes; the encoder does not spin on the failure."""
    from selligent_segment import SpoolError

    em = emitter(server, spool=tmp_path / "spool.db")
    spool = em._intake.spool
    real_has_room = spool.has_room
    calls = 0

    def has_room_once_broken(nbytes: int) -> bool:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise SpoolError("simulated: the size check failed once")
        return real_has_room(nbytes)

    spool.has_room = has_room_once_broken  # type: ignore[method-assign]
    try:
        em.emit_many([record(i) for i in range(3)])
        assert em.flush(10)
        stats = em.stats()
        assert (stats.accepted, stats.delivered, stats.queued) == (3, 3, 0)
    finally:
        em.close()
    assert server.accepted_count == 3
    assert calls < 10  # one failure, then a step or two: no hot loop
    assert "encoder error" in caplog.text


def test_emit_many_with_a_spool_file_that_cannot_be_written_applies_on_full_not_a_hang(
    tmp_path: Path, server: LocalSegment
) -> None:
    """While the encoder cannot write the spool file, emit_many stops waiting for it
    once max_pending records wait: on_full ("raise") applies; what was accepted is
    delivered once the file can be written again."""
    from selligent_segment import SpoolError, SpoolFull

    em = emitter(server, spool=tmp_path / "spool.db", max_pending=600)
    spool = em._intake.spool
    real_put_many = spool.put_many
    broken = True

    def put_many(*args: Any, **kwargs: Any) -> None:
        if broken:
            raise SpoolError("simulated: the file cannot be written")
        real_put_many(*args, **kwargs)

    spool.put_many = put_many  # type: ignore[method-assign]
    try:
        with pytest.raises(SpoolFull) as info:
            em.emit_many([record(i) for i in range(3000)])
        accepted = info.value.accepted
        assert 600 <= accepted < 3000
        broken = False
        assert em.flush(30)
        assert em.stats().delivered == accepted
    finally:
        em.close()
    assert server.accepted_count == accepted


def test_a_transport_that_raises_gets_its_batch_back_and_it_is_sent_again() -> None:
    """A transport (here a MockTransport handler) that raises instead of answering: the
    batch goes back to its queue, the error is logged, and the next turn delivers it."""
    from selligent_segment.testing import MockTransport

    calls = 0

    def handler(request: Any) -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("simulated: a transport bug")
        return 200

    transport = MockTransport(handler)
    em = Emitter(write_key="k", transport=transport, batch=BatchPolicy(linger=0.0))
    try:
        em.emit_many([record(i, "default") for i in range(3)])
        assert em.flush(10)
        assert em.stats().delivered == 3
    finally:
        em.close(0)
    assert calls == 2


@pytest.mark.parametrize("spool", ["memory", "file"])
def test_a_value_of_a_subclass_is_sent_as_its_plain_value(spool: str, tmp_path: Any) -> None:
    # A numpy-style float subclass in properties: the durable emit raised TypeError, and
    # the memory encoder dropped its whole chunk of records without a word.
    from selligent_segment.testing import MockTransport

    class Score(float):
        pass

    sent: list[Any] = []
    transport = MockTransport(lambda request: sent.extend(request.items) or 200)
    em = Emitter(
        write_key="k",
        transport=transport,
        batch=BatchPolicy(linger=0.0),
        spool="memory" if spool == "memory" else str(tmp_path / "spool.db"),
    )
    try:
        records = [record(i, "default") for i in range(3)]
        records[1] = {**records[1], "properties": {"score": Score(1.5)}}
        em.emit_many(records)
        assert em.flush(10)
        stats = em.stats()
    finally:
        em.close(0)
    assert (stats.delivered, stats.dropped) == (3, {})
    assert [m["properties"].get("score") for m in sent] == [None, 1.5, None]


def test_a_record_the_memory_encoder_cannot_write_is_reported_and_costs_no_other(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Whatever encoding one record raises besides InvalidEvent (a value no check foresaw):
    # that record is counted and reported, the others of its chunk still go. It was
    # the whole chunk (up to 512 records), silently.
    from selligent_segment.intake import _memory
    from selligent_segment.testing import MockTransport

    real = _memory.encode_fields

    def encode(fields: Any, tenant: str, naming: Any, now: Any) -> Any:
        if fields.get("event_id") == "ev-1":
            raise TypeError("Type is not JSON serializable: Score")
        return real(fields, tenant, naming, now)

    monkeypatch.setattr(_memory, "encode_fields", encode)
    failures: list[DeliveryFailure] = []
    em = Emitter(
        write_key="k",
        transport=MockTransport(),
        batch=BatchPolicy(linger=0.0),
        on_failure=failures.append,
    )
    try:
        em.emit_many([{**record(i, "default"), "event_id": f"ev-{i}"} for i in range(3)])
        assert em.flush(10)
        stats = em.stats()
    finally:
        em.close(0)
    assert (stats.delivered, stats.dropped) == (2, {"unreadable_record": 1})
    assert [(f.tenant, f.reason.value) for f in failures] == [("default", "unreadable_record")]
    assert "cannot be written as JSON (TypeError)" in failures[0].detail


@pytest.mark.parametrize("spool", ["memory", "file"])
def test_an_emit_that_close_overtakes_is_reported_or_refused_never_lost(
    spool: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # close() runs whole between emit()'s last look at _closed and its accept (here: from
    # inside the time.time() call between them). With the memory spool the record then
    # sat in an inbox nobody read again (emit said True, nothing reported); with a spool
    # file emit raised SpoolError. Now: reported unsent_at_close, or EmitterClosed.
    import types

    from selligent_segment import _emitter
    from selligent_segment.testing import MockTransport

    failures: list[DeliveryFailure] = []
    em = Emitter(
        write_key="k",
        transport=MockTransport(),
        batch=BatchPolicy(linger=0.0),
        on_failure=failures.append,
        spool="memory" if spool == "memory" else str(tmp_path / "spool.db"),
    )
    em.emit(record(0, "default"))
    assert em.flush(10)
    real_time = _emitter.time.time

    def time_with_a_close() -> float:
        patched.time = real_time  # once
        assert em.close(5)
        return real_time()

    patched = types.SimpleNamespace(**vars(_emitter.time))
    patched.time = time_with_a_close
    monkeypatch.setattr(_emitter, "time", patched)
    if spool == "memory":
        assert em.emit(record(1, "default")) is True  # accepted, then reported:
        assert [(f.reason.value, len(f.message_ids)) for f in failures] == [("unsent_at_close", 1)]
        assert em.stats().dropped == {"unsent_at_close": 1}
    else:
        with pytest.raises(EmitterClosed):
            em.emit(record(1, "default"))
        assert failures == []
    assert em.stats().delivered == 1


def test_flush_is_false_while_the_first_records_are_between_the_inbox_and_the_queue() -> None:
    """The encoder started out idle and stayed so through its first step: once it had
    taken the first burst out of the inbox, and before the records reached the queue,
    flush() saw an empty inbox, an idle encoder and an empty queue, and said True with
    nothing sent (a review caught it, under a tight thread switch interval)."""
    em, _, _ = fake_emitter()
    spool = em._intake.spool
    put_many = spool.put_many
    inside, go_on = threading.Event(), threading.Event()

    def held_put_many(messages: Any) -> Any:
        inside.set()
        assert go_on.wait(10)
        return put_many(messages)

    spool.put_many = held_put_many  # type: ignore[method-assign]
    try:
        em.emit(record(1))
        assert inside.wait(10)  # the record left the inbox; it is not queued yet
        assert em.flush(0) is False
        go_on.set()
        assert em.flush(10) is True
        assert em.stats().delivered == 1
    finally:
        go_on.set()
        em.close(0)


def test_a_chunk_larger_than_the_spool_cap_still_goes_into_an_empty_spool() -> None:
    """max_spool_bytes accepts 64 KiB; the encoder moves up to 512 records at a time and
    waited for room for all of them, which an empty spool of 64 KiB never had: nothing
    was sent, ever, while emit() went on returning True."""
    transport = MockTransport()
    em = Emitter(write_key="k", transport=transport, max_spool_bytes=64 * 1024)
    try:
        result = em.emit_many([record(i, email_subject="s" * 300, tenant=None) for i in range(512)])
        assert result.accepted == 512
        assert em.flush(10) is True
        assert em.stats().delivered == 512
    finally:
        em.close(0)


def _close_while_the_encoder_is_held(em: Emitter, go_on: threading.Event) -> None:
    """close(0) while the encoder is held in a step (it says False), then let the step go
    on and wait until the encoder is done with it."""
    try:
        assert em.close(0) is False
    finally:
        go_on.set()
    encoder = em._encoder._thread
    assert encoder is not None
    encoder.join(10)


def test_close_reports_what_an_encoder_step_still_held_when_it_gave_up_waiting() -> None:
    """close() waits a second for the encoder. An encoder step still running then (here in
    an on_failure callback for a refused event of the same chunk) held records out of
    the inbox and not queued: close() found nothing left and said True, and the step then
    queued them where nobody would send or report them."""
    inside, go_on = threading.Event(), threading.Event()
    failures: list[DeliveryFailure] = []
    lock_free: list[bool] = []

    def on_failure(failure: DeliveryFailure) -> None:
        failures.append(failure)
        if failure.reason.value == "too_large":
            inside.set()
            go_on.wait(10)
        else:  # never called under the intake's report lock: it may call close() itself
            lock = em._intake._report_lock  # type: ignore[attr-defined]
            lock_free.append(lock.acquire(blocking=False))
            if lock_free[-1]:
                lock.release()

    transport = MockTransport()
    em = Emitter(write_key="k", transport=transport, on_failure=on_failure)
    huge = record(99, tenant="default", properties={f"p{i}": "y" * 1000 for i in range(40)})
    assert em.emit_many([*(record(i, tenant="default") for i in range(10)), huge]).accepted == 11
    assert inside.wait(10)  # the step holds the ten, in the callback
    _close_while_the_encoder_is_held(em, go_on)
    unsent = [i for f in failures if f.reason.value == "unsent_at_close" for i in f.message_ids]
    assert len(unsent) == 10
    assert transport.requests == []
    assert lock_free
    assert all(lock_free)


def test_a_durable_close_keeps_the_journal_while_an_encoder_step_holds_records(
    tmp_path: Path,
) -> None:
    """The same with a spool file, the step held while it writes the records into the
    file: close() found the inbox empty and deleted the journal, and the records were in
    neither the journal nor the file."""
    spool = tmp_path / "spool.db"
    em = Emitter(write_key="k", transport=MockTransport(), spool=spool)
    put_many = em._intake.spool.put_many
    inside, go_on = threading.Event(), threading.Event()

    def held_put_many(*args: Any, **kwargs: Any) -> Any:
        inside.set()
        go_on.wait(10)
        return put_many(*args, **kwargs)

    em._intake.spool.put_many = held_put_many  # type: ignore[method-assign]
    assert em.emit_many([record(i, tenant="default") for i in range(10)]).accepted == 10
    assert inside.wait(10)
    _close_while_the_encoder_is_held(em, go_on)
    again = MockTransport()
    with Emitter(write_key="k", transport=again, spool=spool) as em2:
        assert em2.flush(10)
    assert sum(len(r.items) for r in again.requests) == 10


# -- close() against callbacks, a racing first emit, fork and blocked emits ---------------


def _closing_in_a_thread(em: Emitter, timeout: float) -> tuple[threading.Thread, list[bool]]:
    """``em.close(timeout)`` started in a daemon thread; its result lands in the list."""
    result: list[bool] = []
    thread = threading.Thread(target=lambda: result.append(em.close(timeout)), daemon=True)
    thread.start()
    return thread, result


def test_an_on_failure_that_calls_close_during_close_does_not_hang(server: LocalSegment) -> None:
    """close() reports unsent_at_close while it holds its lock; an on_failure that closes
    the emitter (an application's "stop on failure" handler) waited for that lock, held by
    its own thread: close() never returned (found by a review). Now the inner close()
    returns False at once and the outer one finishes."""
    inner: list[bool] = []

    def on_failure(failure: DeliveryFailure) -> None:
        inner.append(em.close(1))

    server.outage(503)
    em = emitter(server, on_failure=on_failure)
    em.emit(record(1))
    thread, result = _closing_in_a_thread(em, 0.2)
    thread.join(10)
    assert not thread.is_alive()
    assert result == [False]
    assert inner == [False]
    assert em.close(0) is False  # the first close's result, again
    assert em.stats().dropped == {"unsent_at_close": 1}


def test_a_close_from_a_callback_on_the_encoder_thread_does_not_wait_for_itself() -> None:
    """An on_failure run by the encoder (an event too large) that called close(): the
    flush waited for the encoder, which was the caller, for the whole timeout, and then
    reported the valid records of the same burst unsent_at_close (found by a review).
    Now close() from an emitter's own thread closes on a new thread and returns at once;
    the flush delivers them."""
    transport = MockTransport()
    failures: list[DeliveryFailure] = []
    inner: list[bool] = []

    def on_failure(failure: DeliveryFailure) -> None:
        failures.append(failure)
        if failure.reason.value == "too_large":
            inner.append(em.close(3))

    em = Emitter(write_key="k", transport=transport, on_failure=on_failure)
    huge = record(99, tenant="default", properties={f"p{i}": "y" * 1000 for i in range(40)})
    em.emit_many([huge, *(record(i, tenant="default") for i in range(10))])
    assert em.close(10) is True  # the close the callback began: its flush delivered them
    assert inner == [False]
    assert [f.reason.value for f in failures] == ["too_large"]
    assert em.stats().delivered == 10
    assert sum(len(r.items) for r in transport.requests) == 10


def test_a_first_emit_racing_close_leaves_no_thread_running_and_is_sent() -> None:
    """The first emit() starts the threads; a close() between its start of the encoder and
    of the senders found nothing started, reported the event unsent_at_close without
    trying to send it, could raise "cannot join thread before it is started", and the
    senders it stopped were started after, running for ever (found by a review). Now
    close() and the start are ordered, and a close that finds work starts the threads and
    flushes it."""
    transport = MockTransport()
    failures: list[DeliveryFailure] = []
    em = Emitter(write_key="k", transport=transport, on_failure=failures.append)
    dispatcher_start = em._dispatcher.start
    encoder_started, close_begun = threading.Event(), threading.Event()
    closer: list[threading.Thread] = []

    def start_after_a_close_began() -> None:
        encoder_started.set()
        closer.extend(_closing_in_a_thread(em, 10)[:1])
        # Time for a close() that does not wait for the start to run whole (it then
        # ends here at once); one that waits cannot begin, and this times out.
        close_begun.wait(0.5)
        dispatcher_start()

    em._dispatcher.start = start_after_a_close_began  # type: ignore[method-assign]
    real_close = em._intake.close

    def noting_close(*args: Any, **kwargs: Any) -> bool:
        close_begun.set()
        return real_close(*args, **kwargs)

    em._intake.close = noting_close  # type: ignore[method-assign]
    assert em.emit(record(1, "default")) is True
    assert encoder_started.is_set()
    closer[0].join(10)
    assert not closer[0].is_alive()
    assert failures == []
    assert em.stats().delivered == 1
    assert em._dispatcher._threads == []
    assert not [t for t in threading.enumerate() if t.name.startswith("selligent-segment-send")]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_child_forked_while_the_parent_closes_can_close(server: LocalSegment) -> None:
    """A fork while another thread of the parent was inside close(): the child's copy of
    the close lock was held, and the child's own close() waited for ever (found by a
    review). Now it returns False at once there (the parent reports its events)."""
    server.outage(503)
    inside, go_on = threading.Event(), threading.Event()

    def on_failure(failure: DeliveryFailure) -> None:
        inside.set()
        go_on.wait(10)

    em = emitter(server, on_failure=on_failure)
    em.emit(record(1))
    thread, result = _closing_in_a_thread(em, 0.1)
    assert inside.wait(10)  # the parent's close() is reporting, its lock held
    try:
        pid = os.fork()
        if pid == 0:
            os._exit(0 if em.close(1) is False else 1)
    finally:
        go_on.set()
    assert wait_child(pid, 10) == 0
    thread.join(10)
    assert result == [False]


def test_close_wakes_emits_blocked_for_room(server: LocalSegment) -> None:
    """on_full="block": an emit() waiting for room was not woken by close() and sat out
    its whole block_timeout (found by a review). Now close() wakes it and it raises
    EmitterClosed."""
    em = emitter(server, max_pending=1, on_full="block", block_timeout=60)
    em._encoder.stopping = True  # nothing leaves the inbox: the next emit waits for room
    em.emit(record(0))
    raised: list[BaseException] = []
    waiting = threading.Event()
    pending = em._intake.pending
    looks: list[int] = []

    def noting_pending() -> int:
        if threading.current_thread() is thread:
            looks.append(1)
            if len(looks) == 2:  # the wait's own look, under its lock: it waits next
                waiting.set()
        return pending()

    em._intake.pending = noting_pending  # type: ignore[method-assign]

    def blocked() -> None:
        try:
            em.emit(record(1))
        except EmitterClosed as exc:
            raised.append(exc)

    thread = threading.Thread(target=blocked, daemon=True)
    thread.start()
    assert waiting.wait(10)
    with em._backpressure.room:  # taken once the emit released it: it is in its wait
        pass
    em.close(0.1)
    thread.join(10)
    assert not thread.is_alive()
    assert len(raised) == 1


@pytest.mark.parametrize("spool", ["memory", "file"])
def test_emit_many_cut_off_by_close_says_what_was_accepted_and_where_to_resume(
    spool: str, tmp_path: Path
) -> None:
    """A close() during emit_many (a slow source, another thread's shutdown) raised a bare
    EmitterClosed saying no event was accepted, though the chunks before it were (and
    were delivered), with no ``accepted`` or ``next_index`` as SpoolFull has (found by a
    review). Now it carries SpoolFull's fields and says how many were accepted."""
    transport = MockTransport()
    em = Emitter(
        write_key="k",
        transport=transport,
        spool="memory" if spool == "memory" else str(tmp_path / "spool.db"),
    )

    def records() -> Any:
        for i in range(1000):
            if i == 600:
                assert em.close(10)  # the first chunk is delivered
            yield {"type": "delivered", "email": "nope"} if i == 3 else record(i, "default")

    with pytest.raises(EmitterClosed) as raised:
        em.emit_many(records())
    exc = raised.value
    assert (exc.accepted, exc.next_index) == (512, 513)
    assert [i for i, _ in exc.refused] == [3]
    assert "512 records were accepted" in str(exc)
    assert sum(len(r.items) for r in transport.requests) == 512


def test_a_long_emit_many_with_a_spool_file_holds_back_no_other_call_nor_a_flush(
    tmp_path: Path,
) -> None:
    """With a spool file the encoder leaves the CPU to an emit_many under way; over a slow
    source it moved nothing into the file for the whole call: another thread's emit (a
    live hook) was sent only after it, 5.8 s later, and a flush waited in vain (found by
    a review). Now an emit of another call or a flush is moved at once, and a bulk call
    that hands nothing over for a while is not waited for."""
    transport = MockTransport()
    em = Emitter(write_key="k", transport=transport, spool=tmp_path / "spool.db")
    inside, go_on = threading.Event(), threading.Event()

    def slow_source() -> Any:
        for i in range(600):  # a chunk of 512 handed over, then a source that stalls
            if i == 550:
                inside.set()
                go_on.wait(30)
            yield record(i, "default")

    bulk = threading.Thread(target=lambda: em.emit_many(slow_source()), daemon=True)
    bulk.start()
    try:
        assert inside.wait(10)
        em.emit(record(1000, "default"))  # a live hook, from another thread
        assert transport.wait_for_requests(1, 10)
        hook = encode(record(1000, "default")).message_id
        assert em.flush(10)  # the bulk call's first chunk too
        sent = [m for r in transport.requests for m in r.message_ids]
        assert hook in sent
        assert len(sent) == 513
    finally:
        go_on.set()
        bulk.join(10)
    assert em.close(10)
    assert sum(len(r.items) for r in transport.requests) == 601
