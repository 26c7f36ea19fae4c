"""The in-memory spool: per-tenant queues in this process, lost when it dies.

Guarantee: it never holds more than ``max_bytes`` of message bodies (leased ones count
until settled), and per-tenant FIFO order is kept across releases.
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
    until settled); per-tenant FIFO order is kept across releases.
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
            return lease

    def _settle(self, lease: Lease, messages: Sequence[EncodedMessage]) -> None:
        # A lease is settled in parts (bisection); it is done when every message is.
        held = self._leased.get(lease.id)
        if held is None:
            raise ValueError(f"lease {lease.id} is not live")
        if messages is held.messages:
            del self._leased[lease.id]  # the common case: the whole lease at once
            return
        done = {id(m) for m in messages}
        left = tuple(m for m in held.messages if id(m) not in done)
        if len(left) != len(held.messages) - len(messages):
            raise ValueError(f"lease {lease.id}: message settled twice or not leased")
        if left:
            self._leased[lease.id] = Lease(held.tenant, left, id=held.id)
        else:
            del self._leased[lease.id]

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
            self._settle(lease, messages)
            queue = self._queues.get(lease.tenant)
            if queue is None:
                queue = self._queues[lease.tenant] = deque()
            queue.extendleft(reversed(messages))

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
            out: dict[str, list[EncodedMessage]] = {}
            for lease in sorted(self._leased.values(), key=lambda lease: lease.id):
                out.setdefault(lease.tenant, []).extend(lease.messages)
            for tenant, queue in self._queues.items():
                out.setdefault(tenant, []).extend(queue)
            self._leased.clear()
            self._queues.clear()
            self._nbytes = self._count = 0
            return out

    def close(self) -> None:
        with self._lock:
            self._queues.clear()
