"""The PostgreSQL intake: ``emit`` writes the event's row (its compact record, which the
process that leases it turns into the message) into the shared table before it returns
(the commit point), or, with ``connection=``, inside the caller's own open
transaction (the transactional outbox); the encoder thread only tells the senders what
arrived and, about once a second, which tenants other processes and hosts wrote rows for;
between two polls a listener thread wakes the senders when another process committed rows
(the encoder thread of that process sends one ``NOTIFY`` per round for what its emits
committed; an outbox insert sends its own, in the caller's transaction).

Which promise ``emit`` keeps when the database cannot be reached: it raises
:class:`~selligent_segment.SpoolError` naming the server (never its password) before it
returns, and the caller still holds the event. It never journals locally instead: a row
that only this host holds is what the shared spool exists to avoid.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from selligent_segment._errors import InvalidEvent, SpoolError
from selligent_segment._naming import EventNaming
from selligent_segment.delivery._dispatcher import Dispatcher
from selligent_segment.intake._protocol import Accepted, Downstream
from selligent_segment.spool._postgres import Listener, PostgresSpool
from selligent_segment.spool._postgres_record import QueueRow, record_row

__all__ = ["PostgresIntake"]

log = logging.getLogger("selligent_segment")

#: Seconds between two NOTIFYs of one process (what commits meanwhile goes in the next).
#: Measured: one per encoder round cost a single-threaded ``emit`` about 25 % (its own
#: listener woken, a round trip in the background each time); at most 20 a second do not.
NOTIFY_EVERY = 0.05


class PostgresIntake:
    """Rows written to a :class:`PostgresSpool` at ``accept``; nothing waits in memory.

    Guarantee: when ``accept``/``accept_many`` return, the rows are committed (or, with
    a caller's connection, part of the caller's transaction: committed with it, gone with
    its rollback); any process on any host sharing the database may deliver them.
    """

    durable = True

    def __init__(
        self,
        *,
        url: str,
        max_spool_bytes: int,
        naming: EventNaming,
        downstream: Downstream,
    ) -> None:
        self.naming = naming
        self.downstream = downstream
        # A record a lease buries is counted and reported through on_failure.
        self.spool = PostgresSpool(url, max_bytes=max_spool_bytes, on_buried=downstream.buried)
        self._lock = threading.Lock()
        self._touched: Counter[str] = Counter()  # rows written since the last step
        self._nbytes = 0
        self.listener: Listener | None = None  # started by the first maintain()
        self._notify_lock = threading.Lock()
        self._unsent: Counter[str] = Counter()  # rows committed, not yet in a NOTIFY
        self._notified_at = 0.0
        self._timer: threading.Timer | None = None

    def pending(self) -> int:
        return 0  # nothing waits in memory: a row is in the database once accepted

    def has_work(self) -> bool:
        return bool(self._touched)

    def _rows(self, records: Sequence[Accepted]) -> list[QueueRow] | None:
        """The records' rows: each its record, encoded into its message by the relay that
        leases it (see :mod:`~selligent_segment.spool._postgres_record`), or, for a large
        one, its message now (one over 32 KB is reported, not written); None when the
        table is at ``max_spool_bytes`` and ``on_full`` dropped them (``raise`` raises
        SpoolFull, ``block`` waits for room up to ``block_timeout``). The bound counts
        the bodies as stored: a record row, its record."""
        rows = []
        naming = self.naming
        for fields, tenant, now in records:
            try:
                rows.append(record_row(fields, tenant, now, naming))
            except InvalidEvent as exc:
                self.downstream.too_large(tenant, exc)
        nbytes = sum([len(row[3]) for row in rows])
        spool = self.spool
        if rows and not spool.has_room(nbytes):
            room = self.downstream.backpressure.wait_for_table_room(
                lambda: spool.has_room(nbytes, fresh=True), rows[0][0], len(rows)
            )
            if not room:
                return None
        return rows

    def _wrote(self, rows: Sequence[QueueRow]) -> None:
        with self._lock:
            self._touched.update([row[0] for row in rows])
            self._nbytes += sum([len(row[3]) for row in rows])

    def accept(self, fields: dict[str, Any], tenant: str, now: float | None) -> bool:
        """Write the record's row (committed when this returns); False when the table
        is full and ``on_full="drop_newest"`` dropped it."""
        return self.accept_many(((fields, tenant, now),))

    def accept_many(self, records: Sequence[Accepted]) -> bool:
        """Write the records' rows in one COPY (committed when this returns); False when
        the table is full and ``on_full="drop_newest"`` dropped them."""
        rows = self._rows(records)
        if rows is None:
            return False
        self.spool.put_rows(rows)
        self._wrote(rows)
        return True

    def accept_in(self, connection: Any, records: Sequence[Accepted]) -> bool:
        """The outbox: insert inside ``connection``'s open transaction (never committed
        here); the senders find the rows once the caller commits (woken by its
        ``NOTIFY``, this process's too; with ``notify=off``, at their next poll).
        ``on_full`` applies as for :meth:`accept_many` (``block`` waits with the caller's
        transaction open)."""
        rows = self._rows(records)
        if rows is None:
            return False
        self.spool.put_rows(rows, connection=connection)
        return True

    def step(self, stopping: Callable[[], bool]) -> None:
        """Count what was written and tell the senders, and the other processes
        (:meth:`_notify`)."""
        with self._lock:
            touched, self._touched = self._touched, Counter()
            nbytes, self._nbytes = self._nbytes, 0
        if not touched:
            return
        self._notify(touched)
        down = self.downstream
        down.counters.add_many("accepted", touched)
        down.backpressure.notify()
        # A message is about twice its record (the email goes in twice, plus context).
        down.senders().notify_put(list(touched), 2 * nbytes / max(1, sum(touched.values())))

    def _notify(self, touched: Counter[str]) -> None:
        """Tell the other processes' listeners what this one's emits committed: one
        ``NOTIFY`` naming the tenants and their rows, at most every :data:`NOTIFY_EVERY`
        seconds (what commits meanwhile goes in the next one, sent by a timer when no
        later round comes), never on ``emit``'s own path. A NOTIFY that cannot be sent is
        dropped: the other processes' polling finds the rows."""
        with self._notify_lock:
            self._unsent.update(touched)
            wait = self._notified_at + NOTIFY_EVERY - time.monotonic()
            if wait > 0:
                if self._timer is None:
                    self._timer = threading.Timer(wait, self._send_unsent)
                    self._timer.daemon = True
                    self._timer.start()
                return
        self._send_unsent()

    def _send_unsent(self) -> None:
        with self._notify_lock:
            counts, self._unsent = dict(self._unsent), Counter()
            self._timer = None
            self._notified_at = time.monotonic()
        if counts:
            try:
                self.spool.notify_tenants(counts)
            except SpoolError as exc:
                log.debug("NOTIFY not sent: %s", exc)

    def maintain(self) -> list[str]:
        """Write settlements kept while the database was away; the tenants with rows to
        lease (written by any process on any host): polling, once a second, whether or
        not the listener (started here the first time, unless ``notify=off``) runs."""
        if self.listener is None and self.spool.notify:
            self.listener = Listener(self.spool, self._woken).start()
        try:
            self.spool.maintain()
        except Exception as exc:  # the next round tries again; the poll still runs
            log.warning("PostgreSQL spool upkeep failed: %s", exc)
        try:
            return self.spool.tenants()
        except Exception as exc:  # the next round tries again
            log.warning("PostgreSQL spool poll failed: %s", exc)
            return []

    def _woken(self, counts: dict[str, int] | None) -> None:
        """Another process committed rows (its NOTIFY): wake the senders for the tenants
        it names, now rather than at the next poll (None: ask the table which)."""
        spool = self.spool
        if counts is None:
            tenants = spool.tenants()
        else:
            spool.add_backlog(counts)
            tenants = list(counts)
        if tenants:
            self.downstream.senders().notify_put(tenants)

    def queued(self) -> dict[str, int]:
        return dict(self.spool.stats().per_tenant)

    def queued_now(self) -> dict[str, int] | None:
        return self.queued()  # a read of the database's counts, which no write holds

    def mark_paused(self, tenant: str, reason: str | None) -> None:
        self.spool.mark_paused(tenant, reason)

    def close(self, dispatcher: Dispatcher, *, encoder_busy: bool = False) -> bool:
        """Stop settling; this process's live leases go back to the queue (or expire)."""
        if self.listener is not None:
            self.listener.stop()
        dispatcher.abandon()
        self.step(lambda: True)
        with self._notify_lock:
            timer = self._timer
        if timer is not None:
            timer.cancel()
            self._send_unsent()
        self.spool.close()
        return False  # what is left stays in the database: nothing is given up

    def late(self) -> None:
        """Nothing to do: a row written while close() ran is committed in the table."""

    def abandon(self) -> None:
        """In a forked child: the parent's connections are left alone."""
        self.listener = None  # the parent's threads: not in this process
        self._timer = None
        self.spool.abandon()
