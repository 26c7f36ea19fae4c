"""Settling on plain values: a MemorySpool and Counters, no sender and no thread. Each
result lands once in the spool, the counters and on_failure; after abandon, none does."""

from __future__ import annotations

import logging

import pytest
from _delivery import record

from selligent_segment import DeliveryFailure, encode
from selligent_segment._errors import SpoolError
from selligent_segment._mapping import EncodedMessage
from selligent_segment.delivery._settle import Settler
from selligent_segment.delivery._stats import Counters
from selligent_segment.spool._memory import MemorySpool
from selligent_segment.spool._protocol import Lease


class Setup:
    def __init__(self, n: int = 4) -> None:
        self.spool = MemorySpool(1 << 20)
        self.messages = [encode(record(i), tenant="acme") for i in range(n)]
        self.spool.put_many(self.messages)
        self.counters = Counters()
        self.failures: list[DeliveryFailure] = []
        self.settler = Settler(self.spool, self.counters, self.failures.append)

    def lease(self) -> tuple[Lease, tuple[EncodedMessage, ...]]:
        lease = self.spool.lease("acme", 100, 1 << 20)
        assert lease is not None
        return lease, lease.messages

    def stats(self) -> tuple[int, int, dict[str, int], dict[str, int]]:
        s = self.counters.snapshot({}, {})
        return s.delivered, s.retried, dict(s.rejected), dict(s.dropped)


def test_delivered_messages_leave_the_spool_and_are_counted() -> None:
    setup = Setup()
    lease, messages = setup.lease()
    setup.settler.delivered(lease, messages)
    assert setup.spool.empty()
    assert setup.stats() == (4, 0, {}, {})
    assert setup.failures == []


def test_released_messages_go_back_to_the_head_of_the_queue_in_order() -> None:
    setup = Setup()
    lease, messages = setup.lease()
    assert setup.settler.release(lease, messages[2:])
    assert setup.stats() == (0, 0, {}, {})  # not a retry: not counted
    assert setup.settler.release(lease, messages[:2], retried=True)
    assert setup.stats() == (0, 2, {}, {})
    again = setup.spool.lease("acme", 100, 1 << 20)
    assert again is not None
    assert again.messages == tuple(setup.messages)


def test_failed_messages_are_counted_by_reason_and_reported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    setup = Setup()
    lease, messages = setup.lease()
    setup.settler.failed(lease, messages[:1], "rejected", "HTTP 400", 400)
    setup.settler.failed(lease, messages[1:], "retries_exhausted", "gave up", None, quiet=True)
    assert setup.spool.empty()
    assert setup.stats() == (0, 0, {"rejected": 1}, {"retries_exhausted": 3})
    assert [(f.reason, f.status, len(f.message_ids)) for f in setup.failures] == [
        ("rejected", 400, 1),
        ("retries_exhausted", None, 3),
    ]
    assert setup.failures[0].message_ids == (messages[0].message_id,)
    assert [r.levelno for r in caplog.records] == [logging.ERROR]  # the quiet one: DEBUG


def test_a_callback_that_raises_is_logged_and_settling_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    setup = Setup()

    def broken(failure: DeliveryFailure) -> None:
        raise RuntimeError("user bug")

    settler = Settler(setup.spool, setup.counters, broken)
    lease, messages = setup.lease()
    settler.failed(lease, messages, "rejected", "HTTP 422", 422)
    assert setup.spool.empty()
    assert setup.stats() == (0, 0, {"rejected": 4}, {})
    assert "callback" in caplog.records[-1].getMessage()


def test_after_abandon_nothing_settles_and_release_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "selligent_segment")
    setup = Setup()
    lease, messages = setup.lease()
    seen: list[int] = []
    setup.settler.abandon(lambda: seen.append(setup.spool.stats().leased))
    assert seen == [4]
    setup.settler.delivered(lease, messages[:1])
    assert not setup.settler.release(lease, messages[1:2], retried=True)
    setup.settler.failed(lease, messages[2:], "rejected", "HTTP 400", 400)
    assert setup.spool.stats().leased == 4  # all still leased: nothing was settled
    assert setup.stats() == (0, 0, {}, {})
    assert setup.failures == []
    assert [r.levelno for r in caplog.records] == [logging.INFO] * 3
    assert "still out at close ended (delivered)" in caplog.records[0].getMessage()


def test_an_event_retried_again_and_again_counts_once_in_retried_events() -> None:
    setup = Setup()
    for _ in range(3):  # the same batch fails three times
        lease, messages = setup.lease()
        assert setup.settler.release(lease, messages, retried=True)
    lease, messages = setup.lease()
    setup.settler.delivered(lease, messages)
    snapshot = setup.counters.snapshot({}, {})
    assert (snapshot.retried, snapshot.retried_events, snapshot.delivered) == (12, 4, 4)
    assert setup.counters.retried_events["acme"] == 4
    assert setup.settler._retrying == {}  # forgotten once settled


def test_a_batch_s_retry_count_is_its_own_messages_retries() -> None:
    setup = Setup()
    assert setup.settler.retry_count(setup.messages) == 0  # never retried
    for times in (1, 2):
        lease, messages = setup.lease()
        assert setup.settler.retry_count(messages) == times - 1
        assert setup.settler.release(lease, messages[:2], retried=True)  # 0 and 1 failed
        assert setup.settler.release(lease, messages[2:])  # held back: not a retry
        assert setup.settler.retry_count(messages[:2]) == times
        assert setup.settler.retry_count(messages[2:]) == 0
    lease, messages = setup.lease()
    # A batch is as retried as its most retried message, whatever came with it.
    assert setup.settler.retry_count(messages) == 2
    assert setup.settler.retry_count(messages[1:]) == 2
    setup.settler.delivered(lease, messages[:1])
    assert setup.settler.retry_count(messages) == 2  # message 1's own retries still count
    setup.settler.failed(lease, messages[1:], "rejected", "HTTP 400", 400)
    assert setup.settler.retry_count(messages) == 0  # all settled: forgotten


def test_set_aside_messages_count_a_retry_each_time() -> None:
    setup = Setup()
    lease, messages = setup.lease()
    for times in (1, 2, 3):
        assert setup.settler.set_aside(lease, messages)
        assert setup.settler.retry_count(messages) == times
    setup.settler.delivered(lease, messages)
    assert setup.settler.retry_count(messages) == 0


class _NoteFails(MemorySpool):
    """A spool whose last-error note fails (as a spool file's may: a damaged page)."""

    def note_error(self, tenant: str, text: str, at: float, status: int | None) -> None:
        raise SpoolError("spool.db: the spool file cannot be used (constraint failed)")


def test_a_failed_error_note_never_skips_the_failure_accounting(
    caplog: pytest.LogCaptureFixture,
) -> None:
    setup = Setup()
    spool = _NoteFails(1 << 20)
    spool.put_many(setup.messages)
    settler = Settler(spool, setup.counters, setup.failures.append)
    lease = spool.lease("acme", 100, 1 << 20)
    assert lease is not None
    settler.failed(lease, lease.messages[:2], "rejected", "HTTP 400", 400)
    settler.failed(lease, lease.messages[2:], "rejected", "HTTP 400", 400)
    settler.note_error("acme", "HTTP 503", 503)  # a retry's note: no raise either
    assert spool.empty()
    assert setup.stats() == (0, 0, {"rejected": 4}, {})
    assert [(f.reason, len(f.message_ids)) for f in setup.failures] == [("rejected", 2)] * 2
    last = setup.counters.snapshot({}, {}).tenants["acme"].last_error
    assert last is not None
    assert (last.text, last.status) == ("HTTP 503", 503)
    notes = [r for r in caplog.records if "last delivery error" in r.getMessage()]
    assert len(notes) == 1  # the same failure is not logged again at once
    assert notes[0].levelno == logging.ERROR
    assert "constraint failed" in notes[0].getMessage()
