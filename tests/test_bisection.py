"""The bisection of a refused batch on plain values: which part is sent next, and the one
log line of its outcome (no sender, no spool, no thread)."""

from __future__ import annotations

import logging

import pytest
from _delivery import record

from selligent_segment import encode
from selligent_segment._mapping import EncodedMessage
from selligent_segment.delivery._bisection import Bisection
from selligent_segment.spool._protocol import Lease


def batch(n: int) -> tuple[Lease, tuple[EncodedMessage, ...]]:
    messages = tuple(encode(record(i), tenant="acme") for i in range(n))
    return Lease("acme", messages), messages


def settle_parts(bisection: Bisection, *, delivered: bool) -> None:
    """Send every part still queued, each delivered (or each refused), as turns would."""
    while bisection.parts:
        lease, part = bisection.parts.popleft()
        if delivered:
            bisection.count_delivered(lease, len(part))
        else:
            bisection.count_rejected(lease, len(part))
        bisection.end("acme", lease)


def logged(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records]


@pytest.mark.parametrize("status", [400, 413, 422])
def test_a_batch_refused_as_a_whole_is_split_first_half_first(status: int) -> None:
    lease, messages = batch(5)
    bisection = Bisection()
    assert not bisection.active
    assert bisection.split(lease, messages, status, "bad batch")
    assert bisection.active
    assert [part for _, part in bisection.parts] == [messages[:2], messages[2:]]
    assert all(part_lease is lease for part_lease, _ in bisection.parts)


@pytest.mark.parametrize(("n", "status"), [(1, 400), (5, 404), (5, 500), (5, None), (5, 301)])
def test_one_message_or_another_refusal_is_not_split(n: int, status: int | None) -> None:
    lease, messages = batch(n)
    bisection = Bisection()
    assert not bisection.split(lease, messages, status, "no")
    assert not bisection.parts
    assert not bisection.active


def test_a_refused_part_is_split_again_ahead_of_the_parts_after_it() -> None:
    lease, messages = batch(8)
    bisection = Bisection()
    bisection.split(lease, messages, 400, None)
    _, first = bisection.parts.popleft()
    assert bisection.split(lease, first, 400, None)
    assert [part for _, part in bisection.parts] == [messages[:2], messages[2:4], messages[4:]]


def test_the_outcome_is_logged_once_when_the_last_part_is_settled(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, "selligent_segment")
    lease, messages = batch(4)
    bisection = Bisection()
    bisection.split(lease, messages, 400, None)
    _, first = bisection.parts.popleft()
    bisection.count_delivered(lease, len(first))
    bisection.end("acme", lease)
    assert caplog.records == []  # a part is still to be sent
    _, second = bisection.parts.popleft()
    bisection.split(lease, second, 400, None)  # refused again: two parts of one
    settle_parts(bisection, delivered=False)
    assert logged(caplog) == [
        (
            logging.ERROR,
            "tenant 'acme': a batch of 4 events was refused (HTTP 400); "
            "bisected in 5 requests: 2 delivered, 2 rejected",
        )
    ]
    assert not bisection.active
    bisection.end("acme", lease)
    assert len(caplog.records) == 1


def test_another_batch_of_the_tenant_does_not_end_the_bisection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A batch that was out beside the bisected one, settled after the last part left but
    before it is answered, leaves the tally alone: one line, with every part counted."""
    lease, messages = batch(2)
    other, _ = batch(3)
    bisection = Bisection()
    bisection.split(lease, messages, 400, None)
    first, second = bisection.parts.popleft(), bisection.parts.popleft()
    bisection.count_delivered(first[0], len(first[1]))
    bisection.end("acme", other)  # the other batch delivered: the last part still out
    assert bisection.active
    assert caplog.records == []
    bisection.count_rejected(second[0], len(second[1]))
    bisection.end("acme", lease)
    assert logged(caplog) == [
        (
            logging.ERROR,
            "tenant 'acme': a batch of 2 events was refused (HTTP 400); "
            "bisected in 3 requests: 1 delivered, 1 rejected",
        )
    ]


def test_a_bisection_whose_last_part_fails_is_over(caplog: pytest.LogCaptureFixture) -> None:
    """The last part fails (a 5xx, a dropped connection) and goes back to the queue: the
    bisection is over, its outcome so far logged, and the next refusal starts its own."""
    lease, messages = batch(2)
    bisection = Bisection()
    bisection.split(lease, messages, 400, None)
    first = bisection.parts.popleft()
    bisection.count_delivered(first[0], len(first[1]))
    bisection.end("acme", first[0])  # the last part still to go
    last = bisection.parts.popleft()
    assert bisection.active
    assert bisection.gather("acme", *last) == last[1]  # it failed: back to the queue
    assert not bisection.active
    assert logged(caplog) == [
        (
            logging.WARNING,
            "tenant 'acme': a batch of 2 events was refused (HTTP 400); "
            "bisected in 3 requests: 1 delivered, 0 rejected",
        )
    ]
    again, again_messages = batch(2)
    assert bisection.split(again, again_messages, 400, None)
    assert bisection.owns(again)


def test_a_bisection_that_delivered_everything_is_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    lease, messages = batch(2)
    bisection = Bisection()
    bisection.split(lease, messages, 413, "too big")
    settle_parts(bisection, delivered=True)
    assert logged(caplog) == [
        (
            logging.WARNING,
            "tenant 'acme': a batch of 2 events was refused (too big); "
            "bisected in 3 requests: 2 delivered, 0 rejected",
        )
    ]


def test_gather_abandons_the_bisection_keeping_queue_order(
    caplog: pytest.LogCaptureFixture,
) -> None:
    lease, messages = batch(6)
    bisection = Bisection()
    bisection.split(lease, messages, 400, None)
    _, first = bisection.parts.popleft()
    assert bisection.gather("acme", lease, first) == messages
    assert not bisection.parts
    assert not bisection.active
    assert len(caplog.records) == 1  # its outcome so far: 0 delivered, 0 rejected
    assert bisection.gather("acme", lease, first) == first  # nothing queued: as given


def test_counts_outside_a_bisection_are_ignored() -> None:
    bisection = Bisection()
    lease, _ = batch(3)
    bisection.count_delivered(lease, 3)
    bisection.count_rejected(lease, 2)
    assert bisection == Bisection()


def test_another_lease_failing_during_a_bisection_comes_back_alone() -> None:
    """A request of the tenant that was already out when the refusal came (its own lease)
    fails during the bisection: its messages are released alone, under their own lease;
    the bisected batch's parts stay queued and its tally does not count the other."""
    lease, messages = batch(4)
    other, others = batch(2)
    bisection = Bisection()
    bisection.split(lease, messages, 400, None)
    assert bisection.gather("acme", other, others) == others
    assert [part for _, part in bisection.parts] == [messages[:2], messages[2:]]
    assert bisection.active
    bisection.count_delivered(other, 2)
    assert bisection.tally is not None
    assert bisection.tally.delivered == 0
