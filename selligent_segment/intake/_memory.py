"""The memory intake: accepted records wait in a deque until the encoder maps them into
the memory spool; what is left at close is reported ``unsent_at_close``."""

from __future__ import annotations

import logging
import threading
from collections import Counter, deque
from collections.abc import Callable, Sequence
from typing import Any

from selligent_segment._errors import InvalidEvent, shown
from selligent_segment._mapping import TENANT_OF, EncodedMessage, encode_fields, unencodable
from selligent_segment._naming import EventNaming
from selligent_segment._results import DeliveryFailure
from selligent_segment.delivery._dispatcher import Dispatcher
from selligent_segment.intake._protocol import Accepted, Downstream
from selligent_segment.spool._memory import MemorySpool

__all__ = ["ENCODE_CHUNK", "MemoryIntake"]

log = logging.getLogger("selligent_segment")

#: Records the encoder maps in one step (and ``emit_many`` hands over at once).
ENCODE_CHUNK = 512


class MemoryIntake:
    """Records in memory, then messages in a :class:`MemorySpool`; all lost with the
    process, all reported at close. ``accept`` is a deque append."""

    durable = False

    def __init__(
        self, *, max_spool_bytes: int, naming: EventNaming, downstream: Downstream
    ) -> None:
        self.spool = MemorySpool(max_spool_bytes)
        self.inbox: deque[Accepted] = deque()
        self.naming = naming
        self.downstream = downstream
        # What close() has still to report, per tenant, and whether it ever had any: a
        # close cut short (SIGTERM during a callback) is finished by the next one.
        self._unreported: dict[str, list[EncodedMessage]] = {}
        self._left_any = False
        self.closing = False  # close() began to drain: a record appended since is late
        self._report_lock = threading.Lock()  # close() and a late emit() report in turn
        # Per tenant, the messages of the step waiting for room in the spool (counted
        # accepted, in neither the inbox nor the spool): queued() counts them.
        self._held: Counter[str] = Counter()

    def pending(self) -> int:
        return len(self.inbox)

    def has_work(self) -> bool:
        return bool(self.inbox)

    def accept(self, fields: dict[str, Any], tenant: str, now: float | None) -> bool:
        self.inbox.append((fields, tenant, now))
        return True

    def accept_many(self, records: Sequence[Accepted]) -> bool:
        self.inbox.extend(records)
        return True

    def step(self, stopping: Callable[[], bool]) -> None:
        """Map and serialise up to a chunk of records into the spool."""
        inbox = self.inbox
        down = self.downstream
        messages: list[EncodedMessage] = []
        nbytes = 0
        tenants: list[str] = []
        naming = self.naming
        while inbox and len(tenants) < ENCODE_CHUNK:
            fields, tenant, now = inbox.popleft()
            tenants.append(tenant)
            try:
                message = encode_fields(fields, tenant, naming, now)
            except InvalidEvent as exc:
                down.too_large(tenant, exc)
                continue
            except Exception as exc:  # a value no check foresaw: reported, never lost silently
                error = unencodable(exc)
                log.error(
                    "tenant %s: event dropped: %s",
                    shown(tenant),
                    error,
                    extra={"tenant": tenant, "reason": "unreadable_record"},
                )
                down.buried(tenant, error)  # counted and reported as an unreadable record
                continue
            messages.append(message)
            nbytes += len(message.body)
        down.counters.add_many("accepted", Counter(tenants))  # counted in C, not per event
        down.backpressure.notify()
        dispatcher = down.senders()
        if not self.spool.has_room(nbytes):  # it waits: held, and queued() says so
            self._held = Counter(map(TENANT_OF, messages))
        down.backpressure.wait_for_spool_room(self.spool, nbytes, stopping, dispatcher.settled)
        with self._report_lock:
            # A close() that gave up waiting for this step took what the queue held:
            # what the step holds is reported with the rest, never queued unseen.
            late = self.closing
            if late:
                for message in messages:
                    self._unreported.setdefault(message.tenant, []).append(message)
            else:
                self.spool.put_many(messages)
            if self._held:
                self._held = Counter()
        if late:
            self._report_left()
            return
        if messages:
            touched = list(dict.fromkeys(map(TENANT_OF, messages)))
            dispatcher.notify_put(touched, nbytes / len(messages))

    def maintain(self) -> list[str]:
        self.downstream.backpressure.report_refused()
        return []

    def queued_now(self) -> dict[str, int] | None:
        return self.queued()  # in memory: never waits long

    def queued(self) -> dict[str, int]:
        """Per tenant: in the spool, held by a step waiting for room in it, or in the
        inbox (counted accepted once the encoder takes them)."""
        queued = dict(self.spool.stats().per_tenant)
        for tenant, n in self._held.items():
            queued[tenant] = queued.get(tenant, 0) + n
        for _, tenant, _ in list(self.inbox):
            queued[tenant] = queued.get(tenant, 0) + 1
        return queued

    def mark_paused(self, tenant: str, reason: str | None) -> None:
        """Nothing outside this process would see it."""

    def close(self, dispatcher: Dispatcher, *, encoder_busy: bool = False) -> bool:
        """Report everything still held as ``unsent_at_close``: queued messages, batches
        of requests still out (their late results then settle nothing), and records an
        ``emit`` racing close() appended after the encoder stopped. True when anything
        was left (now or by a close that was cut short): then not all was delivered."""
        with self._report_lock:  # a step queues under it, or hands its records over
            self.closing = True  # before the inbox is drained: see late()
        left = self._unreported

        def collect() -> None:
            taken = self.spool.take_all()
            with self._report_lock:  # a late emit() may be reporting meanwhile
                for tenant, messages in taken.items():
                    left.setdefault(tenant, []).extend(messages)

        dispatcher.abandon(collect)
        self.downstream.backpressure.report_refused(final=True)
        return self._report_left()

    def late(self) -> None:
        """An ``emit`` accepted records after close() began: report them (and anything
        else still in the inbox) as ``unsent_at_close``, which close() may no longer see
        (it drained the inbox before they came). Safe beside a close() draining too."""
        if self.closing:
            self._report_left()

    def _report_left(self) -> bool:
        """Report the inbox's records and what close() collected as ``unsent_at_close``,
        each once (close() and a late emit() report in turn, under the report lock);
        True when anything was ever left."""
        failures: list[tuple[str, list[EncodedMessage]]] = []
        down = self.downstream
        with self._report_lock:
            left = self._unreported
            while True:
                try:
                    fields, tenant, now = self.inbox.popleft()
                except IndexError:  # drained (an encoder that outlived its stop pops too)
                    break
                down.counters.add("accepted", tenant)
                try:
                    message = encode_fields(fields, tenant, self.naming, now)
                except Exception:  # over 32 KB, or a value no check foresaw: reported bare
                    message = EncodedMessage(tenant, "", fields["type"], b"")
                left.setdefault(tenant, []).append(message)
            self._left_any = self._left_any or bool(left)
            while left:
                failures.append(left.popitem())  # counted, logged and handed over once
            left_any = self._left_any
        # Outside the lock: on_failure is the application's code, which may call close().
        while failures:
            tenant, messages = failures.pop()
            down.counters.add_reason("dropped", tenant, "unsent_at_close", len(messages))
            log.error(
                "tenant %s: %d events unsent at close (memory spool)",
                shown(tenant),
                len(messages),
                extra={"tenant": tenant, "reason": "unsent_at_close", "count": len(messages)},
            )
            try:
                down.report(DeliveryFailure.unsent_at_close(tenant, messages))
            except BaseException:  # a close cut short (SIGTERM): the next one reports the rest
                with self._report_lock:
                    for other, rest in failures:
                        self._unreported.setdefault(other, []).extend(rest)
                raise
        return left_any

    def abandon(self) -> None:
        """The parent keeps its records; the child's intake is a new one."""
