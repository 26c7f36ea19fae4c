"""Settling: the result of a request written into the spool, the counters and the user's
failure callback.

Guarantees: every settle happens under one lock, which :meth:`Settler.abandon` closes:
once the emitter closed with requests still out, a late result settles nothing (it is
logged at INFO), so no event is both reported unsent at close and counted delivered.
Waiters on :attr:`Settler.settled` are woken after each delivered or failed batch. A user
callback that raises is logged and never breaks delivery; nor does a last-error note the
spool cannot keep: a failed batch is counted and reported whatever the note does; in a
library thread, not even a BaseException (``sys.exit()``) from a callback.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence

from selligent_segment._errors import SpoolError, shown
from selligent_segment._mapping import MESSAGE_ID_OF, EncodedMessage
from selligent_segment._process_life import is_library_thread
from selligent_segment._results import DeliveryFailure, FailureReason
from selligent_segment._throttle import Throttle
from selligent_segment.delivery._stats import Counters
from selligent_segment.spool._protocol import Lease, Spool

__all__ = ["Settler", "call_back"]

log = logging.getLogger("selligent_segment")

#: Ids of retried events remembered at most (with a shared spool file another process may
#: settle them, and this one would never forget them): then the memory starts afresh, and
#: a retry may then carry a lower ``X-Retry-Count`` than its batch's attempts.
_RETRYING_MAX = 100_000
#: Seconds between two log lines of the same failed last-error note.
NOTE_ERROR_EVERY = 10.0

_ZEROS = itertools.repeat(0)  # the default of each id in retry_count()


def call_back(callback: Callable[..., None], *args: object) -> None:
    """Call a user callback; an Exception it raises is logged, never passed on. So is a
    BaseException (``sys.exit()``) in one of the library's threads, which it would end
    (a sender's tenant then stayed in flight for ever); in the application's own thread
    that one goes on (SIGTERM's ``SystemExit`` during a close: see ``_process_life``).
    The log names the callback, never the event's fields."""
    try:
        callback(*args)
    except Exception:  # a user callback must never break delivery
        log.exception("callback %r raised", callback, extra={"reason": "callback_error"})
    except BaseException as exc:
        if not is_library_thread():
            raise
        log.error(
            "callback %r raised %s in a library thread; ignored",
            callback,
            type(exc).__name__,
            exc_info=True,
            extra={"reason": "callback_error"},
        )


class Settler:
    """Settles the leased messages of each request into ``spool`` and ``counters``,
    reporting failures through ``on_failure``, until :meth:`abandon`."""

    def __init__(
        self, spool: Spool, counters: Counters, on_failure: Callable[[DeliveryFailure], None]
    ) -> None:
        self.spool = spool
        self.counters = counters
        self.on_failure = on_failure
        #: Notified after each delivered or failed batch (waits for room or for a flush).
        self.settled = threading.Condition(threading.Lock())
        self._lock = threading.Lock()
        self._abandoned = False
        # The messages retried and not settled yet, by id, with the number of times each
        # went back after a retryable failure (a tenant in backoff retries its head batch
        # only, so this stays about a batch per failing tenant): an event is counted in
        # ``retried_events`` once, when it first goes back, and a request's
        # ``X-Retry-Count`` is the most any of its messages went back (retry_count()).
        self._retrying: dict[str, int] = {}
        self._failed_notes = Throttle(NOTE_ERROR_EVERY)  # by error text, under _lock

    def abandon(self, collect: Callable[[], object] | None = None) -> None:
        """Settle nothing more: results of requests still out are dropped (logged at
        INFO). ``collect`` runs under the settle lock, after which no settle can land, so
        it sees exactly what stays unsettled."""
        with self._lock:
            self._abandoned = True
            if collect is not None:
                collect()

    def delivered(self, lease: Lease, messages: Sequence[EncodedMessage]) -> None:
        """Settle ``messages`` as delivered: acknowledged in the spool, counted."""
        with self._lock:
            if self._abandoned:
                self._late(lease, messages, "delivered")
                return
            self.spool.ack(lease, messages)
            self.counters.add("delivered", lease.tenant, len(messages))
            self._settled(messages)
        self._notify()

    def release(
        self, lease: Lease, messages: Iterable[EncodedMessage], *, retried: bool = False
    ) -> bool:
        """Put ``messages`` back at the head of their queue (counted as retried when
        ``retried``); False when abandoned."""
        messages = tuple(messages)
        with self._lock:
            if self._abandoned:
                self._late(lease, messages, "not delivered")
                return False
            self.spool.release(lease, messages)
            if retried:
                self._count_retried(lease.tenant, messages)
        return True

    def set_aside(self, lease: Lease, messages: Sequence[EncodedMessage]) -> bool:
        """Count ``messages`` as retried while they stay leased (their batch waits aside
        to be sent again); False, nothing counted, when abandoned."""
        with self._lock:
            if self._abandoned:
                return False
            self._count_retried(lease.tenant, messages)
        return True

    def retry_count(self, messages: Sequence[EncodedMessage]) -> int:
        """The ``X-Retry-Count`` of a request of ``messages``: the most times any of them
        went back after a retryable failure (and was not settled since); 0 for a batch
        never retried. Per batch, as the official clients count it, whatever else of the
        tenant failed or was delivered meanwhile."""
        retrying = self._retrying
        if not retrying:  # nothing failing anywhere: no lock, no walk over the batch
            return 0
        with self._lock:
            return max(map(retrying.get, map(MESSAGE_ID_OF, messages), _ZEROS), default=0)

    def _count_retried(self, tenant: str, messages: Sequence[EncodedMessage]) -> None:
        """Count ``messages`` going out again, each event once in ``retried_events``,
        and one more retry for each (under the lock)."""
        self.counters.add("retried", tenant, len(messages))
        retrying = self._retrying
        if len(retrying) > _RETRYING_MAX:  # ids another process settled
            retrying.clear()  # at worst an event is counted twice
        first = 0
        for message_id in map(MESSAGE_ID_OF, messages):
            times = retrying.get(message_id, 0)
            first += not times
            retrying[message_id] = times + 1
        if first:
            self.counters.add("retried_events", tenant, first)

    def failed(
        self,
        lease: Lease,
        messages: Sequence[EncodedMessage],
        reason: str,
        detail: str,
        status: int | None,
        quiet: bool = False,
    ) -> None:
        """Settle ``messages`` as not delivered: dead letters (spool file), counted,
        reported through ``on_failure``; logged at ERROR unless ``quiet`` (a part of a
        bisection, whose outcome is logged once)."""
        with self._lock:
            if self._abandoned:
                self._late(lease, messages, reason)
                return
            self.spool.reject(lease, messages, f"{reason}: {detail}", status)
            # The error first: whoever sees the count sees its reason (the note never
            # raises, so it cannot skip the count or the report below).
            self._note_error(lease.tenant, f"{reason}: {detail}", status)
            self.counters.add_reason(
                "rejected" if reason == "rejected" else "dropped",
                lease.tenant,
                reason,
                len(messages),
            )
            self._settled(messages)
        log.log(
            logging.DEBUG if quiet else logging.ERROR,
            "tenant %s: %d events not delivered: %s (%s)",
            shown(lease.tenant),
            len(messages),
            reason,
            detail,
            extra={
                "tenant": lease.tenant,
                "reason": reason,
                "status": status,
                "count": len(messages),
            },
        )
        failure = DeliveryFailure.of(lease.tenant, FailureReason(reason), detail, messages, status)
        call_back(self.on_failure, failure)
        self._notify()

    def _settled(self, messages: Sequence[EncodedMessage]) -> None:
        """``messages`` left the queue for good: forget they were retried (under the lock)."""
        retrying = self._retrying
        if retrying:
            for message_id in map(MESSAGE_ID_OF, messages):
                retrying.pop(message_id, None)

    def note_error(self, tenant: str, text: str, status: int | None) -> None:
        """Record ``text`` (key-free) as ``tenant``'s last delivery error: in the counters
        (``stats()``) and in the spool (a spool file shows it to ``spool status``). The
        spool first: once ``stats()`` shows it, the spool has it (or will write it).
        After :meth:`abandon` (the spool may be closed) nothing is recorded."""
        with self._lock:
            if not self._abandoned:
                self._note_error(tenant, text, status)

    def _note_error(self, tenant: str, text: str, status: int | None) -> None:
        """Best effort, never raises (under the lock): a spool that fails to keep the note
        (against its protocol) costs an ERROR line, throttled by text; the counters keep
        it all the same."""
        error = self.counters.new_error(text, status)
        try:
            self.spool.note_error(tenant, error.text, error.at, error.status)
        except SpoolError as exc:
            if self._failed_notes.allows(time.monotonic(), str(exc)):
                log.error(
                    "tenant %s: its last delivery error could not be kept in the spool: %s",
                    shown(tenant),
                    exc,
                    extra={"tenant": tenant, "reason": "spool_error"},
                )
        self.counters.set_error(tenant, error)

    @staticmethod
    def _late(lease: Lease, messages: Sequence[EncodedMessage], outcome: str) -> None:
        log.info(
            "tenant %s: a request still out at close ended (%s); its %d "
            "events were already reported unsent at close, or stay in the spool file",
            shown(lease.tenant),
            outcome,
            len(messages),
            extra={"tenant": lease.tenant, "reason": "late_result", "count": len(messages)},
        )

    def _notify(self) -> None:
        with self.settled:
            self.settled.notify_all()
