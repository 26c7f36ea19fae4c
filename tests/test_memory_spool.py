"""The in-memory spool (spool/_memory.py): a tenant's queue stays in the order its messages
were put, whatever order its leases come back in (released, acknowledged, in parts), and
``take_all`` gives what is left in that order."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from selligent_segment._mapping import EncodedMessage, _new_message
from selligent_segment._record import EventKind
from selligent_segment.spool._memory import MemorySpool
from selligent_segment.spool._protocol import Lease

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def message(i: int, tenant: str = "acme") -> EncodedMessage:
    return _new_message(tenant, str(i), EventKind.DELIVERED, b'{"n":%d}' % i)


def order(messages: object) -> list[int]:
    return [int(m.message_id) for m in messages]  # type: ignore[attr-defined]


def queued(spool: MemorySpool, tenant: str = "acme") -> list[int]:
    return order(spool._queues.get(tenant, ()))


def filled(n: int) -> MemorySpool:
    """A spool holding acme's messages 0 to ``n - 1``, put in that order."""
    spool = MemorySpool(1 << 20)
    spool.put_many([message(i) for i in range(n)])
    return spool


def lease(spool: MemorySpool, n: int) -> Lease:
    leased = spool.lease("acme", n, 1 << 20)
    assert leased is not None
    return leased


def test_leases_released_in_reverse_order_go_back_in_queue_order() -> None:
    spool = filled(40)
    first, second, third = lease(spool, 10), lease(spool, 10), lease(spool, 10)
    spool.release(third, third.messages)
    spool.release(first, first.messages)
    spool.release(second, second.messages)  # two requests failing together, the later first
    assert queued(spool) == list(range(40))


def test_a_lease_of_released_messages_takes_one_batch_and_goes_back_to_its_place() -> None:
    spool = filled(30)
    first, second = lease(spool, 10), lease(spool, 10)
    spool.release(first, first.messages)
    again = lease(spool, 25)  # only batch 0-9: not with what follows it
    assert order(again.messages) == list(range(10))
    spool.release(second, second.messages)
    assert queued(spool) == list(range(10, 30))
    spool.release(again, again.messages)
    assert queued(spool) == list(range(30))


def test_a_released_batch_taken_in_parts_keeps_its_parts_in_order() -> None:
    spool = filled(20)
    first, second = lease(spool, 10), lease(spool, 10)
    spool.release(second, second.messages)
    spool.release(first, first.messages)
    head = spool.lease("acme", 10, len(message(0).body) * 4 + 4)  # four fit the bytes
    assert head is not None
    assert order(head.messages) == [0, 1, 2, 3]
    spool.release(head, head.messages)
    assert queued(spool) == list(range(20))


def test_take_all_gives_leased_and_released_messages_in_queue_order() -> None:
    spool = filled(30)
    lease(spool, 10)  # batch 0-9, still out
    second = lease(spool, 10)
    spool.release(second, second.messages)
    assert order(spool.take_all()["acme"]) == list(range(30))


@pytest.mark.slow  # a second or more: the second step of .ci/run
@SETTINGS
@given(st.data())
def test_the_queue_stays_in_put_order_whatever_comes_back_when(data: st.DataObject) -> None:
    """Random puts, leases (some cut short by bytes), and settles of random live leases:
    what is left of one is acknowledged, released, or part acknowledged and the rest cut in
    two pieces, each released or kept out for later, released in either order (as a partial
    answer or a bisection does). After every step each tenant's queue is its unsettled
    messages that are not out, in the order they were put; ``take_all`` at the end gives
    every unsettled one, out or not, in that order."""
    spool = MemorySpool(1 << 24)
    tenants = ("acme", "globex")
    put = {tenant: 0 for tenant in tenants}
    live: list[tuple[Lease, tuple[EncodedMessage, ...]]] = []  # a lease, what is still out
    settled: set[tuple[str, int]] = set()
    for _ in range(data.draw(st.integers(1, 40))):
        tenant = data.draw(st.sampled_from(tenants))
        step = data.draw(st.sampled_from(["put", "lease", "settle"]))
        if step == "put":
            n = data.draw(st.integers(1, 8))
            spool.put_many([message(put[tenant] + i, tenant) for i in range(n)])
            put[tenant] += n
        elif step == "lease":
            n = data.draw(st.integers(1, 8))
            size = data.draw(st.sampled_from([1 << 20, 30]))
            leased = spool.lease(tenant, n, size)
            if leased is not None:
                live.append((leased, leased.messages))
        elif live:
            held, out = live.pop(data.draw(st.integers(0, len(live) - 1)))
            how = data.draw(st.sampled_from(["ack", "release", "part"]))
            if how == "ack":
                spool.ack(held, out)
                settled.update((held.tenant, int(m.message_id)) for m in out)
            elif how == "release":
                spool.release(held, out)
            else:
                done = data.draw(st.sets(st.sampled_from(out)))
                acked = tuple(m for m in out if m in done)
                rest = tuple(m for m in out if m not in done)
                if acked:
                    spool.ack(held, acked)
                    settled.update((held.tenant, int(m.message_id)) for m in acked)
                cut = data.draw(st.integers(0, len(rest)))
                pieces = [piece for piece in (rest[:cut], rest[cut:]) if piece]
                if data.draw(st.booleans()):
                    pieces.reverse()  # the later piece back first
                kept = pieces.pop() if pieces and data.draw(st.booleans()) else ()
                for piece in pieces:
                    spool.release(held, piece)
                if kept:
                    live.append((held, kept))
        for name in tenants:
            out_now = {
                int(m.message_id) for lease, out in live if lease.tenant == name for m in out
            }
            expected = [
                i for i in range(put[name]) if (name, i) not in settled and i not in out_now
            ]
            assert queued(spool, name) == expected
    remaining = spool.take_all()
    for name in tenants:
        assert order(remaining.get(name, [])) == [
            i for i in range(put[name]) if (name, i) not in settled
        ]
