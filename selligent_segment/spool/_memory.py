"""The in-memory spool: per-tenant queues in this process, lost when it dies.

Guarantee: it never holds more than ``max_bytes`` of message bodies (leased ones count
until settled), but for the one chunk the encoder puts into it while it is empty (see
``wait_for_spool_room``), and per-tenant FIFO order is kept across releases, in whatever order the
leases come back.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence

from selligent_segment._errors import ConfigurationError
from selligent_segment._mapping import BODY_OF, EncodedMessage
from selligent_segment.spool._protocol import Lease, SpoolStats

__all__ = ["MemorySpool"]


class MemorySpool:
    """A :class:`~selligent_segment.spool._protocol.Spool` in memory, capped at ``max_bytes``.

    Guarantee: never holds more than ``max_bytes`` of message bodies (leased ones count
    until settled), but for one chunk put while it is empty; per-tenant FIFO order is
    kept across releases: a released batch goes back to the place its messages had, ahead
    of what was queued after them, even when a lease taken after it came back first (two
    requests of a tenant failing together).
    """

    def __init__(self, max_bytes: int) -> None:
        if not isinstance(max_bytes, int) or max_bytes < 64 * 1024:
            raise ConfigurationError("max_spool_bytes", "must be an int of at least 65536")
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._queues: dict[str, deque[EncodedMessage]] = {}
        self._nbytes = 0
        self._count = 0
        self._leased: dict[int, Lease] = {}
        # Where released messages go back. A batch's place in its tenant's order is the id
        # of the lease that first took its messages (leases take from the head, so their
        # ids follow the queue's order) and the offset of its first message in that batch:
        # kept here when a lease took messages released before (else it is (its own id,
        # 0)). Released messages wait at the head of the queue, as runs of [id, offset,
        # count] in queue order; a lease takes from one run only, so that its messages
        # have one place.
        self._places: dict[int, tuple[int, int]] = {}
        self._originals: dict[int, tuple[EncodedMessage, ...]] = {}  # leases settled in part
        self._returned: dict[str, list[list[int]]] = {}

    def has_room(self, nbytes: int) -> bool:
        return self._nbytes + nbytes <= self.max_bytes

    def put_many(self, messages: Sequence[EncodedMessage]) -> None:
        with self._lock:
            for message in messages:
                queue = self._queues.get(message.tenant)
                if queue is None:
                    queue = self._queues[message.tenant] = deque()
                queue.append(message)
                self._nbytes += len(message.body)
            self._count += len(messages)

    def lease(self, tenant: str, max_messages: int, max_bytes: int) -> Lease | None:
        with self._lock:
            queue = self._queues.get(tenant)
            if not queue:
                return None
            # Messages released before are taken a run at a time (one batch's place), never
            # with what follows them: a lease then has one place, and goes back to it.
            runs = self._returned.get(tenant)
            if runs:
                max_messages = min(max_messages, runs[0][2])
            taken: list[EncodedMessage] = []
            size = 0
            while queue and len(taken) < max_messages:
                cost = len(queue[0].body) + 1
                if taken and size + cost > max_bytes:
                    break
                taken.append(queue.popleft())
                size += cost
            if not queue:
                del self._queues[tenant]
            lease = Lease(tenant, tuple(taken))
            self._leased[lease.id] = lease
            if runs:  # it took messages released before: their place is its place
                run = runs[0]
                self._places[lease.id] = (run[0], run[1])
                run[1] += len(taken)  # what is left of the run comes after them
                run[2] -= len(taken)
                if not run[2]:
                    del runs[0]
                    if not runs:
                        del self._returned[tenant]
            return lease

    def _settle(self, lease: Lease, messages: Sequence[EncodedMessage]) -> None:
        # A lease is settled in parts (bisection); it is done when every message is.
        held = self._leased.get(lease.id)
        if held is None:
            raise ValueError(f"lease {lease.id} is not live")
        if messages is held.messages:
            del self._leased[lease.id]  # the common case: the whole lease at once
            self._places.pop(lease.id, None)
            if self._originals:
                self._originals.pop(lease.id, None)
            return
        done = {id(m) for m in messages}
        left = tuple(m for m in held.messages if id(m) not in done)
        if len(left) != len(held.messages) - len(messages):
            raise ValueError(f"lease {lease.id}: message settled twice or not leased")
        if left:
            self._leased[lease.id] = Lease(held.tenant, left, id=held.id)
            self._originals.setdefault(lease.id, held.messages)  # for take_all's order
        else:
            del self._leased[lease.id]
            self._places.pop(lease.id, None)
            self._originals.pop(lease.id, None)

    def _forget(self, lease: Lease, messages: Sequence[EncodedMessage]) -> None:
        with self._lock:
            self._settle(lease, messages)
            self._nbytes -= sum(map(len, map(BODY_OF, messages)))
            self._count -= len(messages)

    def ack(self, lease: Lease, messages: Sequence[EncodedMessage]) -> None:
        self._forget(lease, messages)

    def reject(
        self, lease: Lease, messages: Sequence[EncodedMessage], reason: str, status: int | None
    ) -> None:
        # Memory keeps no dead letters; the emitter reports them through on_failure.
        self._forget(lease, messages)

    def release(self, lease: Lease, messages: Sequence[EncodedMessage]) -> None:
        with self._lock:
            batch_id, offset = self._places.get(lease.id, (lease.id, 0))
            self._settle(lease, messages)
            if not messages:
                return
            if messages[0] is not lease.messages[0]:  # a later part of the lease
                offset += _position(lease.messages, messages[0])
            queue = self._queues.get(lease.tenant)
            if queue is None:
                queue = self._queues[lease.tenant] = deque()
            runs = self._returned.setdefault(lease.tenant, [])
            ahead = index = 0  # the released messages that stay ahead: of earlier places
            for run in runs:
                if (run[0], run[1]) > (batch_id, offset):
                    break
                ahead += run[2]
                index += 1
            queue.rotate(-ahead)
            queue.extendleft(reversed(messages))
            queue.rotate(ahead)
            runs.insert(index, [batch_id, offset, len(messages)])
            # Parts of one batch that meet again are one run (one lease takes them).
            if index + 1 < len(runs) and _meet(runs[index], runs[index + 1]):
                runs[index][2] += runs.pop(index + 1)[2]
            if index and _meet(runs[index - 1], runs[index]):
                runs[index - 1][2] += runs.pop(index)[2]

    def empty(self) -> bool:
        return self._count == 0

    def backlog(self, tenant: str) -> int:
        queue = self._queues.get(tenant)
        return len(queue) if queue else 0

    def tenants(self) -> list[str]:
        with self._lock:
            return list(self._queues)

    def note_error(self, tenant: str, text: str, at: float, status: int | None) -> None:
        """Nothing outside this process would see it (``stats()`` holds the last error)."""

    def stats(self) -> SpoolStats:
        with self._lock:
            leased = sum(len(lease.messages) for lease in self._leased.values())
            per_tenant = {tenant: len(queue) for tenant, queue in self._queues.items()}
            for lease in self._leased.values():
                per_tenant[lease.tenant] = per_tenant.get(lease.tenant, 0) + len(lease.messages)
            return SpoolStats(self._count, self._nbytes, leased, per_tenant)

    def take_all(self) -> dict[str, list[EncodedMessage]]:
        """Remove and return every message, leased or queued, per tenant in queue order
        (a tenant's leased messages are older than its queued ones)."""
        with self._lock:
            # Per tenant: the leased batches and the released runs at its queue's head, in
            # the order of their places, then the rest of its queue.
            held: dict[str, list[tuple[tuple[int, int], Sequence[EncodedMessage]]]] = {}
            for lease in self._leased.values():
                batch_id, offset = self._places.get(lease.id, (lease.id, 0))
                original = self._originals.get(lease.id)
                if original is not None:  # settled in part: where its first one left is
                    offset += _position(original, lease.messages[0])
                place = (batch_id, offset)
                held.setdefault(lease.tenant, []).append((place, lease.messages))
            rest: dict[str, list[EncodedMessage]] = {}
            for tenant, queue in self._queues.items():
                messages = list(queue)
                start = 0
                for batch_id, offset, count in self._returned.get(tenant, ()):
                    run = messages[start : start + count]
                    held.setdefault(tenant, []).append(((batch_id, offset), run))
                    start += count
                rest[tenant] = messages[start:]
            out: dict[str, list[EncodedMessage]] = {}
            for tenant, batches in held.items():
                batches.sort(key=lambda batch: batch[0])
                out[tenant] = [message for _, batch in batches for message in batch]
            for tenant, messages in rest.items():
                out.setdefault(tenant, []).extend(messages)
            self._leased.clear()
            self._queues.clear()
            self._places.clear()
            self._originals.clear()
            self._returned.clear()
            self._nbytes = self._count = 0
            return out

    def close(self) -> None:
        with self._lock:
            self._queues.clear()
            self._returned.clear()


def _meet(run: list[int], after: list[int]) -> bool:
    """True when ``after`` is the part of ``run``'s batch that follows ``run``."""
    return run[0] == after[0] and run[1] + run[2] == after[1]


def _position(messages: Sequence[EncodedMessage], message: EncodedMessage) -> int:
    """Where ``message`` itself (not an equal one) is in ``messages``."""
    return next(i for i, m in enumerate(messages) if m is message)
