"""Back-pressure: ``max_pending`` and ``on_full`` at ``emit``, and the encoder's wait
while the spool is at ``max_spool_bytes``."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping

from selligent_segment._errors import SpoolFull
from selligent_segment._results import DeliveryFailure
from selligent_segment._throttle import Throttle
from selligent_segment.delivery._stats import Counters
from selligent_segment.spool._protocol import OnFull, Spool

__all__ = ["Backpressure"]

log = logging.getLogger("selligent_segment")

#: Seconds between two ERROR lines about a full spool (or a spool that cannot be written).
LOG_EVERY = 10.0
#: Seconds a spool write may take before :meth:`Backpressure.writes_failing` says it fails
#: (one normally takes milliseconds).
WRITE_STALL = 5.0
#: Seconds between two looks at a shared table's size while ``emit`` blocks for room.
TABLE_POLL = 0.25


class Backpressure:
    """What ``emit`` does when ``max_pending`` records wait, and the encoder's wait while
    the spool is at its size cap.

    Guarantees: ``emit`` never waits here but with ``on_full="block"`` (up to
    ``block_timeout``, or until the emitter closes) or, for ``emit_many`` with a spool
    file, while the encoder moves records into the file; a refused or dropped event is
    counted and reported (a dropped chunk once per tenant, with its count); the log
    says so at most once every :data:`LOG_EVERY` seconds per kind of line, and every
    refused event is counted in exactly one such line: the next one allowed, or the one
    :meth:`report_refused` logs (the encoder's upkeep, about once a second, and close).
    ``now`` is the monotonic clock the throttle reads (a seam for tests).
    """

    def __init__(
        self,
        *,
        max_pending: int,
        on_full: OnFull,
        block_timeout: float,
        max_spool_bytes: int,
        counters: Counters,
        report: Callable[[DeliveryFailure], None],
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_pending = max_pending
        self.on_full = on_full
        self.block_timeout = block_timeout
        self.max_spool_bytes = max_spool_bytes
        self.counters = counters
        self.report = report
        #: Notified whenever records leave the inbox (room for ``emit``).
        self.room = threading.Condition(threading.Lock())
        #: True once the emitter closed (:meth:`close`): no wait for room goes on.
        self.closed = False
        #: True while the spool is at its size cap (the encoder holds its records).
        self.at_cap = False
        #: True while the encoder cannot write the spool file (it keeps retrying).
        self.ingest_failing = False
        #: When the encoder's write in progress began (``time.monotonic()``; None: none).
        self.writing_since: float | None = None
        self._now = now
        self._throttle = Throttle(LOG_EVERY)
        self._log_lock = threading.Lock()
        self._refused_unlogged = 0  # refused events no line has counted yet

    def writes_failing(self) -> bool:
        """True while the encoder cannot write the spool file: a write failed and is being
        tried again, or the one in progress has waited over :data:`WRITE_STALL` seconds
        (for another process's lock, say: a first failure takes the busy timeout, 30 s)."""
        since = self.writing_since
        return self.ingest_failing or (since is not None and time.monotonic() - since > WRITE_STALL)

    def notify(self) -> None:
        """Records left the inbox: wake ``emit`` calls waiting for room."""
        with self.room:
            self.room.notify_all()

    def close(self) -> None:
        """The emitter closed: wake every wait for room (each then sees :attr:`closed`)."""
        with self.room:
            self.closed = True
            self.room.notify_all()

    def wait_for_room(
        self,
        pending: Callable[[], int],
        tenant: str,
        n: int = 1,
        *,
        tenants: Mapping[str, int] | None = None,
    ) -> bool:
        """``max_pending`` records wait: apply ``on_full`` to ``n`` events of ``tenant``
        (or to those of ``tenants``, counted by tenant: a chunk of ``emit_many``).
        True when there is room now (``block``), or once the emitter closed (the caller
        then refuses the events: EmitterClosed); False when they are dropped
        (``drop_newest``, counted and reported, one failure per tenant); raises
        SpoolFull otherwise."""
        if self.on_full is OnFull.BLOCK:
            with self.room:
                if self.room.wait_for(
                    lambda: self.closed or pending() < self.max_pending, self.block_timeout
                ):
                    return True
        return self._refuse(tenant, n, f"{self.max_pending} events are waiting", tenants)

    def wait_for_table_room(self, has_room: Callable[[], bool], tenant: str, n: int = 1) -> bool:
        """For an intake that writes the spool at ``emit`` (PostgreSQL: nothing waits in
        memory), the spool is at ``max_spool_bytes``: apply ``on_full`` to ``n`` events of
        ``tenant``. True once there is room (``block``: ``has_room`` is asked again every
        :data:`TABLE_POLL` seconds, up to ``block_timeout``); False when they are dropped
        (``drop_newest``, counted and reported); raises SpoolFull otherwise."""
        if self.on_full is OnFull.BLOCK:
            deadline = time.monotonic() + self.block_timeout
            with self.room:
                while (left := deadline - time.monotonic()) > 0:
                    # Room comes from other hosts' senders too: nothing here is told, so
                    # the table is asked again (a notify from this process ends it early).
                    self.room.wait(min(left, TABLE_POLL))
                    if has_room():
                        return True
        return self._refuse(
            tenant, n, f"the spool holds max_spool_bytes={self.max_spool_bytes:,} already"
        )

    def _refuse(
        self, tenant: str, n: int, why: str, tenants: Mapping[str, int] | None = None
    ) -> bool:
        """No room for ``n`` events of ``tenant``, or those of ``tenants`` by tenant
        (``why``): counted and logged, then False (``drop_newest``: reported, once per
        tenant) or SpoolFull raised."""
        self.counters.refuse("spool_full", n)
        self._log_full(n)
        if self.on_full is OnFull.DROP_NEWEST:
            for name, count in (tenants or {tenant: n}).items():
                self.report(DeliveryFailure.spool_full(name, count))
            return False
        raise SpoolFull(f"{why}; the event was not accepted")

    def wait_for_ingest(self, pending: Callable[[], int], closed: Callable[[], bool]) -> bool:
        """With a spool file: wait while the encoder moves records into the file (a bulk
        hand-over goes at the spool's pace); False when the spool is at its cap, the file
        cannot be written, or the emitter closed: then ``on_full`` decides."""
        with self.room:
            while pending() >= self.max_pending:
                if self.at_cap or self.ingest_failing or closed():
                    return False
                self.room.wait(0.5)
        return True

    def wait_for_spool_room(
        self,
        spool: Spool,
        nbytes: int,
        stopping: Callable[[], bool],
        settled: threading.Condition,
    ) -> None:
        """Hold the encoder (never ``emit``) while the spool is at its size cap; wakes
        when a request settles. An empty spool always takes the chunk, even one larger
        than the cap (a chunk is a bounded number of records): else a cap below
        a chunk's bytes would hold it for ever, with nothing to send."""
        while not spool.has_room(nbytes) and not stopping() and not spool.empty():
            self.at_cap = True
            self.notify()
            self.log_rarely(
                "the spool is at its size cap (max_spool_bytes=%d); accepted events wait "
                "in memory, up to max_pending=%d, then on_full=%s applies",
                self.max_spool_bytes,
                self.max_pending,
                self.on_full.value,
                kind="at_cap",
                reason="spool_at_cap",
            )
            with settled:
                settled.wait(0.1)
        self.at_cap = False

    def log_rarely(self, message: str, *args: object, kind: str = "", **extra: object) -> bool:
        """Log ``message`` at ERROR unless a line of this ``kind`` went out in the last
        :data:`LOG_EVERY` seconds; True when it was logged. ``extra`` becomes attributes
        of the log record (``reason``, ``tenant``...)."""
        with self._log_lock:
            if not self._throttle.allows(self._now(), kind):
                return False
        log.error(message, *args, extra=extra)
        return True

    def _log_full(self, n: int) -> None:
        with self._log_lock:
            self._refused_unlogged += n
        self.report_refused()

    def report_refused(self, *, final: bool = False) -> None:
        """Log the refused events no line has counted yet, unless such a line went out in
        the last :data:`LOG_EVERY` seconds; ``final`` (at close) logs them regardless."""
        with self._log_lock:
            n = self._refused_unlogged
            if not n or not (final or self._throttle.allows(self._now(), "refused")):
                return
            self._refused_unlogged = 0
        log.error(
            "spool full: %d events refused since the last report (on_full=%s)",
            n,
            self.on_full.value,
            extra={"reason": "spool_full", "count": n},
        )
